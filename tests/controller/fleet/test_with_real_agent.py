"""The closed loop on real parts: FleetService + registry + build_artifact driving real in-process agents.

Not a substitute for the scripted-device tests (which pin the controller's side of the
protocol); this one proves both halves agree: an upgrade is committed, a degraded
model is rolled back by the agents with the reason reported to the registry.
"""

from __future__ import annotations

import uuid

import numpy as np
import pytest

from common.keys import load_or_create_private_key
from controller.artifacts import build_artifact
from controller.fleet import FleetService
from controller.registry import Registry
from tests.controller.onnx_fixtures import tiny_linear_onnx

agent_daemon = pytest.importorskip("agent.daemon")
agent_config = pytest.importorskip("agent.config")

pytestmark = pytest.mark.timeout(120)
FAST = dict(bench_runs=8, bench_warmup=2, rerequest_interval_s=1.0, telemetry_interval_s=1.0, threads=1)


def test_upgrade_committed_and_degraded_rolled_back(mosquitto, tmp_path):
    fleet = f"t{uuid.uuid4().hex[:8]}"
    key = load_or_create_private_key(tmp_path / "keys" / "ctl.key")
    reg = Registry(tmp_path / "ws")
    svc = FleetService(
        reg, host=mosquitto.host, port=mosquitto.port, password=mosquitto.credentials.users["controller"], fleet=fleet
    ).start()
    devices = {f"{fleet}-edge": "x86-edge", f"{fleet}-pi": "rpi4"}
    agents = []
    try:
        for dev, profile in devices.items():
            cfg = agent_config.AgentConfig(
                device_id=dev,
                fleet=fleet,
                profile_id=profile,
                data_dir=tmp_path / dev,
                controller_key=tmp_path / "keys" / "ctl.pub",
                broker_host=mosquitto.host,
                broker_port=mosquitto.port,
                username=dev,
                password=mosquitto.add_user(dev),
                **FAST,
            )
            agent = agent_daemon.Agent(cfg)
            agent.start()
            agents.append(agent)
        assert svc.wait_for_devices(list(devices), timeout=15)

        fp32 = tiny_linear_onnx(tmp_path / "fp32.onnx")
        bad = tiny_linear_onnx(tmp_path / "bad.onnx", seed=7)
        rng = np.random.default_rng(3)
        golden = [{"x": rng.standard_normal((1, 8)).astype(np.float32)} for _ in range(16)]
        model = reg.create_model(name="tiny")
        v1 = reg.add_version(model_id=model.id, path=fp32)
        v3 = reg.add_version(model_id=model.id, path=bad, technique="perturbed", parent_id=v1.id)

        def roll(version_id: str) -> dict[str, dict]:
            deps = {}
            for dev, profile in devices.items():
                manifest, _ = build_artifact(
                    reg,
                    version_id,
                    profile=profile,
                    golden_inputs=golden,
                    reference_onnx=fp32,
                    quality_metric="cosine",
                    signing_key=key,
                    chunk_size=1024,
                )
                deps[dev] = svc.deploy(manifest, [dev])
            return {dev: svc.wait_for(dep, timeout=60).as_dict() for dev, dep in deps.items()}

        first = roll(v1.id)
        for dev, summary in first.items():
            assert summary["devices"][dev]["state"] == "committed", summary
        degraded = roll(v3.id)
        for dev, summary in degraded.items():
            info = summary["devices"][dev]
            assert info["state"] == "rolled_back", summary
            assert info["reason"] == "regression_quality" and info["bench"]["decision"] == "rollback"
        for dev in devices:
            assert _wait(lambda d=dev: (reg.get_device(device_id=d).active or {}).get("version") == v1.id)
        assert svc.stats.get("malformed", 0) == 0 and svc.stats.get("handler_errors", 0) == 0
        assert svc.stats.get("chunks_sent", 0) > 0 and svc.stats.get("rx_tm", 0) > 0
    finally:
        for agent in agents:
            agent.stop()
        svc.stop()
        reg.close()


def _wait(pred, timeout: float = 10.0) -> bool:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.05)
    return False
