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
    for dev in devices:
        state = controller.states[dev]
        # v3 was staged in v1's slot and cleared on rollback: v2 runs, nothing older is kept
        assert state.online and state.active.version == "v2" and state.previous is None
        assert state.profile == devices[dev]
