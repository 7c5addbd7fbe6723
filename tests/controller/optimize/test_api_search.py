"""REST: ``POST /compression/search`` runs one job per version × profile as one group; GET returns the fronts."""

from __future__ import annotations

import time

import httpx

from controller.registry import Registry
from tests.controller.api.conftest import api, controller, wait_job  # noqa: F401 - fixtures


def test_search_group_runs_and_returns_fronts(api: httpx.Client, controller, tiny) -> None:  # noqa: F811
    mlp = tiny["mlp"]
    r = api.post("/compression/models", data={"name": "opt-mlp"},
                 files={"file": ("mlp.onnx", mlp["onnx"].read_bytes(), "application/octet-stream"),
                        "samples": ("calib.npz", mlp["calib"].read_bytes(), "application/octet-stream")})
    assert r.status_code == 201, r.text
    vid = r.json()["data"]["version"]["id"]
    body = {"version_ids": [vid], "profiles": ["rpi4", "x86-edge"], "quality_floor": 0.9, "trials": 2,
            "strategy": "random", "objectives": ["quality", "latency", "size"], "precisions": ["fp32", "int8"]}
    r = api.post("/compression/search", json=body)
    assert r.status_code == 202, r.text
    search = r.json()["data"]
    sid = search["search_id"]
    assert len(search["searches"]) == 2 and {s["profile"] for s in search["searches"]} == {"rpi4", "x86-edge"}
    stages = set()
    deadline = time.monotonic() + 400
    while time.monotonic() < deadline:
        search = api.get(f"/compression/search/{sid}").json()["data"]
        stages |= {s["stage"] or "" for s in search["searches"]}
        if search["state"] not in ("running", "queued"):
            break
        time.sleep(0.2)
    assert search["state"] == "succeeded", search
    assert any("trial" in s and "/2" in s for s in stages), stages
    with Registry(controller.workspace) as registry:
        for s in search["searches"]:
            assert s["front"] and s["recommended"]["recommended"]
            assert s["meta"]["trials"] == 2 and s["meta"]["profile"] == s["profile"]
            for point in s["front"]:
                chain = registry.lineage(version_id=point["version_id"])
                assert chain[0].id == vid  # lineage starts at the searched version
                if point["config"]["stages"]:
                    assert chain[-1].metrics["optimize"]["study"] == s["meta"]["study"]
    r = api.post("/compression/search", json={**body, "profiles": ["rpi4", "iphone"]})
    assert r.status_code == 422 and "coreml" in r.json()["message"]  # all or nothing
    # resume: nothing to redo for a finished group
    r = api.post(f"/compression/search/{sid}/resume")
    assert r.status_code == 202 and "resumed 0" in r.json()["message"]


def test_search_bad_requests(api: httpx.Client) -> None:  # noqa: F811
    assert api.get("/compression/search/nope").status_code == 404
    r = api.post("/compression/search", json={"version_ids": ["missing"], "profiles": ["rpi4"]})
    assert r.status_code == 422 and "does not exist" in r.json()["message"]
    r = api.post("/compression/search", json={"version_ids": ["x"], "profiles": ["rpi4"], "strategy": "grid"})
    assert r.status_code == 422


def test_cancelled_search_resumes_with_its_stored_trials(api: httpx.Client, tiny) -> None:  # noqa: F811
    mlp = tiny["mlp"]
    r = api.post("/compression/models", data={"name": "opt-mlp-resume"},
                 files={"file": ("mlp.onnx", mlp["onnx"].read_bytes(), "application/octet-stream"),
                        "samples": ("calib.npz", mlp["calib"].read_bytes(), "application/octet-stream")})
    vid = r.json()["data"]["version"]["id"]
    body = {"version_ids": [vid], "profiles": ["rpi4"], "quality_floor": 0.9, "trials": 5, "strategy": "random",
            "objectives": ["quality", "latency", "size"], "precisions": ["fp32", "int8", "int4"]}
    search = api.post("/compression/search", json=body).json()["data"]
    sid, job_id = search["search_id"], search["searches"][0]["job_id"]
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:  # let two trials finish, then cancel mid-search
        job = api.get(f"/compression/jobs/{job_id}").json()["data"]
        if "trial 3/5" in (job["stage"] or "") or job["state"] not in ("queued", "running"):
            break
        time.sleep(0.1)
    assert api.post(f"/compression/jobs/{job_id}/cancel").status_code == 200
    job = wait_job(api, job_id, timeout=120)
    assert job["state"] == "cancelled", job
    assert api.post(f"/compression/search/{sid}/resume").json()["message"] == "resumed 1 search job(s)"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        search = api.get(f"/compression/search/{sid}").json()["data"]
        if search["state"] not in ("running", "queued"):
            break
        time.sleep(0.2)
    s = search["searches"][0]
    assert search["state"] == "succeeded" and s["job_id"] != job_id, search
    meta = s["meta"]
    assert meta["trials"] == 5  # the budget, not 5 more: the cancelled job's measured trials were kept
    assert meta["measured"] + meta["failed"] == 5
