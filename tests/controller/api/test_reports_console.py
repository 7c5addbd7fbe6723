"""Reports and the web console against a real in-process controller (uvicorn on a free port) with httpx.

A real INT8 static quantization of an uploaded model (calibrated on uploaded samples) must
leave a self-contained HTML report with real charts; the console's pages, fragments, actions
and event stream go through the same API keys as the REST API.
"""

from __future__ import annotations

import re
import threading
import time
from html import unescape
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.controller.api.conftest import Controller, tiny_onnx, wait_job


@pytest.fixture(scope="module")
def quantized(controller: Controller, api: httpx.Client, tmp_path_factory: pytest.TempPathFactory) -> dict:
    tmp = tmp_path_factory.mktemp("rep")
    model = tiny_onnx(tmp / "m.onnx", seed=4)
    samples = tmp / "s.npz"
    np.savez(samples, input=np.random.default_rng(1).standard_normal((32, 16)).astype(np.float32))
    r = api.post("/compression/models", data={"name": "reported"},
                 files={"file": ("m.onnx", model.read_bytes()), "samples": ("s.npz", samples.read_bytes())})
    assert r.status_code == 201, r.text
    fp32 = r.json()["data"]["version"]
    # allow_slower: INT8 on this tiny model is slower than FP32, and the never-slower guard would deliver the
    # FP32 weights unchanged; the report under test is about a real INT8 build
    job = api.post("/compression/quantize", json={"version_id": fp32["id"], "technique": "int8-static",
                                                  "allow_slower": True,
                                                  "config": {"calibration_samples": 16}}).json()["data"]
    job = wait_job(api, job["id"], timeout=120)
    assert job["state"] == "succeeded", job
    return {"fp32": fp32, "job": job, "int8": job["result"]["version_id"]}


def _no_external_assets(html: str) -> None:
    refs = re.findall(r'(?:src|href)\s*=\s*"([^"]+)"', html)
    assert not [r for r in refs if r.startswith(("http:", "https:", "//"))], refs
    assert "<script" not in html  # nothing to execute: the report is plain HTML + inline SVG


def test_job_writes_a_self_contained_report(controller: Controller, api: httpx.Client, quantized: dict) -> None:
    job_id = quantized["job"]["id"]
    folder = controller.workspace / "reports" / "jobs" / job_id
    deadline = time.monotonic() + 30  # written right after the job finished
    while not (folder / "report.html").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    raw = (folder / "report.html").read_text()
    html = unescape(raw)
    assert len(raw.encode()) < 2 * 1024 * 1024
    _no_external_assets(html)
    for needle in ("summary against the reference", "latency on the controller host", "size breakdown",
                   "per-layer weight drift vs FP32", "reproduce", '"technique": "int8-static"'):
        assert needle in html, needle
    assert html.count("<svg") >= 4
    charts = sorted(p.name for p in (folder / "charts").iterdir())
    assert any(n.startswith("drift-") and n.endswith(".svg") for n in charts)
    assert all((folder / "charts" / n).read_bytes()[:4] == b"\x89PNG" for n in charts if n.endswith(".png"))
    served = api.get(f"/compression/jobs/{job_id}/report")
    assert served.status_code == 200 and served.headers["content-type"].startswith("text/html")
    assert served.text == raw


def test_version_report_measures_real_drift_and_exports_charts(api: httpx.Client, quantized: dict) -> None:
    vid = quantized["int8"]
    rep = api.get(f"/compression/models/reported/versions/{vid}/report", params={"format": "json"}).json()["data"]
    layers = rep["data"]["version"]["metrics"]
    assert layers["quality_score"] > 0.9
    drift = next(s for s in rep["sections"] if s["title"].startswith("per-layer weight drift"))
    rows = {r[0]: r[2] for r in drift["tables"][0]["rows"]}
    assert set(rows) == {"w1", "w2"}
    assert all(20 < sqnr < 80 for sqnr in rows.values()), rows  # INT8 weights: changed, but close to FP32
    latency = rep["data"]["version"]["metrics"]["latency"]["t1_b1"]["candidate"]["quantiles_ms"]
    assert latency["p5"] <= latency["p50"] <= latency["p95"] <= latency["p99"]
    chart = next(c["name"] for c in drift["charts"])
    svg = api.get(f"/reports/{vid}/charts/{chart}.svg")
    assert svg.status_code == 200 and svg.headers["content-type"].startswith("image/svg+xml") and "<svg" in svg.text
    png = api.get(f"/reports/{vid}/charts/{chart}.png")
    assert png.status_code == 200 and png.content[:4] == b"\x89PNG"
    root = api.get(f"/reports/{quantized['fp32']['id']}").text  # the FP32 root: no drift section, still a report
    assert "size breakdown" in root and "per-layer weight drift" not in root
    missing = api.get("/reports/not-an-id")
    assert missing.status_code == 404 and "no job, version, deployment or rollout" in missing.json()["message"]
    assert api.get(f"/reports/{vid}/charts/nope.svg").status_code == 404


