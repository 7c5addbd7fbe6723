"""Deployments through the REST API with the real fleet service on a real mosquitto (tests/conftest.py).

Also the path a user's own ONNX takes: upload with sample inputs → real INT8 static quantization
calibrated on them → deploy (golden set built from the same samples) → roll back.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from controller.broker import BrokerHandle
from tests.controller.api.conftest import Controller, InProcessController, make_controller, tiny_onnx, wait_job


@pytest.fixture(scope="module")
def fleet_controller(tmp_path_factory: pytest.TempPathFactory, mosquitto: BrokerHandle) -> Iterator[Controller]:
    base = make_controller(tmp_path_factory.mktemp("fleet"), EDGEFLEET_BROKER_HOST=mosquitto.host,
                           EDGEFLEET_BROKER_PORT=str(mosquitto.port),
                           EDGEFLEET_BROKER_PASSWORD=mosquitto.credentials.users["controller"],
                           EDGEFLEET_FLEET="apitest")
    ctl = InProcessController(url=base.url, workspace=base.workspace, env=base.env, port=base.port,
                              keys=base.keys).start()
    try:
        yield ctl
    finally:
        ctl.stop()


def test_upload_with_samples_quantize_deploy_rollback(fleet_controller: Controller, tmp_path: Path) -> None:
    model = tiny_onnx(tmp_path / "m.onnx")
    rng = np.random.default_rng(0)
    samples = tmp_path / "samples.npz"
    np.savez(samples, input=rng.standard_normal((24, 16)).astype(np.float32))
    bad_samples = tmp_path / "bad.npz"
    np.savez(bad_samples, wrong=np.zeros((4, 16), np.float32))
    with fleet_controller.client() as api:
        assert api.get("/health").json()["data"]["fleet"] is True
        r = api.post("/compression/models", data={"name": "user-mlp", "profile": "rpi4"},
                     files={"file": ("m.onnx", model.read_bytes()), "samples": ("bad.npz", bad_samples.read_bytes())})
        assert r.status_code == 422 and "input names" in r.json()["message"]
        assert api.get("/compression/models").json()["data"]["total"] == 0
        r = api.post("/compression/models", data={"name": "user-mlp", "profile": "rpi4"},
                     files={"file": ("m.onnx", model.read_bytes()), "samples": ("s.npz", samples.read_bytes())})
        assert r.status_code == 201, r.text
        fp32 = r.json()["data"]["version"]
        assert fp32["config"]["samples"] == 24

        job = api.post("/compression/quantize", json={"version_id": fp32["id"], "technique": "int8-static",
                                                      "config": {"calibration_samples": 16}}).json()["data"]
        done = wait_job(api, job["id"], timeout=120)
        assert done["state"] == "succeeded", done["error"]
        int8 = done["result"]
        assert int8["metrics"]["quality_score"] > 0.9 and int8["metrics"]["eval_data"].startswith("calibration")

        assert api.post("/devices", json={"id": "dev-1", "profile": "rpi4"}).status_code == 201
        r = api.post("/deployments", json={"version_id": int8["version_id"], "device_ids": ["dev-1"]})
        assert r.status_code == 202, r.text
        dep = r.json()["data"]
        assert dep["version_id"] == int8["version_id"] and dep["devices"][0]["state"] == "pending"
        assert "manifest" not in dep
        shown = api.get(f"/deployments/{dep['id']}").json()["data"]
        assert shown["counts"] == {"pending": 1} and shown["done"] is False
        assert api.get("/devices/dev-1").json()["data"]["deployments"][0]["id"] == dep["id"]
        assert api.get("/deployments").json()["data"][0]["id"] == dep["id"]

        r = api.delete(f"/compression/models/user-mlp/versions/{int8['version_id']}")
        assert r.status_code == 409 and "deployed" in r.json()["message"]

        r = api.post("/deployments", json={"version_id": int8["version_id"], "device_ids": ["ghost"]})
        assert r.status_code == 404 and r.json()["status"] == "error"
        r = api.post("/deployments", json={"version_id": "ghost", "device_ids": ["dev-1"]})
        assert r.status_code == 404

        r = api.post(f"/deployments/{dep['id']}/rollback", json={"reason": "test"})
        assert r.status_code == 202, r.text
        again = api.post(f"/deployments/{dep['id']}/rollback", json={"reason": "twice"})
        assert again.status_code == 409
        assert api.get(f"/deployments/{dep['id']}").json()["data"]["state"] == "rolled_back"
        assert api.post("/deployments/ghost/rollback", json={}).status_code == 404
    with fleet_controller.client("viewer") as viewer:
        assert viewer.post("/deployments", json={"version_id": int8["version_id"],
                                                 "device_ids": ["dev-1"]}).status_code == 403


def test_zoo_import_bad_name(fleet_controller: Controller) -> None:
    with fleet_controller.client() as api:
        r = api.post("/compression/models/import", json={"name": "z", "zoo": "resnet-9000"})
        assert r.status_code == 422 and "mnist-cnn" in r.json()["message"]
        r = api.post("/compression/models/import", json={"name": "../z", "zoo": "mnist-cnn"})
        assert r.status_code == 422
