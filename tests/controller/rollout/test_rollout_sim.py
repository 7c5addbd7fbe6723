"""Rollout engine against real mosquitto + the real fleet service, with simulated agents (one process).

Each simulated agent is a real MQTT client with its own login; the benchmark figures are
simulated per technique and judged by the agent's real gate (see fleetsim.simulator).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from common.messages import BenchMetrics
from controller.rollout import FleetGate, RolloutPlan, RolloutPlanError, RolloutStateError
from fleetsim.harness import SimHarness
from fleetsim.simulator import default_bench
from fleetsim.waiting import wait_until

pytestmark = pytest.mark.timeout(120)


def settled(predicate: Callable[[], object], timeout: float = 15.0) -> object:
    """Rollouts bake, retry and time out over seconds: wait longer than the helper's default."""
    return wait_until(predicate, timeout, "the rollout to settle", 0.05)


def _kinds(h: SimHarness, rid: str) -> list[str]:
    return [e["kind"] for e in h.engine.events(rid)]


@pytest.fixture
def harness(tmp_path):
    h = SimHarness(tmp_path, agents=12, simulator_kw={"bench_s": 0.02}).start()
    try:
        yield h
    finally:
        h.stop()


def _baseline(h: SimHarness) -> str:
    """Every device on an FP32 artifact first (what rollbacks return to)."""
    old = h.artifact(technique="fp32")
    r = h.engine.create(artifact_id=old.id, device_ids=h.device_ids, plan=RolloutPlan(strategy="all_at_once"))
    assert h.engine.wait(r.id, 30).state == "succeeded"
    return old.version_id


def test_canary_passes_then_waves(harness):
    h = harness
    _baseline(h)
    new = h.artifact(technique="int8", size=200_000)
    r = h.engine.create(artifact_id=new.id, device_ids=h.device_ids, plan=RolloutPlan(canary_count=2, waves=3))
    assert [len(r.in_wave(w)) for w in range(r.waves)] == [2, 1, 3, 6]
    r = h.engine.wait(r.id, 30)
    assert r.state == "succeeded", h.engine.events(r.id)
    assert r.outcomes() == {"committed": 12}
    kinds = _kinds(h, r.id)
    assert kinds.count("wave_started") == 4 and "gate_promote" in kinds
    gate = next(e for e in h.engine.events(r.id) if e["kind"] == "gate_promote")
    fig = gate["figures"][h.profile]
    assert fig["n_canary"] == 2 and fig["canary_latency_p95_ms"] < fig["baseline_latency_p95_ms"]
    assert h.sim.active_versions() == {new.version_id: 12}


def test_rollout_with_per_profile_targets(harness):
    """The per-profile mapping is stored with the rollout and used by every wave's deployment."""
    h = harness
    with pytest.raises(RolloutPlanError, match="per_profile"):
        h.engine.create(device_ids=h.device_ids)
    new = h.artifact(technique="int8")
    r = h.engine.create(device_ids=h.device_ids, per_profile={h.profile: new.id},
                        plan=RolloutPlan(canary_count=2, waves=1))
    assert r.target == {"per_profile": {h.profile: new.id}}
    r = h.engine.wait(r.id, 30)
    assert r.state == "succeeded" and r.outcomes() == {"committed": 12}
    assert h.sim.active_versions() == {new.version_id: 12}


def test_canary_regression_rolls_back_whole_rollout(harness):
    h = harness
    old = _baseline(h)
    bad = h.artifact(technique="regressed", size=200_000)
    r = h.engine.create(artifact_id=bad.id, device_ids=h.device_ids, plan=RolloutPlan(canary_count=2, waves=3))
    r = h.engine.wait(r.id, 30, until=("rolled_back", "succeeded", "failed"))
    assert r.state == "rolled_back", h.engine.events(r.id)
    assert r.outcomes().get("skipped") == 10  # later waves never started
    ev = next(e for e in h.engine.events(r.id) if e["kind"] == "rollback")
    assert ev["reason"].startswith("abort:") and ev["figures"]["bad"] >= 1
    assert h.sim.active_versions() == {old: 12}
    # retained desired points every canary back to the old artifact
    for dev in r.in_wave(0):
        dep = h.registry.deployments.get_deployment(deployment_id=h.registry.devices.get_device(device_id=dev.device_id)
                                        .desired_deployment_id)
        assert dep.kind == "rollback" and dep.version_id == old