def test_console_pages_fragments_and_offline_docs(controller: Controller, api: httpx.Client, quantized: dict) -> None:
    r = httpx.get(controller.url + "/", follow_redirects=False)
    assert r.status_code in (302, 307) and r.headers["location"] == "/console/"
    shell = httpx.get(controller.url + "/console/devices").text
    assert '/console/static/vendor/htmx-2.0.11.min.js' in shell and 'hx-get="/console/fragments/devices"' in shell
    _assert_local(shell)
    assert httpx.get(controller.url + "/console/static/vendor/htmx-2.0.11.min.js").status_code == 200
    docs = httpx.get(controller.url + "/docs").text
    assert "/console/static/vendor/swagger-ui/swagger-ui-bundle.js" in docs
    _assert_local(docs)
    assert httpx.get(controller.url + "/console/static/vendor/swagger-ui/swagger-ui-bundle.js").status_code == 200
    redoc = httpx.get(controller.url + "/redoc").text
    assert "/console/static/vendor/redoc/redoc.standalone.js" in redoc and "fonts.googleapis" not in redoc
    _assert_local(redoc)
    assert httpx.get(controller.url + "/console/static/vendor/redoc/redoc.standalone.js").status_code == 200
    assert httpx.get(controller.url + "/console/nope").status_code == 404
    base = controller.url + "/console/fragments"
    hdr = {"Authorization": f"Bearer {controller.keys['viewer']}"}
    models = httpx.get(base + "/models", headers=hdr).text
    assert "reported" in models
    version = httpx.get(f"{base}/versions/{quantized['int8']}", headers=hdr).text
    assert "int8-static" in version and quantized["fp32"]["id"][:8] in version  # the lineage shows the parent
    actions = httpx.get(f"{base}/versions/{quantized['int8']}/actions", headers=hdr).text
    assert "Compress" not in actions and "read-write key" in actions  # read-only key: no write actions offered
    jobs = httpx.get(base + "/jobs", headers=hdr).text
    assert quantized["job"]["id"][:8] in jobs and "succeeded" in jobs
    assert httpx.get(base + "/overview", headers={"Authorization": "Bearer efk_bogus"}).status_code == 401
    for frag in ("/overview", "/devices", "/deployments", "/rollouts", "/models/reported"):
        assert httpx.get(base + frag, headers=hdr).status_code == 200, frag


def _assert_local(html: str) -> None:
    refs = re.findall(r'(?:src|href)\s*=\s*"([^"]+)"', html) + re.findall(r'(?:src|href)\s*=\s*\'([^\']+)\'', html)
    assert refs and not [r for r in refs if r.startswith(("http:", "https:", "//"))], refs


def test_console_actions_need_a_read_write_key(controller: Controller, quantized: dict) -> None:
    url = controller.url + "/console/actions/compress"
    form = {"version_id": quantized["fp32"]["id"], "technique": "int8-dynamic", "config": "{}"}
    assert httpx.post(url, data=form).status_code == 401
    ro = httpx.post(url, data=form, headers={"Authorization": f"Bearer {controller.keys['viewer']}"})
    assert ro.status_code == 403 and "read-only" in ro.json()["message"]
    bad = httpx.post(url, data=form | {"config": "[1"}, headers={"Authorization": f"Bearer {controller.keys['admin']}"})
    assert bad.status_code == 422 and "JSON" in bad.json()["message"]
    ok = httpx.post(url, data=form, headers={"Authorization": f"Bearer {controller.keys['admin']}"})
    assert ok.status_code == 200 and "queued" in ok.text and "ef:jobs" in ok.headers["hx-trigger"]


