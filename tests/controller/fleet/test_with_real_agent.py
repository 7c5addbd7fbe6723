"""The closed loop on real parts: FleetService + registry + ArtifactBuilder driving real in-process agents.

Not a substitute for the scripted-device tests (which pin the controller's side of the
protocol); this one proves both halves agree: one deployment of a version across two
profiles is committed, a degraded version is rolled back by the agents with the reason
reported to the registry.
"""

from __future__ import annotations

import uuid

import numpy as np
import pytest

from common.keys import load_or_create_private_key
from controller.artifacts import ArtifactBuilder
from controller.fleet import FleetService
from controller.registry import Registry
from fleetsim.waiting import wait_until
from tests.tiny_models import tiny_linear_onnx

agent_daemon = pytest.importorskip("agent.daemon")
agent_config = pytest.importorskip("agent.config")

pytestmark = pytest.mark.timeout(120)
FAST = dict(bench_runs=8, bench_warmup=2, rerequest_interval_s=1.0, telemetry_interval_s=1.0, threads=1)


def test_upgrade_committed_and_degraded_rolled_back(mosquitto, tmp_path):
    fleet = f"t{uuid.uuid4().hex[:8]}"
    key = load_or_create_private_key(tmp_path / "keys" / "ctl.key")
    reg = Registry(tmp_path / "ws")
    fp32 = tiny_linear_onnx(tmp_path / "fp32.onnx")
    bad = tiny_linear_onnx(tmp_path / "bad.onnx", seed=7)
    rng = np.random.default_rng(3)
    golden = [{"x": rng.standard_normal((1, 8)).astype(np.float32)} for _ in range(16)]
    calls: list[str] = []

    def golden_source(model, version, root):
        calls.append(version.id)
        return golden, reg.blob_path(sha256=root.sha256), "cosine"

    builder = ArtifactBuilder(reg, signing_key=key, golden_source=golden_source, chunk_size=1024)
    svc = FleetService(
        reg,
        host=mosquitto.host,
        port=mosquitto.port,
        password=mosquitto.credentials.users["controller"],
        fleet=fleet,
        artifact_builder=builder,
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
        assert wait_until(lambda: all(reg.devices.get_device(device_id=d).profile == p for d, p in devices.items()))

        model = reg.create_model(name="tiny")
        v1 = reg.add_version(model_id=model.id, path=fp32)
        v3 = reg.add_version(model_id=model.id, path=bad, technique="perturbed", parent_id=v1.id)

        def roll(version_id: str) -> dict:
            # one deployment across two profiles: the builder makes one artifact per profile
            dep = svc.deploy(version_id=version_id, device_ids=list(devices), thresholds={"min_quality": 0.95})
            return svc.wait_for(dep, timeout=60).as_dict()

        first = roll(v1.id)
        assert first["state"] == "succeeded", first
        degraded = roll(v3.id)
        assert degraded["state"] == "failed", degraded
        for dev in devices:
            info = degraded["devices"][dev]
            assert info["state"] == "rolled_back", degraded
            assert info["reason"] == "regression_quality" and info["bench"]["decision"] == "rollback"
        assert len(reg.artifacts.list_artifacts()) == 4
        assert calls == [v1.id]  # the golden set was built once for the lineage and reused
        for dev in devices:
            assert wait_until(lambda d=dev: (reg.devices.get_device(device_id=d).active or {}).get("version") == v1.id)
        assert svc.stats.get("malformed", 0) == 0 and svc.stats.get("handler_errors", 0) == 0
        assert svc.stats.get("chunks_sent", 0) > 0 and svc.stats.get("rx_tm", 0) > 0
    finally:
        for agent in agents:
            agent.stop()
        svc.stop()
        reg.close()