def test_fleet_gate_rolls_back_what_devices_accepted(tmp_path):
    # each device's own gate is loose (10x latency allowed) so canaries commit; the fleet gate (1.25x) refuses
    from common.manifest import Thresholds

    with SimHarness(tmp_path, agents=6, simulator_kw={"bench_s": 0.02}) as h:
        old = _baseline(h)
        slow = h.artifact(technique="slow", thresholds=Thresholds(max_latency_ratio=10.0))
        r = h.engine.create(artifact_id=slow.id, device_ids=h.device_ids,
                            plan=RolloutPlan(canary_count=2, waves=2, gate=FleetGate(max_latency_ratio=1.25)))
        r = h.engine.wait(r.id, 30, until=("rolled_back", "succeeded"))
        assert r.state == "rolled_back"
        gate = next(e for e in h.engine.events(r.id) if e["kind"] == "gate_rollback")
        assert "median p95" in gate["reason"] and gate["figures"][h.profile]["n_canary"] == 2
        # the canaries had committed the slower model; the rollback reinstates the old one (never refused)
        assert settled(lambda: h.sim.active_versions() == {old: 6})


def test_abort_threshold_counts_failures_over_minimum(tmp_path):
    bad_devices = {"sim-0003", "sim-0005", "sim-0007"}

    def bench(manifest, device_id) -> BenchMetrics:
        m = default_bench(manifest, device_id)
        if manifest.technique == "int8" and device_id in bad_devices:
            return m.model_copy(update={"quality": 0.2})
        return m

    with SimHarness(tmp_path, agents=10, simulator_kw={"bench": bench, "bench_s": 0.02}) as h:
        _baseline(h)
        new = h.artifact(technique="int8")
        plan = RolloutPlan(canary_count=1, waves=3, abort_ratio=0.25, abort_min_count=2)
        r = h.engine.wait(h.engine.create(artifact_id=new.id, device_ids=h.device_ids, plan=plan).id, 30)
        assert r.state == "rolled_back", h.engine.events(r.id)
        ev = next(e for e in h.engine.events(r.id) if e["kind"] == "rollback")
        assert ev["figures"]["bad"] >= 2 and ev["figures"]["share"] >= 0.25
        assert "sim-0000" in ev["figures"]["devices_sent_back"]  # the committed canary went back too


def test_timeout_retry_then_offline_device_reconciles(harness):
    h = harness
    old = _baseline(h)
    h.sim.set_offline("sim-0011")
    assert settled(lambda: not h.registry.devices.get_device(device_id="sim-0011").online)
    new = h.artifact(technique="int8")
    plan = RolloutPlan(strategy="all_at_once", device_timeout_s=1.0, retries=1, abort_ratio=0.5)
    r = h.engine.wait(h.engine.create(artifact_id=new.id, device_ids=h.device_ids, plan=plan).id, 30)
    assert r.state == "succeeded" and r.outcomes() == {"committed": 11, "timed_out": 1}, r.outcomes()
    assert _kinds(h, r.id).count("retry") == 1 and "timed_out" in _kinds(h, r.id)
    assert h.sim.agents["sim-0011"].active.version == old
    h.sim.set_online("sim-0011")  # back: reconciles from its retained desired (the retry deployment)
    assert settled(lambda: h.sim.agents["sim-0011"].active.version == new.version_id)
    dep_id = h.registry.devices.get_device(device_id="sim-0011").desired_deployment_id
    deployments = h.registry.deployments
    assert settled(lambda: deployments.get_deployment(deployment_id=dep_id).devices[0].state.value == "committed")


def test_newer_rollout_supersedes_and_pause_resume(harness):
    h = harness
    _baseline(h)
    a = h.artifact(technique="int8")
    b = h.artifact(technique="int8-v2")
    plan = RolloutPlan(canary_count=2, waves=2, bake_s=30)
    ra = h.engine.create(artifact_id=a.id, device_ids=h.device_ids, plan=plan)
    assert settled(lambda: h.engine.get(ra.id).phase == "bake")
    paused = h.engine.pause(ra.id)
    assert paused.state == "paused"
    with pytest.raises(RolloutStateError):
        h.engine.pause(ra.id)
    assert h.engine.resume(ra.id).state == "running"
    rb = h.engine.create(artifact_id=b.id, profile=h.profile, plan=RolloutPlan(strategy="all_at_once"))
    assert sorted(d.device_id for d in rb.devices) == h.device_ids  # target by profile
    assert h.engine.get(ra.id).state == "superseded"
    assert h.engine.wait(rb.id, 30).state == "succeeded"
    assert h.sim.active_versions() == {b.version_id: 12}


