"""Rollouts driving real agents (in-process ``agent.daemon.Agent``: real MQTT, real ONNX benchmarks).

One fleet of three devices walks through: baseline everywhere; canary then waves with one
device offline (it times out, the rollout still succeeds, and when it comes back it
reconciles from its retained desired); then a degraded build whose canary regresses on the
device, which rolls the whole rollout back while every device keeps the good model.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from controller.rollout import RolloutPlan
from fleetsim.waiting import wait_until
from tests.controller.rollout.real_fleet import start_real_controller
from tests.tiny_models import tiny_linear_onnx

agent_daemon = pytest.importorskip("agent.daemon")
agent_config = pytest.importorskip("agent.config")

pytestmark = pytest.mark.timeout(180)


def settled(predicate: Callable[[], object], timeout: float = 20.0) -> object:
    """Rollouts bake, retry and time out over seconds: wait longer than the helper's default."""
    return wait_until(predicate, timeout, "the rollout to settle", 0.05)

FAST = dict(bench_runs=8, bench_warmup=2, rerequest_interval_s=1.0, telemetry_interval_s=1.0, threads=1)


def test_canary_waves_offline_reconcile_and_regression_rollback(mosquitto, tmp_path):
    fleet, reg, svc, engine, rng = start_real_controller(mosquitto, tmp_path)
    devices = [f"{fleet}-{i}" for i in range(3)]
    passwords = {d: mosquitto.add_user(d) for d in devices}
    agents: dict[str, object] = {}

    def start(dev: str) -> None:
        cfg = agent_config.AgentConfig(
            device_id=dev, fleet=fleet, profile_id="x86-edge", data_dir=tmp_path / dev,
            controller_key=tmp_path / "keys" / "ctl.pub", broker_host=mosquitto.host, broker_port=mosquitto.port,
            username=dev, password=passwords[dev], **FAST)
        agents[dev] = agent_daemon.Agent(cfg)
        agents[dev].start()

    def version_of(dev: str) -> str | None:
        return (reg.devices.get_device(device_id=dev).active or {}).get("version")

    try:
        for dev in devices:
            start(dev)
        assert svc.wait_for_devices(devices, timeout=15)
        assert settled(lambda: all(reg.devices.get_device(device_id=d).profile for d in devices))
        model = reg.create_model(name="tiny")
        v1 = reg.add_version(model_id=model.id, path=tiny_linear_onnx(tmp_path / "v1.onnx"))
        v2 = reg.add_version(model_id=model.id, path=tiny_linear_onnx(tmp_path / "v2.onnx", scale=1.0001),
                             technique="perturbed", parent_id=v1.id)
        v3 = reg.add_version(model_id=model.id, path=tiny_linear_onnx(tmp_path / "v3.onnx", seed=7),
                             technique="degraded", parent_id=v1.id)
        gate = {"min_quality": 0.95}
        r = engine.create(version_id=v1.id, device_ids=devices,
                          plan=RolloutPlan(strategy="all_at_once", thresholds=gate))
        assert engine.wait(r.id, 60).state == "succeeded"

        # canary then waves, with the last device offline for the whole rollout
        offline = devices[2]
        agents.pop(offline).stop()
        assert settled(lambda: not reg.devices.get_device(device_id=offline).online)
        plan = RolloutPlan(canary_count=1, waves=2, device_timeout_s=8, retries=0, abort_ratio=0.5, thresholds=gate)
        r = engine.wait(engine.create(version_id=v2.id, device_ids=devices, plan=plan).id, 90)
        assert r.state == "succeeded", engine.events(r.id)
        assert r.outcomes() == {"committed": 2, "timed_out": 1}
        kinds = [e["kind"] for e in engine.events(r.id)]
        assert kinds.count("wave_started") == 3 and "gate_promote" in kinds
        assert version_of(devices[0]) == version_of(devices[1]) == v2.id and version_of(offline) == v1.id
        start(offline)  # back online: reconciles to the rollout's version from its retained desired
        assert settled(lambda: version_of(offline) == v2.id, 60)

        # a degraded build: the canary device rolls it back itself, the controller aborts the rollout
        r = engine.create(version_id=v3.id, device_ids=devices, plan=RolloutPlan(canary_count=1, waves=2,
                                                                                  thresholds=gate))
        r = engine.wait(r.id, 90, until=("rolled_back", "succeeded", "failed"))
        assert r.state == "rolled_back", engine.events(r.id)
        assert r.outcomes() == {"regressed": 1, "skipped": 2}
        rollback = next(e for e in engine.events(r.id) if e["kind"] == "rollback")
        assert rollback["figures"]["outcomes"] == {"regressed": 1}
        assert all(version_of(d) == v2.id for d in devices)
        canary = r.in_wave(0)[0].device_id
        desired_id = reg.devices.get_device(device_id=canary).desired_deployment_id
        desired = reg.deployments.get_deployment(deployment_id=desired_id)
        assert desired.kind == "rollback" and desired.version_id == v2.id  # retained desired points back
        assert svc.stats.get("malformed", 0) == 0 and engine.stats.get("tick_errors", 0) == 0
    finally:
        for agent in agents.values():
            agent.stop()
        engine.stop()
        svc.stop()
        reg.close()
