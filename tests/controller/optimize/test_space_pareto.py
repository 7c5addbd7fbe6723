"""The space follows the profile and the model; the front, hypervolume and metrics are computed right."""

from __future__ import annotations

import numpy as np
import pytest

from common.profiles import load_profile
from controller.optimize import Candidate, InvalidSearchError, UnsupportedProfileError, build_space, get_metric
from controller.optimize.pareto import dominates, hypervolume, non_dominated
from controller.optimize.problem import Budget, Constraints
from controller.optimize.space import ModelTraits

CNN = ModelTraits(has_torch=True, transformer=False, has_conv=True, has_matmul=True, narrow_student=False)
ENCODER = ModelTraits(has_torch=True, transformer=True, has_conv=False, has_matmul=True, narrow_student=False)
ONNX_ONLY = ModelTraits(has_torch=False, transformer=False, has_conv=True, has_matmul=False, narrow_student=False)


def test_space_reads_profile_and_model() -> None:
    rpi4 = build_space(CNN, load_profile("rpi4"))
    assert "fp16" not in rpi4.precisions  # rpi4 lists no fast fp16
    assert any("fp16 left out" in n for n in rpi4.notes)
    assert {"int8", "int8-dynamic", "int4"} <= set(rpi4.precisions)
    assert "width:0.5" in rpi4.archs and not any(a.startswith("depth") for a in rpi4.archs)
    jetson = build_space(CNN, load_profile("jetson-orin-nano"))
    assert "fp16" in jetson.precisions
    enc = build_space(ENCODER, load_profile("rpi4"))
    assert any(a.startswith("depth:") for a in enc.archs)
    bare = build_space(ONNX_ONLY, load_profile("rpi4"))
    assert bare.archs == ("none",) and "int4" not in bare.precisions
    assert build_space(CNN, load_profile("rpi4"), dimensions=("precision",)).archs == ("none",)
    assert rpi4.size() > len(rpi4.archs)


def test_space_refuses_what_cannot_run() -> None:
    with pytest.raises(UnsupportedProfileError, match="coreml"):
        build_space(CNN, load_profile("iphone"))
    with pytest.raises(InvalidSearchError, match="fp16"):
        build_space(CNN, load_profile("rpi4"), precisions=["fp16"])
    with pytest.raises(InvalidSearchError, match="dimensions"):
        build_space(CNN, load_profile("rpi4"), dimensions=("bits",))
    with pytest.raises(InvalidSearchError, match="arch"):
        Candidate(arch="wide:2")
    with pytest.raises(InvalidSearchError, match="precision"):
        Candidate(precision="int3")
    with pytest.raises(InvalidSearchError):
        Budget(trials=None, time_s=None)
    with pytest.raises(InvalidSearchError):
        Constraints(quality_floor=3)


def test_candidate_round_trip_and_label() -> None:
    c = Candidate(arch="depth:0.33", precision="int8", calibration="percentile", layers=(("a", "fp32"), ("b", "int8")))
    assert Candidate.from_dict(c.to_dict()) == c
    assert c.describe() == "depth:0.33 + int8(percentile, 1 mixed)"
    assert Candidate(precision="int8", fallback_layers=2).describe() == "int8(minmax, 2 weight-only)"
    with pytest.raises(InvalidSearchError, match="unknown candidate"):
        Candidate.from_dict({"bits": 4})


def test_front_and_hypervolume() -> None:
    pts = [(0.2, 0.5), (0.5, 0.2), (0.6, 0.6), (0.2, 0.5)]
    assert dominates((0.2, 0.5), (0.6, 0.6)) and not dominates((0.2, 0.5), (0.2, 0.5))
    assert non_dominated(pts) == [True, True, False, True]
    # union of [0.2,1]x[0.5,1] and [0.5,1]x[0.2,1] = 0.4 + 0.4 - 0.25
    assert hypervolume(pts, (1.0, 1.0)) == pytest.approx(0.55)
    assert hypervolume([(0.5, 0.5, 0.5)], (1.0, 1.0, 1.0)) == pytest.approx(0.125)
    assert hypervolume([(1.2, 0.1)], (1.0, 1.0)) == 0.0


def test_metrics() -> None:
    ref = np.array([[2.0, 1.0], [0.0, 1.0], [1.0, 0.0]])
    cand = np.array([[2.0, 1.1], [1.0, 0.0], [1.0, 0.0]])
    assert get_metric("top1").score(ref, cand, None) == pytest.approx(2 / 3)
    assert 0.5 < get_metric("cosine").score(ref, cand, None) < 1.0
    labels = np.array([0, 1, 1])  # FP32 gets 2/3, the candidate 1/3
    assert get_metric("accuracy").score(ref, cand, labels) == pytest.approx(0.5)
    with pytest.raises(InvalidSearchError, match="labels"):
        get_metric("accuracy").score(ref, cand, None)
    with pytest.raises(InvalidSearchError, match="available"):
        get_metric("bleu")