def test_controller_restart_mid_rollout_resumes(harness):
    h = harness
    _baseline(h)
    new = h.artifact(technique="int8")
    rid = h.engine.create(artifact_id=new.id, device_ids=h.device_ids,
                          plan=RolloutPlan(canary_count=2, waves=2, bake_s=1.5)).id
    assert settled(lambda: h.engine.get(rid).phase == "bake")
    h.stop_controller()  # controller gone mid-rollout (agents keep running)
    time.sleep(0.5)
    h.start_controller()
    r = h.engine.wait(rid, 30)
    assert r.state == "succeeded" and r.outcomes() == {"committed": 12}
    kinds = _kinds(h, rid)
    assert "resumed" in kinds and kinds.index("resumed") < kinds.index("bake_done")


def test_ab_verdict_and_promote_winner(harness):
    from controller.rollout import ab

    h = harness
    _baseline(h)
    a = h.artifact(technique="fp32-b")  # same speed as the baseline
    b = h.artifact(technique="int8")  # ~2.5x faster in the simulated benchmark
    test = ab.start_ab(h.engine, a=a.id, b=b.id, device_ids=h.device_ids, ratio=0.5)
    assert sorted(d.variant for d in test.devices).count("b") == 6
    assert h.engine.wait(test.id, 30).state == "succeeded"
    result = ab.verdict(h.engine, test.id)
    lat = result["variants"]
    assert lat["a"]["latency_p95_ms"]["n"] == 6 and lat["b"]["latency_p95_ms"]["n"] == 6
    diff = result["difference_b_minus_a"]["latency_p95_ms"]
    assert diff["absolute"] < 0 and diff["welch_t"] < -2
    assert result["winner"] == "b" and "B wins" in result["reason"]
    promoted = ab.promote_winner(h.engine, test.id)
    assert h.engine.wait(promoted.id, 30).state == "succeeded"
    assert h.sim.active_versions() == {b.version_id: 12}
    assert [e["kind"] for e in h.engine.events(test.id)][-2:] == ["ab_verdict", "ab_promoted"]


def test_latency_drift_after_activation_rolls_back(tmp_path):
    from common.manifest import Thresholds

    kw = {"bench_s": 0.02, "telemetry_interval_s": 0.1}
    with SimHarness(tmp_path, agents=4, simulator_kw=kw) as h:
        old = _baseline(h)
        time.sleep(1.0)  # some telemetry with the old model: the "before" of the drift rule
        slow = h.artifact(technique="slow", thresholds=Thresholds(max_latency_ratio=10.0))
        plan = RolloutPlan(canary_count=2, waves=1, bake_s=30, gate=FleetGate(max_latency_ratio=10.0))
        r = h.engine.create(artifact_id=slow.id, device_ids=h.device_ids, plan=plan)
        r = h.engine.wait(r.id, 30, until=("rolled_back", "succeeded"))
        assert r.state == "rolled_back", h.engine.events(r.id)
        anomaly = next(e for e in h.engine.events(r.id) if e["kind"] == "anomaly")
        assert anomaly["figures"]["ratio"] > 1.5
        assert h.service.telemetry.events()[0]["kind"] == "latency_drift"
        assert settled(lambda: h.sim.active_versions() == {old: 4})


def test_bad_input_is_counted_and_rollout_state_stays_correct(harness):
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    from common import topics
    from common.messages import JobReport

    h = harness
    _baseline(h)
    new = h.artifact(technique="int8")
    r = h.engine.create(artifact_id=new.id, device_ids=h.device_ids, plan=RolloutPlan(canary_count=2, waves=1,
                                                                                        bake_s=1.0))
    assert settled(lambda: h.engine.get(r.id).phase == "bake")
    dep = h.engine.get(r.id).in_wave(0)[0].deployment_id
    dev = "sim-0005"  # a wave-1 device, not started yet
    c = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id="intruder")
    c.username_pw_set(dev, h.broker.credentials.users[dev])
    c.connect(h.broker.host, h.broker.port)
    c.loop_start()
    try:
        f = h.fleet
        bogus = [
            (topics.job(f, dev, "no-such-deployment"),
             JobReport(device_id=dev, deployment_id="no-such-deployment", seq=1, state="commit").to_bytes()),
            (topics.job(f, dev, dep),  # a canary's deployment, but this device is not targeted by it
             JobReport(device_id=dev, deployment_id=dep, seq=99, state="failure").to_bytes()),
            (topics.job(f, dev, dep),  # claims to be a canary device from this device's login
             JobReport(device_id="sim-0000", deployment_id=dep, seq=99, state="failure").to_bytes()),
            (topics.telemetry(f, dev), b"{not json"),
            (topics.job(f, "sim-0000", dep),  # another device's topic: the broker ACL drops it
             JobReport(device_id="sim-0000", deployment_id=dep, seq=999, state="failure").to_bytes()),
        ]
        for topic, payload in bogus:
            c.publish(topic, payload, qos=1).wait_for_publish(5)
    finally:
        c.loop_stop()
        c.disconnect()
    r = h.engine.wait(r.id, 30)
    assert r.state == "succeeded" and r.outcomes() == {"committed": 12}
    stats = h.service.stats
    assert stats.get("unknown_deployment") == 1 and stats.get("not_targeted") == 1
    assert stats.get("spoofed") == 1 and stats.get("malformed") == 1


