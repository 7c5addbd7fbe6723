"""A/B verdict from real agents' on-device benchmarks (in-process agents, real ONNX Runtime runs).

Variant B is a model with the same outputs plus a heavy dead branch (a real latency cost);
its artifacts carry a loose device gate so the B devices commit it. The verdict must see
B's real p95 is higher, with the sample sizes, and promote A.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest

from common.keys import load_or_create_private_key
from common.manifest import Thresholds
from controller.fleet import FleetService
from controller.registry import Registry
from controller.rollout import RolloutEngine, RolloutPlan, ab
from tests.agent.artifacts import Reference, slow_linear_model
from tests.manifests import signed_manifest

agent_daemon = pytest.importorskip("agent.daemon")
agent_config = pytest.importorskip("agent.config")

pytestmark = pytest.mark.timeout(180)
FAST = dict(bench_runs=8, bench_warmup=2, rerequest_interval_s=1.0, telemetry_interval_s=5.0, threads=1)


def _artifact(reg: Registry, key, ref: Reference, tmp: Path, model: bytes, technique: str, gate: Thresholds):
    m = reg.ensure_model(name="linear")
    v = reg.add_version(model_id=m.id, data=model, technique=technique)
    golden = reg.put_blob(path=ref.write_golden(tmp / f"golden-{technique}.npz"))
    manifest = signed_manifest(reg.blob_path(sha256=v.sha256), Path(golden.path), key=key,
                               model_filename="model.onnx", golden_filename="golden.npz", model_id=m.id,
                               version=v.id, profile="x86-edge", technique=technique, thresholds=gate)
    return reg.artifacts.add_artifact(manifest=manifest)


def test_ab_verdict_from_real_agent_reports_and_promote(mosquitto, tmp_path):
    fleet = f"t{uuid.uuid4().hex[:8]}"
    key = load_or_create_private_key(tmp_path / "keys" / "ctl.key")
    reg = Registry(tmp_path / "ws")
    ref = Reference.make()
    svc = FleetService(reg, host=mosquitto.host, port=mosquitto.port,
                       password=mosquitto.credentials.users["controller"], fleet=fleet, signing_key=key).start()
    engine = RolloutEngine(svc, tick_s=0.1).start()
    devices = [f"{fleet}-{i}" for i in range(4)]
    agents = []
    try:
        for dev in devices:
            cfg = agent_config.AgentConfig(
                device_id=dev, fleet=fleet, profile_id="x86-edge", data_dir=tmp_path / dev,
                controller_key=tmp_path / "keys" / "ctl.pub", broker_host=mosquitto.host,
                broker_port=mosquitto.port, username=dev, password=mosquitto.add_user(dev), **FAST)
            agent = agent_daemon.Agent(cfg)
            agent.start()
            agents.append(agent)
        assert svc.wait_for_devices(devices, timeout=15)
        loose = Thresholds(max_latency_ratio=1000.0, latency_slack_ms=1000.0, memory_slack_mb=512.0)
        base = _artifact(reg, key, ref, tmp_path, ref.good_model(), "fp32", loose)
        a = _artifact(reg, key, ref, tmp_path, ref.slightly_perturbed_model(), "fp32-a", loose)
        b = _artifact(reg, key, ref, tmp_path, slow_linear_model(ref.weight, ref.bias), "slow-b", loose)
        r = engine.create(artifact_id=base.id, device_ids=devices, plan=RolloutPlan(strategy="all_at_once"))
        assert engine.wait(r.id, 60).state == "succeeded"

        test = ab.start_ab(engine, a=a.id, b=b.id, device_ids=devices, ratio=0.5)
        assert engine.wait(test.id, 90).state == "succeeded", engine.events(test.id)
        # two samples per side on a shared 2-core machine: timings are noisy, so |t| > 1 suffices here
        result = ab.verdict(engine, test.id, min_t=1.0)
        va, vb = result["variants"]["a"]["latency_p95_ms"], result["variants"]["b"]["latency_p95_ms"]
        assert va["n"] == 2 and vb["n"] == 2
        assert vb["mean"] > va["mean"] and result["difference_b_minus_a"]["latency_p95_ms"]["absolute"] > 0
        assert result["winner"] == "a", result["reason"]
        promoted = ab.promote_winner(engine, test.id, min_t=1.0)
        assert engine.wait(promoted.id, 90).state == "succeeded"
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and {
            (reg.devices.get_device(device_id=d).active or {}).get("version") for d in devices
        } != {a.version_id}:
            time.sleep(0.1)
        assert {(reg.devices.get_device(device_id=d).active or {}).get("version") for d in devices} == {a.version_id}
    finally:
        for agent in agents:
            agent.stop()
        engine.stop()
        svc.stop()
        reg.close()
