"""Console actions and pages that need the fleet (real mosquitto, real fleet service, no agents).

Registered devices that never connect keep a rollout waiting, which is what pause / resume /
abort and a deployment's rollback act on; the pages and reports must show each step.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from controller.broker import BrokerHandle
from tests.controller.api.conftest import Controller, InProcessController, make_controller, tiny_onnx


@pytest.fixture(scope="module")
def ctl(tmp_path_factory: pytest.TempPathFactory, mosquitto: BrokerHandle) -> Iterator[Controller]:
    base = make_controller(tmp_path_factory.mktemp("cfleet"), EDGEFLEET_BROKER_HOST=mosquitto.host,
                           EDGEFLEET_BROKER_PORT=str(mosquitto.port),
                           EDGEFLEET_BROKER_PASSWORD=mosquitto.credentials.users["controller"],
                           EDGEFLEET_FLEET="consoletest")
    c = InProcessController(url=base.url, workspace=base.workspace, env=base.env, port=base.port,
                            keys=base.keys).start()
    try:
        yield c
    finally:
        c.stop()


def _until(fetch, needle: str, timeout: float = 20.0) -> str:
    deadline = time.monotonic() + timeout
    while True:
        text = fetch()
        if needle in text or time.monotonic() > deadline:
            assert needle in text, text[-2000:]
            return text
        time.sleep(0.1)


def test_rollout_actions_pages_and_reports(ctl: Controller, tmp_path: Path) -> None:
    admin = {"Authorization": f"Bearer {ctl.keys['admin']}"}
    viewer = {"Authorization": f"Bearer {ctl.keys['viewer']}"}
    samples = tmp_path / "s.npz"
    np.savez(samples, input=np.random.default_rng(0).standard_normal((16, 16)).astype(np.float32))
    with ctl.client() as api:
        fp32 = api.post("/compression/models", data={"name": "c-mlp"},
                        files={"file": ("m.onnx", tiny_onnx(tmp_path / "m.onnx").read_bytes()),
                               "samples": ("s.npz", samples.read_bytes())}).json()["data"]["version"]
        for dev in ("c-1", "c-2"):
            assert api.post("/devices", json={"id": dev, "profile": "rpi4"}).status_code == 201
    frag = ctl.url + "/console/fragments"
    devices = httpx.get(frag + "/devices", headers=viewer).text
    assert 'data-device="c-1"' in devices and "offline" in devices
    actions = httpx.get(f"{frag}/versions/{fp32['id']}/actions", headers=admin).text
    assert 'value="c-1"' in actions and "Deploy" in actions

    form = {"version_id": fp32["id"], "device_ids": ["c-1", "c-2"], "strategy": "canary", "canary_count": "1",
            "waves": "1"}
    assert httpx.post(ctl.url + "/console/actions/deploy", data=form, headers=viewer).status_code == 403
    r = httpx.post(ctl.url + "/console/actions/deploy", data=form, headers=admin)
    assert r.status_code == 200, r.text
    rid = r.headers["hx-redirect"].rsplit("/", 1)[-1]
    page = _until(lambda: httpx.get(f"{frag}/rollouts/{rid}", headers=admin).text, "wave_started")
    assert "canary" in page and "Abort and roll back" in page
    assert "Abort" not in httpx.get(f"{frag}/rollouts/{rid}", headers=viewer).text  # read-only: no buttons

    act = ctl.url + f"/console/actions/rollouts/{rid}"
    assert httpx.post(act + "/pause", headers=admin).status_code == 200
    _until(lambda: httpx.get(f"{frag}/rollouts/{rid}", headers=admin).text, "s-paused")
    assert httpx.post(act + "/resume", headers=admin).status_code == 200
    assert httpx.post(act + "/explode", headers=admin).status_code == 404
    r = httpx.post(act + "/abort", data={"reason": "wrong build"}, headers=admin)
    assert r.status_code == 200 and "ef:rollouts" in r.headers["hx-trigger"]
    page = _until(lambda: httpx.get(f"{frag}/rollouts/{rid}", headers=admin).text, "wrong build")
    assert "Abort and roll back" not in page
    assert httpx.post(act + "/promote", headers=admin).status_code in (404, 409, 422)  # not an A/B rollout

    with ctl.client() as api:
        rollout = api.get(f"/rollouts/{rid}").json()["data"]
        assert rollout["state"] in ("cancelled", "rolled_back")
        dep_id = next(d["deployment_id"] for d in rollout["devices"] if d["deployment_id"])
    listing = httpx.get(frag + "/rollouts", headers=viewer).text
    assert rid[:8] in listing
    assert dep_id[:8] in httpx.get(frag + "/deployments", headers=viewer).text
    dep_page = httpx.get(f"{frag}/deployments/{dep_id}", headers=admin).text
    assert 'data-device="c-1"' in dep_page
    r = httpx.post(f"{ctl.url}/console/actions/deployments/{dep_id}/rollback", data={"reason": "from the test"},
                   headers=admin)
    assert r.status_code in (200, 409), r.text
    device = httpx.get(f"{frag}/devices/c-1", headers=viewer).text
    assert dep_id[:8] in device and "data-telemetry-chart" in device
    overview = httpx.get(frag + "/overview", headers=viewer).text
    assert "0 / 2" in overview  # devices online / known

    report = httpx.get(f"{ctl.url}/api/v1/rollouts/{rid}/report", headers=viewer)
    assert report.status_code == 200 and "wrong build" in report.text and "rollout timeline" in report.text
    dep_report = httpx.get(f"{ctl.url}/api/v1/deployments/{dep_id}/report", headers=viewer)
    assert dep_report.status_code == 200 and "c-1" in dep_report.text
    assert httpx.get(f"{ctl.url}/api/v1/reports/{rid}", headers=viewer, params={"format": "json"}).json()[
        "data"]["kind"] == "rollout"
    # an A/B deployment: the page shows the last verdict and computes one only on request
    with ctl.client() as api:
        ab = api.post("/rollouts/ab", json={"a": fp32["id"], "b": fp32["id"], "device_ids": ["c-1", "c-2"]})
        assert ab.status_code == 201, ab.text
        ab_id = ab.json()["data"]["id"]
    page = httpx.get(f"{frag}/rollouts/{ab_id}", headers=viewer).text
    assert "no verdict computed yet" in page
    assert httpx.get(f"{frag}/rollouts/{ab_id}", headers=viewer).text.count("ab_verdict") == 0  # views record nothing
    r = httpx.post(f"{ctl.url}/console/actions/rollouts/{ab_id}/verdict", headers=viewer)
    assert r.status_code == 200 and "inconclusive" in r.text
    assert "inconclusive" in httpx.get(f"{frag}/rollouts/{ab_id}", headers=viewer).text
    with ctl.client() as api:
        published = api.post("/fleet/homeassistant", params={"prefix": "homeassistant/consoletest"}).json()
        assert published["data"] == {"configs": 14, "devices": 2, "prefix": "homeassistant/consoletest"}
