"""Every endpoint against a real controller process (uvicorn on a free port) with httpx: happy paths and errors."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import httpx
import pytest

from tests.controller.api.conftest import Controller, tiny_onnx, wait_job


def blobs(ws: Path) -> set[str]:
    root = ws / "blobs"
    return {p.name for p in root.rglob("*") if p.is_file() and len(p.name) == 64} if root.exists() else set()


def upload(api: httpx.Client, name: str, path: Path, **form: str) -> httpx.Response:
    return api.post("/compression/models", data={"name": name, **form},
                    files={"file": (path.name, path.read_bytes(), "application/octet-stream")})


def compress(api: httpx.Client, version_id: str, seconds: float = 0.2, family: str = "quantize", **extra) -> dict:
    r = api.post(f"/compression/{family}", json={"version_id": version_id, "technique": "quant-test-slow",
                                                 "config": {"seconds": seconds}, **extra})
    assert r.status_code == 202, r.text
    return r.json()["data"]


@pytest.fixture(scope="module")
def base(api: httpx.Client, model_file: Path) -> dict:
    r = upload(api, "tiny", model_file, profile="rpi4")
    assert r.status_code == 201, r.text
    return r.json()["data"]


def test_docs_openapi_health_and_envelope_on_unknown_routes(controller: Controller, api: httpx.Client) -> None:
    assert httpx.get(controller.url + "/docs").status_code == 200
    schema = httpx.get(controller.url + "/openapi.json").json()
    for path in ("/api/v1/compression/quantize", "/api/v1/compression/prune", "/api/v1/compression/distill",
                 "/api/v1/compression/decompose", "/api/v1/compression/pipeline", "/api/v1/compression/jobs/{job_id}",
                 "/api/v1/compression/jobs/{job_id}/cancel", "/api/v1/compression/models", "/api/v1/conversions",
                 "/api/v1/profiles", "/api/v1/devices/{device_id}", "/api/v1/deployments/{deployment_id}/rollback"):
        assert path in schema["paths"], path
    health = api.get("/health").json()
    assert health["status"] == "ok" and health["data"]["max_compression_jobs"] == 2
    r = api.get("/nope")
    assert r.status_code == 404 and r.json()["status"] == "error" and r.json()["data"]["code"] == "not_found"
    r = api.delete("/profiles")
    assert r.status_code == 405 and r.json()["status"] == "error"


def test_upload_list_show_versions_download(api: httpx.Client, base: dict, model_file: Path) -> None:
    model, version = base["model"], base["version"]
    assert version["parent_id"] is None and version["profile"] == "rpi4" and base["onnx"]["inputs"] == ["input"]
    page = api.get("/compression/models", params={"name": "tin", "format": "onnx", "profile": "rpi4"}).json()["data"]
    assert page["total"] >= 1 and any(m["name"] == "tiny" for m in page["items"])
    assert api.get("/compression/models", params={"profile": "iphone"}).json()["data"]["total"] == 0
    assert api.get("/compression/models", params={"page_size": 1, "page": 999}).json()["data"]["items"] == []
    assert api.get(f"/compression/models/{model['id']}").json()["data"]["name"] == "tiny"
    shown = api.get("/compression/models/tiny/versions").json()["data"]
    assert shown["items"][0]["id"] == version["id"]
    r = api.get(f"/compression/models/tiny/versions/{version['id']}/download")
    assert r.status_code == 200 and r.content == model_file.read_bytes()
    assert r.headers["x-content-sha256"] == hashlib.sha256(model_file.read_bytes()).hexdigest()
    assert api.get("/compression/models/tiny/versions/00000000-0000-4000-8000-000000000000").status_code == 404
    assert api.get("/compression/models/ghost").status_code == 404


@pytest.mark.parametrize("name,content,status,needle", [
    ("junk", b"this is not a model at all" * 10, 422, "not an ONNX model"),
    ("empty", b"", 422, "empty"),
    ("big", b"\0" * (1024 * 1024 + 10), 413, "exceeds the limit"),
    ("../escape", None, 422, "no path separators"),
    ("a..b", None, 422, "'..'"),
    ("bad-checker", "checker", 422, "onnx.checker"),
    ("badprofile", None, 422, "unknown profile"),
])
def test_bad_uploads_leave_nothing_behind(controller: Controller, api: httpx.Client, base: dict, tmp_path: Path,
                                          name: str, content, status: int, needle: str) -> None:
    before_blobs, before = blobs(controller.workspace), api.get("/compression/models").json()["data"]["total"]
    path = tmp_path / "m.onnx"
    if content is None:
        tiny_onnx(path, seed=hash(name) % 1000)
    elif content == "checker":
        import onnx
        from onnx import helper

        tiny_onnx(path, seed=7)
        m = onnx.load(str(path))
        m.graph.node.append(helper.make_node("Relu", ["does_not_exist"], ["dangling"]))
        onnx.save(m, str(path))
    else:
        path.write_bytes(content)
    form = {"profile": "no-such-profile"} if name == "badprofile" else {}
    r = upload(api, name, path, **form)
    assert r.status_code == status, r.text
    body = r.json()
    assert body["status"] == "error" and needle in body["message"], body
    assert blobs(controller.workspace) == before_blobs
    assert api.get("/compression/models").json()["data"]["total"] == before
    assert not list((controller.workspace / "uploads").glob("*"))


def test_compression_job_records_a_child_version_with_lineage(api: httpx.Client, base: dict) -> None:
    vid = base["version"]["id"]
    job = compress(api, vid, seconds=0.3)
    assert job["state"] == "queued" and job["spec"]["technique"] == "quant-test-slow"
    done = wait_job(api, job["id"])
    assert done["state"] == "succeeded", done
    assert done["progress"] == 100 and done["duration_s"] > 0 and done["result"]["parent_id"] == vid
    child = api.get(f"/compression/models/tiny/versions/{done['result']['version_id']}").json()["data"]
    assert child["parent_id"] == vid and child["technique"] == "quant-test-slow"
    assert child["config"] == {"technique": "quant-test-slow", "version": 1, "seconds": 0.3, "fail": False}
    assert "size_ratio" in child["metrics"] and [v["id"] for v in child["lineage"]] == [vid, child["id"]]
    assert api.get(f"/compression/models/tiny/versions/{vid}").json()["data"]["children"]
    listed = api.get("/compression/jobs", params={"state": "succeeded"}).json()["data"]
    assert any(j["id"] == job["id"] for j in listed["items"])


def test_failed_job_reports_the_error(api: httpx.Client, base: dict) -> None:
    r = api.post("/compression/quantize", json={"version_id": base["version"]["id"], "technique": "quant-test-slow",
                                                "config": {"seconds": 0.2, "fail": True}})
    done = wait_job(api, r.json()["data"]["id"])
    assert done["state"] == "failed" and "asked to fail" in done["error"]


@pytest.mark.parametrize("family,body,needle", [
    ("quantize", {"technique": "nope"}, "unknown technique"),
    ("prune", {"technique": "quant-test-slow"}, "is not a prune technique"),
    ("quantize", {"technique": "quant-test-slow", "config": {"bogus": 1}}, "unknown parameter"),
    ("quantize", {"technique": "quant-test-slow", "config": {"seconds": -1}}, "must be in"),
    ("quantize", {"technique": "quant-test-slow", "config": {"seconds": "slow"}}, "seconds"),
    ("quantize", {"technique": "quant-test-slow", "version_id": "00000000-0000-4000-8000-000000000000"},
     "does not exist"),
    ("quantize", {"technique": "quant-test-slow", "profile": "no-such"}, "unknown profile"),
    ("quantize", {"technique": "quant-test-slow", "surprise": 1}, "surprise"),
])
def test_compression_bad_input(api: httpx.Client, base: dict, family: str, body: dict, needle: str) -> None:
    r = api.post(f"/compression/{family}", json={"version_id": base["version"]["id"], **body})
    assert r.status_code == 422, r.text
    assert r.json()["status"] == "error" and needle in r.json()["message"]


def test_pipeline_chains_versions(api: httpx.Client, base: dict) -> None:
    steps = [{"technique": "quant-test-slow", "config": {"seconds": 0.1}}] * 2
    r = api.post("/compression/pipeline", json={"version_id": base["version"]["id"], "steps": steps})
    assert r.status_code == 202, r.text
    done = wait_job(api, r.json()["data"]["id"])
    assert done["state"] == "succeeded", done
    first, second = done["result"]["steps"]
    assert first["parent_id"] == base["version"]["id"] and second["parent_id"] == first["version_id"]
    r = api.post("/compression/pipeline", json={"version_id": base["version"]["id"], "steps": []})
    assert r.status_code == 422
    r = api.post("/compression/pipeline", json={"version_id": base["version"]["id"], "steps": [
        {"technique": "quant-test-slow", "config": {"seconds": 0.05}}, {"technique": "convert"}]})
    assert r.status_code == 422 and "profile" in r.json()["message"]
    r = api.post("/compression/pipeline", json={"version_id": base["version"]["id"], "profile": "x86-edge", "steps": [
        {"technique": "quant-test-slow", "config": {"seconds": 0.05}}, {"technique": "convert"}]})
    done = wait_job(api, r.json()["data"]["id"], timeout=120)
    assert done["state"] == "succeeded", done["error"]
    assert done["result"]["steps"][1]["format"] == "onnx"
    assert done["result"]["steps"][1]["parent_id"] == done["result"]["steps"][0]["version_id"]


def test_cancel_running_and_queued_jobs_and_queue_limit(api: httpx.Client, base: dict) -> None:
    vid = base["version"]["id"]
    jobs = [compress(api, vid, seconds=30) for _ in range(3)]
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        states = [api.get(f"/compression/jobs/{j['id']}").json()["data"]["state"] for j in jobs]
        if states.count("running") == 2:
            break
        time.sleep(0.05)
    assert states.count("running") == 2 and states.count("queued") == 1, states  # MAX_COMPRESSION_JOBS=2
    queued = jobs[states.index("queued")]
    r = api.post(f"/compression/jobs/{queued['id']}/cancel")
    assert r.status_code == 200 and r.json()["data"]["state"] == "cancelled"
    for j in jobs:
        if j is not queued:
            assert api.post(f"/compression/jobs/{j['id']}/cancel").status_code == 200
    for j in jobs:
        done = wait_job(api, j["id"], timeout=20)
        assert done["state"] == "cancelled", done
    r = api.post(f"/compression/jobs/{jobs[0]['id']}/cancel")
    assert r.status_code == 409 and "already cancelled" in r.json()["message"]
    assert api.post("/compression/jobs/ghost/cancel").status_code == 404
    audited = api.get("/audit", params={"action": "job.cancel"}).json()["data"]
    assert {e["target"] for e in audited} >= {j["id"] for j in jobs} and audited[0]["actor"] == "admin"
    assert api.get("/audit", params={"target": jobs[0]["id"], "action": "job.submit.compression"}).json()["data"]
    assert api.get("/compression/jobs/ghost").status_code == 404
    assert api.get("/compression/jobs", params={"state": "bogus"}).status_code == 422


def test_tags_concurrent_update_and_audited_rollback(api: httpx.Client, base: dict) -> None:
    v1 = base["version"]["id"]
    v2 = wait_job(api, compress(api, v1, seconds=0.05)["id"])["result"]["version_id"]
    v3 = wait_job(api, compress(api, v2, seconds=0.05)["id"])["result"]["version_id"]
    sibling = wait_job(api, compress(api, v1, seconds=0.05)["id"])["result"]["version_id"]
    assert api.put("/compression/models/tiny/tags/production",
                   json={"version_id": v2, "expected_version_id": None}).status_code == 200
    assert api.put("/compression/models/tiny/tags/production",
                   json={"version_id": v3, "expected_version_id": v2}).status_code == 200
    stale = api.put("/compression/models/tiny/tags/production", json={"version_id": v1, "expected_version_id": v2})
    assert stale.status_code == 409 and "reload and retry" in stale.json()["message"]
    assert api.put("/compression/models/tiny/tags/candidate", json={"version_id": sibling}).status_code == 200
    assert api.get("/compression/models/tiny/tags").json()["data"] == {"candidate": sibling, "production": v3}
    assert api.get("/compression/models", params={"tag": "candidate"}).json()["data"]["total"] == 1
    bad = api.post("/compression/models/tiny/rollback", json={"to_version_id": sibling})
    assert bad.status_code == 422 and "not in the lineage" in bad.json()["message"]
    r = api.post("/compression/models/tiny/rollback", json={"to_version_id": v1, "reason": "regression"})
    assert r.status_code == 200 and r.json()["data"] == {"tag": "production", "from": v3, "to": v1}
    entries = api.get("/audit", params={"action": "tag.rollback"}).json()["data"]
    assert entries[0]["actor"] == "admin" and entries[0]["details"]["reason"] == "regression"
    assert api.post("/compression/models/tiny/rollback", json={"tag": "nope"}).status_code == 404
    assert api.put("/compression/models/tiny/tags/bad..tag", json={"version_id": v1}).status_code == 422
    assert api.put("/compression/models/tiny/tags/x", json={"version_id": "ghost"}).status_code == 404
    assert api.delete("/compression/models/tiny/tags/candidate").status_code == 200
    # deletion: a version with children is refused; a leaf goes, and its unshared blob with it
    r = api.delete(f"/compression/models/tiny/versions/{v2}")
    assert r.status_code == 409 and "derive from" in r.json()["message"]
    assert api.delete(f"/compression/models/tiny/versions/{v3}").status_code == 200
    assert api.get(f"/compression/models/tiny/versions/{v3}").status_code == 404


def test_concurrent_promotions_exactly_one_wins(controller: Controller, api: httpx.Client, tmp_path: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    up = upload(api, "race", tiny_onnx(tmp_path / "r.onnx", seed=5)).json()["data"]
    v1 = up["version"]["id"]
    children = [wait_job(api, compress(api, v1, seconds=0.01)["id"])["result"]["version_id"] for _ in range(3)]
    assert api.put("/compression/models/race/tags/production", json={"version_id": v1}).status_code == 200

    def promote(vid: str) -> int:
        with controller.client() as c:
            return c.put("/compression/models/race/tags/production",
                         json={"version_id": vid, "expected_version_id": v1}).status_code

    with ThreadPoolExecutor(len(children)) as pool:
        codes = sorted(pool.map(promote, children))
    assert codes == [200] + [409] * (len(children) - 1)
    assert api.get("/compression/models/race/tags").json()["data"]["production"] in children


def test_delete_model(api: httpx.Client, tmp_path: Path) -> None:
    r = upload(api, "doomed", tiny_onnx(tmp_path / "d.onnx", seed=99))
    assert r.status_code == 201
    assert api.delete("/compression/models/doomed").status_code == 200
    assert api.get("/compression/models/doomed").status_code == 404


def test_auth(controller: Controller, base: dict) -> None:
    body = {"version_id": base["version"]["id"], "technique": "quant-test-slow", "config": {"seconds": 0}}
    with controller.client(None) as anon, controller.client("viewer") as viewer, controller.client("bogus") as bogus:
        r = anon.post("/compression/quantize", json=body)
        assert r.status_code == 401 and r.json()["status"] == "error" and r.headers["www-authenticate"] == "Bearer"
        r = viewer.post("/compression/quantize", json=body)
        assert r.status_code == 403 and "read-only" in r.json()["message"]
        assert viewer.put("/compression/models/tiny/tags/x", json={"version_id": body["version_id"]}).status_code == 403
        assert viewer.delete("/compression/models/tiny").status_code == 403
        assert viewer.get("/compression/jobs").status_code == 200
        assert anon.get("/profiles").status_code == 401  # reads need a key unless EDGEFLEET_OPEN_READS
        assert bogus.get("/profiles").status_code == 401
        assert bogus.post("/devices", json={"id": "x"}).status_code == 401


def test_profiles(api: httpx.Client) -> None:
    ids = [p["id"] for p in api.get("/profiles").json()["data"]]
    assert "rpi4" in ids and "x86-edge" in ids
    assert api.get("/profiles/rpi4").json()["data"]["arch"] == "aarch64"
    r = api.get("/profiles/nope")
    assert r.status_code == 404 and "known profiles" in r.json()["message"]


def test_devices(api: httpx.Client) -> None:
    r = api.post("/devices", json={"id": "pi-01", "profile": "rpi4"})
    assert r.status_code == 201 and r.json()["data"]["profile"] == "rpi4"
    assert any(d["id"] == "pi-01" for d in api.get("/devices").json()["data"])
    assert api.get("/devices", params={"profile": "iphone"}).json()["data"] == []
    dev = api.get("/devices/pi-01").json()["data"]
    assert dev["online"] is False and dev["active"] is None and dev["deployments"] == []
    assert api.get("/devices/ghost").status_code == 404
    assert api.post("/devices", json={"id": "a/b"}).status_code == 422
    r = api.post("/devices", json={"id": "pi-02", "profile": "toaster"})
    assert r.status_code == 422 and "unknown profile" in r.json()["message"]


def test_deployments_without_broker(api: httpx.Client, base: dict) -> None:
    r = api.post("/deployments", json={"version_id": base["version"]["id"], "device_ids": ["pi-01"]})
    assert r.status_code == 503 and "EDGEFLEET_BROKER_HOST" in r.json()["message"]
    assert api.get("/deployments").json()["data"] == []
    assert api.get("/deployments/ghost").status_code == 404


def test_conversion_job_records_converted_version(api: httpx.Client, base: dict) -> None:
    vid = base["version"]["id"]
    r = api.post("/conversions", json={"version_id": vid, "profile": "x86-edge", "target_format": "onnx"})
    assert r.status_code == 202, r.text
    done = wait_job(api, r.json()["data"]["id"], timeout=120)
    assert done["state"] == "succeeded", done["error"]
    child = api.get(f"/compression/models/tiny/versions/{done['result']['version_id']}").json()["data"]
    assert child["parent_id"] == vid and child["technique"] == "convert-onnx" and child["profile"] == "x86-edge"
    assert child["config"]["target"] == "onnx" and "check" in child["metrics"]
    r = api.post("/conversions", json={"version_id": vid, "profile": "x86-edge", "target_format": "onnx",
                                       "config": {"no_such_option": 1}})
    assert r.status_code == 422 and "no_such_option" in r.json()["message"]


def test_conversion_bad_input(api: httpx.Client, base: dict) -> None:
    r = api.post("/conversions", json={"version_id": base["version"]["id"], "profile": "nope"})
    assert r.status_code == 422
    r = api.post("/conversions", json={"version_id": base["version"]["id"], "profile": "rpi4",
                                       "target_format": "pdf"})
    assert r.status_code == 422