def test_cancel_with_rollback_sends_updated_devices_back(harness):
    h = harness
    old = _baseline(h)
    new = h.artifact(technique="int8")
    r = h.engine.create(artifact_id=new.id, device_ids=h.device_ids,
                        plan=RolloutPlan(canary_count=3, waves=2, bake_s=30))
    assert settled(lambda: h.engine.get(r.id).phase == "bake")
    assert h.sim.active_versions()[new.version_id] == 3
    h.engine.cancel(r.id, rollback=True, reason="operator saw errors")
    r = h.engine.wait(r.id, 30, until=("rolled_back",))
    assert r.state == "rolled_back" and r.outcomes() == {"sent_back": 3, "skipped": 9}
    assert settled(lambda: h.sim.active_versions() == {old: 12})
    with pytest.raises(RolloutStateError):
        h.engine.resume(r.id)


def test_gate_without_enough_reports_pauses_and_resume_promotes(harness):
    h = harness
    _baseline(h)
    new = h.artifact(technique="int8")
    plan = RolloutPlan(canary_count=2, waves=1, gate=FleetGate(min_reports=3))
    r = h.engine.wait(h.engine.create(artifact_id=new.id, device_ids=h.device_ids, plan=plan).id, 30)
    assert r.state == "paused" and r.reason.startswith("fleet gate: only 2 committed canary")
    assert "gate_pause" in _kinds(h, r.id)
    h.engine.resume(r.id)
    r = h.engine.wait(r.id, 30)
    assert r.state == "succeeded" and r.outcomes() == {"committed": 12}


def test_real_benchmark_mode_catches_a_degraded_model(tmp_path):
    from tests.agent.artifacts import Reference

    ref = Reference.make()
    golden = ref.write_golden(tmp_path / "golden.npz").read_bytes()
    kw = {"bench_s": 0.0, "real_bench_dir": tmp_path / "shared-runtime"}
    with SimHarness(tmp_path / "h", agents=8, simulator_kw=kw) as h:
        good = h.artifact(technique="fp32", model_bytes=ref.good_model(), golden_bytes=golden)
        r = h.engine.create(artifact_id=good.id, device_ids=h.device_ids, plan=RolloutPlan(strategy="all_at_once"))
        assert h.engine.wait(r.id, 30).state == "succeeded"
        bad = h.artifact(technique="fp32-retrained", model_bytes=ref.degraded_model(), golden_bytes=golden)
        r = h.engine.wait(h.engine.create(artifact_id=bad.id, device_ids=h.device_ids,
                                          plan=RolloutPlan(canary_count=2, waves=2)).id, 30)
        assert r.state == "rolled_back" and r.outcomes()["skipped"] == 6 and r.outcomes()["regressed"] >= 1
        regressed = next(d for d in r.in_wave(0) if d.outcome == "regressed")
        reports = h.registry.reports
        report = reports.bench_reports(deployment_id=regressed.deployment_id, device_id=regressed.device_id)[0]
        assert report["candidate_metrics"]["runtime"] == "onnxruntime"  # measured for real, not simulated
        assert report["candidate_metrics"]["quality"] < 0.9 and report["decision"] == "rollback"
        assert h.sim.active_versions() == {good.version_id: 8}


def test_every_deployment_status_maps_to_one_rollout_outcome():
    from controller.registry import DeviceDeploymentState as S
    from controller.rollout.store import DeviceOutcome as O
    from controller.rollout.store import outcome_of

    assert {s: outcome_of(s.value, "ok") for s in S} == {
        S.PENDING: None, S.IN_PROGRESS: None, S.COMMITTED: O.COMMITTED, S.ROLLED_BACK: O.ROLLED_BACK,
        S.FAILED: O.FAILED, S.SUPERSEDED: O.SUPERSEDED,
    }
    assert outcome_of("rolled_back", "regression_latency") is O.REGRESSED