def test_event_stream_announces_job_changes(controller: Controller, api: httpx.Client, quantized: dict) -> None:
    assert httpx.get(controller.url + "/console/stream", params={"ticket": "forged"}).status_code == 401
    ticket = httpx.post(controller.url + "/console/stream-ticket",
                        headers={"Authorization": f"Bearer {controller.keys['viewer']}"}).json()["data"]["ticket"]
    seen: list[str] = []

    def listen() -> None:
        with httpx.stream("GET", controller.url + "/console/stream", params={"ticket": ticket}, timeout=30) as r:
            assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
            for line in r.iter_lines():
                if line.startswith("event: "):
                    seen.append(line[7:])
                    if "jobs" in seen:
                        return

    t = threading.Thread(target=listen, daemon=True)
    t.start()
    time.sleep(0.5)
    started = time.monotonic()
    api.post("/compression/quantize", json={"version_id": quantized["fp32"]["id"], "technique": "int8-static",
                                            "config": {"calibration_samples": 8}})
    t.join(15)
    assert "jobs" in seen and time.monotonic() - started < 15
    used = httpx.get(controller.url + "/console/stream", params={"ticket": ticket})
    assert used.status_code == 401  # a ticket opens one stream only


def test_live_metrics_cover_the_grafana_dashboard(controller: Controller, api: httpx.Client) -> None:
    from tests.controller.dashboards.test_dashboards import dashboard_metrics, served_metrics

    r = httpx.get(controller.url + "/metrics", headers={"Authorization": f"Bearer {controller.keys['viewer']}"})
    assert r.status_code == 200
    served = served_metrics(r.text)
    missing = sorted(m for m in dashboard_metrics() if m not in served)
    assert not missing, missing
    assert sum(s.value for s in served["edgefleet_jobs"]) >= 1  # the jobs of this module are counted
    dash = api.get("/fleet/grafana-dashboard").json()["data"]
    assert dash["uid"] == "edgefleet-fleet" and dash["panels"]
    assert api.post("/fleet/homeassistant").status_code == 503  # no broker configured on this controller


def test_report_cli_saves_html_and_charts(controller: Controller, quantized: dict, tmp_path: Path,
                                          capsys: pytest.CaptureFixture) -> None:
    from controller.cli import main

    ref = quantized["int8"]
    rc = main(["report", ref, "--url", controller.url, "--key", controller.keys["viewer"], "--out", str(tmp_path),
               "--charts"])
    assert rc == 0
    html = tmp_path / ref / "report.html"
    assert capsys.readouterr().out.strip() == str(html)
    assert "per-layer weight drift" in html.read_text()
    names = sorted(p.name for p in (tmp_path / ref / "charts").iterdir())
    assert any(n.startswith("drift-") and n.endswith(".png") for n in names) and len(names) >= 8
    assert main(["report", "no-such-id", "--url", controller.url, "--key", controller.keys["viewer"],
                 "--out", str(tmp_path)]) == 1
    assert "no job, version" in capsys.readouterr().err


def test_user_text_is_escaped_in_pages_and_reports(controller: Controller, api: httpx.Client, tmp_path: Path) -> None:
    evil = '<script>alert("x")</script>'
    r = api.post("/compression/models", data={"name": "escaped", "description": evil},
                 files={"file": ("m.onnx", tiny_onnx(tmp_path / "m.onnx", seed=9).read_bytes())})
    assert r.status_code == 201, r.text
    hdr = {"Authorization": f"Bearer {controller.keys['viewer']}"}
    page = httpx.get(controller.url + "/console/fragments/models", params={"q": "escaped"}, headers=hdr).text
    assert "&lt;script&gt;" in page and evil not in page
    report = api.get(f"/reports/{r.json()['data']['version']['id']}").text
    assert "<script" not in report


def test_a_pipeline_build_report_has_a_section_per_step(controller: Controller, api: httpx.Client,
                                                        quantized: dict) -> None:
    steps = [{"technique": "prune-unstructured", "config": {"sparsity": 0.3}},
             {"technique": "int8-static", "config": {"calibration_samples": 8}}]
    job = api.post("/compression/pipeline", json={"version_id": quantized["fp32"]["id"], "steps": steps})
    assert job.status_code == 202, job.text
    done = wait_job(api, job.json()["data"]["id"], timeout=120)
    assert done["state"] == "succeeded", done["error"]
    rep = api.get(f"/compression/jobs/{done['id']}/report", params={"format": "json"}).json()["data"]
    titles = [s["title"] for s in rep["sections"]]
    assert "step 1 (prune-unstructured): summary against the reference" in titles
    assert "step 2 (int8-static): per-layer weight drift" in " ".join(titles)
    assert rep["verdict_ok"] is True and rep["verdict"].startswith("succeeded")
    drift = next(s for s in rep["sections"] if s["title"].startswith("step 1 (prune-unstructured): per-layer"))
    assert all(r[3] > 0 for r in drift["tables"][0]["rows"])  # 30 % of each weight zeroed: a real relative error
