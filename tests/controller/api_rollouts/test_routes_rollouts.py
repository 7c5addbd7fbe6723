"""REST routes for rollouts, A/B, device metrics and Prometheus, in-process over a simulated fleet.

The app is built from the API's own rollout routers, dependencies and error handlers over a
simulated fleet (the production app registers the same routers: checked below).
"""

from __future__ import annotations

import time

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from controller.api.app import API_PREFIX
from controller.api.auth import KeyRing
from controller.api.errors import install_error_handlers
from controller.api.routes import rollouts
from controller.api.services import Services
from controller.settings import Settings
from fleetsim.harness import SimHarness

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def api(tmp_path):
    h = SimHarness(tmp_path, agents=6, simulator_kw={"bench_s": 0.02, "telemetry_interval_s": 0.2}).start()
    app = FastAPI()
    install_error_handlers(app)
    app.include_router(rollouts.router, prefix=API_PREFIX)
    app.include_router(rollouts.metrics_router, prefix=API_PREFIX)
    app.include_router(rollouts.prometheus_router)
    app.state.services = Services(settings=Settings(compression_workspace=tmp_path / "ws"), keys=KeyRing([]),
                                  registry=h.registry, runner=None, fleet=h.service)  # type: ignore[arg-type]
    app.state.services.extra["rollouts"] = h.engine  # one engine per registry (the harness already runs one)
    try:
        with TestClient(app) as client:
            yield client, h
    finally:
        h.stop()


def _until(client, rid: str, states: set[str], timeout: float = 30.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        data = client.get(f"{API_PREFIX}/rollouts/{rid}").json()["data"]
        if data["state"] in states or time.monotonic() > deadline:
            return data
        time.sleep(0.1)


def test_rollout_lifecycle_ab_metrics_and_prometheus(api):
    client, h = api
    base = h.artifact(technique="fp32")
    resp = client.post(f"{API_PREFIX}/rollouts", json={"artifact_id": base.id, "device_ids": h.device_ids,
                                                        "plan": {"strategy": "all_at_once"}})
    assert resp.status_code == 201, resp.text
    rid = resp.json()["data"]["id"]
    done = _until(client, rid, {"succeeded"})
    assert done["state"] == "succeeded" and done["outcomes"] == {"committed": 6}
    assert [e["kind"] for e in done["events"]][:2] == ["created", "wave_started"]
    # pause / resume / cancel state rules are enforced with 409s
    assert client.post(f"{API_PREFIX}/rollouts/{rid}/pause").status_code == 409
    assert client.get(f"{API_PREFIX}/rollouts/nope").status_code == 404
    bad = client.post(f"{API_PREFIX}/rollouts", json={"artifact_id": base.id, "plan": {"canary_percent": 500}})
    assert bad.status_code == 422
    unknown = client.post(f"{API_PREFIX}/rollouts", json={"artifact_id": base.id, "device_ids": ["ghost-1"]})
    assert unknown.status_code == 422 and "ghost-1" in unknown.json()["message"]

    # A/B: verdict with sample sizes and difference, then promote the winner
    a, b = h.artifact(technique="fp32-a"), h.artifact(technique="int8")
    resp = client.post(f"{API_PREFIX}/rollouts/ab", json={"a": a.id, "b": b.id, "device_ids": h.device_ids})
    assert resp.status_code == 201, resp.text
    ab_id = resp.json()["data"]["id"]
    assert _until(client, ab_id, {"succeeded"})["state"] == "succeeded"
    verdict = client.get(f"{API_PREFIX}/rollouts/{ab_id}/verdict").json()["data"]
    assert verdict["winner"] == "b" and verdict["variants"]["b"]["latency_p95_ms"]["n"] == 3
    promoted = client.post(f"{API_PREFIX}/rollouts/{ab_id}/promote")
    assert promoted.status_code == 201
    assert _until(client, promoted.json()["data"]["id"], {"succeeded"})["state"] == "succeeded"

    # telemetry: stored (batched), served per device, exported for Prometheus
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not h.service.telemetry.stored:
        time.sleep(0.1)
    m = client.get(f"{API_PREFIX}/devices/{h.device_ids[0]}/metrics").json()["data"]
    assert m["samples"] and m["samples"][-1]["device_id"] == h.device_ids[0]
    assert client.get(f"{API_PREFIX}/devices/unknown-dev/metrics").status_code == 404
    text = client.get("/metrics").text
    assert f'edgefleet_device_online{{device="{h.device_ids[0]}",profile="x86-edge"}} 1' in text
    assert "edgefleet_device_cpu_percent{" in text and 'edgefleet_rollouts{state="succeeded"}' in text


def test_production_app_registers_rollout_routes(tmp_path):
    from controller.api.app import create_app

    paths = set(create_app(Settings(compression_workspace=tmp_path / "ws")).openapi()["paths"])
    assert {f"{API_PREFIX}/rollouts", f"{API_PREFIX}/rollouts/ab", f"{API_PREFIX}/rollouts/{{rollout_id}}/verdict",
            f"{API_PREFIX}/devices/{{device_id}}/metrics", "/metrics"} <= paths


def test_rollout_per_profile_target_over_rest(api):
    """One rollout, the target named per device profile (how the demo ships TFLite to Android, ONNX elsewhere)."""
    client, h = api
    int8 = h.artifact(technique="int8")
    resp = client.post(f"{API_PREFIX}/rollouts", json={"per_profile": {h.profile: int8.id},
                                                        "device_ids": h.device_ids,
                                                        "plan": {"strategy": "all_at_once"}})
    assert resp.status_code == 201, resp.text
    done = _until(client, resp.json()["data"]["id"], {"succeeded", "failed", "rolled_back"})
    assert done["state"] == "succeeded" and done["outcomes"] == {"committed": 6}
    assert done["target"]["per_profile"] == {h.profile: int8.id}
    too_many = client.post(f"{API_PREFIX}/rollouts", json={"per_profile": {f"p{i}": "x" for i in range(65)}})
    assert too_many.status_code == 422
