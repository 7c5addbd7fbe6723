"""Real zoo models through ``build`` (slow: exports and calibrates the real networks)."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("profile", ["jetson-orin-nano", "rpi5"])
def test_mobilenetv2_builds_with_faithful_conversion(profile, tmp_path):
    pytest.importorskip("onnxruntime")
    from controller.conversion.build import build

    report = build("mobilenetv2", profile, out_dir=tmp_path, golden_samples=16, calibration_samples=16, check=False)
    (out,) = report.conversion["check"]["outputs"]
    assert report.artifact.exists() and out["name"] == "logits"
    # the artifact reproduces its source (FP16 weights for TensorRT: near-exact; fused INT8: exact)
    assert out["cosine"] > 0.999 and out["top1_agreement"] >= 0.9


def test_mobilenetv2_tflite_int8_for_android(tmp_path):
    pytest.importorskip("litert_torch")
    pytest.importorskip("ai_edge_litert")
    from controller.conversion.build import build

    report = build("mobilenetv2", "android-arm64", out_dir=tmp_path, golden_samples=16, calibration_samples=8,
                   check=False)
    assert report.attempts[0]["precision"] == "int8" and report.artifact.suffix == ".tflite"
    assert report.attempts[0]["outputs"][0]["cosine"] > 0.85  # measured 0.94 on 64 held-out photos
