"""End to end against real mosquitto: two agents, upgrade, regression, corrupted chunks, bad input."""

from __future__ import annotations

import pytest

from common.errors import ReasonCode

from .artifacts import make_artifact

pytestmark = pytest.mark.timeout(180)


def _states(reports) -> list[str]:
    return [r.state for r in reports]


def test_upgrade_committed_then_regression_rolled_back(controller, start_agent, reference, keypair, tmp_path):
    key = keypair[0]
    devices = {"edge-1": "x86-edge", "pi-1": "rpi4"}
    for dev, profile in devices.items():
        start_agent(dev, profile)
    arts = {}
    for dev, profile in devices.items():
        arts[dev] = {
            "v1": make_artifact(tmp_path, reference.good_model(), reference, key, version="v1", profile=profile),
            "v2": make_artifact(tmp_path, reference.slightly_perturbed_model(), reference, key, version="v2",
                                profile=profile, quality_metric="cosine"),
            "v3": make_artifact(tmp_path, reference.degraded_model(), reference, key, version="v3", profile=profile),
        }
    for step in ("v1", "v2", "v3"):
        for dev in devices:
            controller.deploy(dev, arts[dev][step], f"dep-{step}")
        for dev in devices:
            reports = controller.wait_outcome(dev, f"dep-{step}")
            states = _states(reports)
            if step == "v3":
                assert states == ["download", "verify", "install", "benchmark", "rollback", "failure", "idle"], states
                assert reports[-2].reason is ReasonCode.REGRESSION_QUALITY
                assert "quality" in reports[-2].detail
            else:
                assert states == ["download", "verify", "install", "benchmark", "commit", "idle"], states
            seqs = [r.seq for r in reports]
            assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
            bench = controller.benches[dev][-1]
            assert bench.deployment_id == f"dep-{step}"
            assert bench.decision == ("rollback" if step == "v3" else "commit")
            if step == "v1":
                assert bench.baseline is None and bench.candidate_metrics.quality > 0.999
            else:
                assert bench.baseline is not None and bench.baseline_metrics is not None
            controller.wait_for(
                lambda d=dev, s=step: (st := controller.states.get(d)) and st.update_state == "idle"
                and st.active and st.active.version == ("v2" if s == "v3" else s),
                10, f"{dev} state after {step}",
            )
    # the golden set is shared by the lineage: after v1 it came from the slot, never over MQTT again
    golden_sha = arts["edge-1"]["v1"].manifest.blob("golden").sha256
    asked = {req.deployment_id for d, req in controller.requests if d == "edge-1" and req.sha256 == golden_sha}
    assert asked == {"dep-v1"}
    verify = [r for r in controller.job_reports("edge-1", "dep-v2") if r.state == "verify"][0]
    assert "reused from files already on the device" in verify.detail
    for dev in devices:
        caps = controller.caps[dev]
        assert caps.profile == devices[dev] and "onnx" in caps.formats and "onnxruntime" in caps.runtimes
        assert caps.cores >= 1 and caps.ram_mb > 0
        sample = controller.wait_for(lambda d=dev: controller.telemetry[d], 10, "telemetry")[-1]
        assert sample.device_id == dev and sample.rss_mb > 0 and 0 <= sample.mem_percent <= 100
    for dev in devices:
        state = controller.states[dev]
        # v3 was staged in v1's slot and cleared on rollback: v2 runs, nothing older is kept
        assert state.online and state.active.version == "v2" and state.previous is None
        assert state.profile == devices[dev]


def test_fleet_rollback_to_model_in_other_slot_needs_no_download(controller, start_agent, reference, keypair,
                                                                 tmp_path):
    start_agent("edge-rb", "x86-edge")
    v1 = make_artifact(tmp_path, reference.good_model(), reference, keypair[0], version="v1")
    v2 = make_artifact(tmp_path, reference.slightly_perturbed_model(), reference, keypair[0], version="v2")
    for dep, art in (("rb-1", v1), ("rb-2", v2), ("rb-back", v1)):
        controller.deploy("edge-rb", art, dep)
        assert _states(controller.wait_outcome("edge-rb", dep))[-2:] == ["commit", "idle"]
    assert not [req for d, req in controller.requests if req.deployment_id == "rb-back"]
    controller.wait_for(lambda: controller.states["edge-rb"].active.version == "v1", 10, "v1 active again")
    assert controller.states["edge-rb"].previous.version == "v2"


def test_latency_regression_is_confirmed_then_rolled_back(controller, start_agent, reference, keypair, tmp_path):
    from common.manifest import Thresholds

    from .artifacts import slow_linear_model

    start_agent("edge-lat", "x86-edge")
    gate = Thresholds(latency_slack_ms=0.5, memory_slack_mb=256.0)
    v1 = make_artifact(tmp_path, reference.good_model(), reference, keypair[0], version="v1", thresholds=gate)
    slow = make_artifact(tmp_path, slow_linear_model(reference.weight, reference.bias), reference, keypair[0],
                         version="v2-slow", thresholds=gate)
    controller.deploy("edge-lat", v1, "lat-1")
    assert _states(controller.wait_outcome("edge-lat", "lat-1"))[-2:] == ["commit", "idle"]
    controller.deploy("edge-lat", slow, "lat-2")
    reports = controller.wait_outcome("edge-lat", "lat-2")
    assert reports[-2].state == "failure" and reports[-2].reason is ReasonCode.REGRESSION_LATENCY
    assert "latency p95" in reports[-2].detail
    bench = controller.benches["edge-lat"][-1]
    assert bench.decision == "rollback" and bench.candidate_metrics.quality > 0.9999
    assert bench.reasons[0].startswith("latency re-measured back to back") and bench.reasons[0].endswith("confirmed")
    controller.wait_for(lambda: controller.states["edge-lat"].active.version == "v1", 10, "v1 still active")
