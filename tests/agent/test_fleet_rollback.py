"""A fleet-level rollback is never refused for being slower than the model it abandons.

Real mosquitto, real agent, real benchmarks: the device first commits a slow model, then a
fast one; the controller's rollback (``Desired.kind="rollback"``) to the slow model is
reinstated although it is far slower. A "rollback" naming a slow model the device never
committed is gated like any candidate (the flag cannot smuggle an untested model in).
"""

from __future__ import annotations

import pytest

from common.errors import ReasonCode
from common.manifest import Thresholds

from .artifacts import make_artifact, slow_linear_model

pytestmark = pytest.mark.timeout(180)
GATE = Thresholds(latency_slack_ms=0.5, memory_slack_mb=256.0)


def _states(reports) -> list[str]:
    return [r.state for r in reports]


def test_rollback_to_slower_committed_model_is_accepted(controller, start_agent, reference, keypair, tmp_path):
    start_agent("edge-back", "x86-edge")
    slow = make_artifact(tmp_path, slow_linear_model(reference.weight, reference.bias), reference, keypair[0],
                         version="v1-slow", thresholds=GATE)
    fast = make_artifact(tmp_path, reference.good_model(), reference, keypair[0], version="v2-fast", thresholds=GATE)
    controller.deploy("edge-back", slow, "fb-1")
    assert _states(controller.wait_outcome("edge-back", "fb-1"))[-2:] == ["commit", "idle"]
    controller.deploy("edge-back", fast, "fb-2")
    assert _states(controller.wait_outcome("edge-back", "fb-2"))[-2:] == ["commit", "idle"]
    controller.deploy("edge-back", slow, "fb-back", kind="rollback")
    reports = controller.wait_outcome("edge-back", "fb-back")
    assert _states(reports)[-2:] == ["commit", "idle"], [(r.state, r.reason, r.detail) for r in reports]
    bench = controller.benches["edge-back"][-1]
    assert bench.deployment_id == "fb-back" and bench.decision == "commit"
    assert any("committed before" in r for r in bench.reasons), bench.reasons
    # it really is slower than what it replaced: a plain deploy would have been refused
    assert bench.baseline_metrics is not None
    assert bench.candidate_metrics.latency_p95_ms > bench.baseline_metrics.latency_p95_ms
    assert not [req for d, req in controller.requests if req.deployment_id == "fb-back"]  # from the other slot
    controller.wait_for(lambda: controller.states["edge-back"].active.version == "v1-slow", 10, "slow model back")


def test_unknown_rollback_target_is_still_gated(controller, start_agent, reference, keypair, tmp_path):
    start_agent("edge-unk", "x86-edge")
    fast = make_artifact(tmp_path, reference.good_model(), reference, keypair[0], version="v1-fast", thresholds=GATE)
    slow = make_artifact(tmp_path, slow_linear_model(reference.weight, reference.bias), reference, keypair[0],
                         version="v0-slow", thresholds=GATE)
    controller.deploy("edge-unk", fast, "unk-1")
    assert _states(controller.wait_outcome("edge-unk", "unk-1"))[-2:] == ["commit", "idle"]
    controller.deploy("edge-unk", slow, "unk-back", kind="rollback")
    reports = controller.wait_outcome("edge-unk", "unk-back")
    assert reports[-2].state == "failure" and reports[-2].reason is ReasonCode.REGRESSION_LATENCY
    controller.wait_for(lambda: controller.states["edge-unk"].active.version == "v1-fast", 10, "fast model kept")
