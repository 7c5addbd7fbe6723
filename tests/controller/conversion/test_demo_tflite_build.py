"""The demo's TFLite set, really converted (convert venv only): FP32, dynamic-range INT8, degraded INT8."""

from __future__ import annotations

import json

import pytest

from controller.demo.tflite_build import DEGRADE_TARGET, REPORT, build_tflite_set, main

pytest.importorskip("litert_torch", reason="the TFLite converter lives in the convert venv (.venv-convert)")


@pytest.mark.slow
def test_demo_tflite_set_for_a_real_zoo_model(tmp_path):
    report = build_tflite_set("mnist-cnn", "android-arm64", tmp_path, golden_samples=16)
    builds = report["builds"]
    assert [b["precision"] for b in builds.values()] == ["fp32", "int8-dynamic", "int8-dynamic"]
    assert builds["fp32"]["vs_fp32"]["ok"] and builds["int8"]["vs_fp32"]["ok"]
    assert builds["int8"]["size_bytes"] < builds["fp32"]["size_bytes"] / 2
    # the degraded build looks like the good one (same conversion, same size) and only its quality differs
    assert abs(builds["degraded"]["size_bytes"] - builds["int8"]["size_bytes"]) < 0.01 * builds["int8"]["size_bytes"]
    assert not builds["degraded"]["vs_fp32"]["ok"]
    assert builds["degraded"]["vs_fp32"]["top1_agreement"] < 0.98  # under the agents' min_quality
    assert report["degradation"]["torch_quality_vs_fp32"] <= DEGRADE_TARGET["top1"]
    assert json.loads((tmp_path / REPORT).read_text()) == report
    assert all((tmp_path / b["file"]).is_file() for b in builds.values())


def test_cli_reports_a_failure_with_exit_1(tmp_path, capsys):
    assert main(["--model", "no-such-model", "--out", str(tmp_path / "out")]) == 1
    assert "tflite build failed" in capsys.readouterr().err
    assert not (tmp_path / "out" / REPORT).exists()
