"""Slow tests on the real zoo (``-m slow``): the techniques that matter most, with real-data quality bars.

Kept to a few minutes in total on 2 cores: the full side-by-side lives in benchmarks/compression.py.
"""

from __future__ import annotations

import dataclasses

import pytest

from controller.compression import (
    DistillConfig,
    Int4WeightConfig,
    Int8StaticConfig,
    PruneStructuredConfig,
    QatConfig,
    compress,
    recommended_int8,
)

pytestmark = pytest.mark.slow


def _acc(result):
    return result.metrics["task"]["accuracy"]


def test_mnist_int8_static_keeps_accuracy(tmp_path):
    r = compress("mnist-cnn", Int8StaticConfig(), out=tmp_path / "m.onnx", memory=False)
    assert r.metrics["size_ratio"] < 0.3
    assert _acc(r)["candidate"] >= _acc(r)["reference"] - 0.005


def test_mnist_qat_within_half_a_point(tmp_path):
    r = compress("mnist-cnn", QatConfig(epochs=1, max_samples=2000), out=tmp_path / "q.onnx", memory=False)
    assert r.report["int8_weight_tensors"] >= 4 and r.metrics["size_ratio"] < 0.35
    assert _acc(r)["candidate"] >= _acc(r)["reference"] - 0.005


def test_mnist_structured_pruning_is_physically_smaller(tmp_path):
    config = PruneStructuredConfig(ratio=0.5, finetune_epochs=1, max_samples=2000)
    r = compress("mnist-cnn", config, out=tmp_path / "p.onnx", memory=False)
    assert r.report["param_ratio"] < 0.35 and r.metrics["size_ratio"] < 0.35
    assert _acc(r)["candidate"] >= _acc(r)["reference"] - 0.01


def test_mnist_distilled_student(tmp_path):
    config = DistillConfig(width=0.5, epochs=2, max_samples=2000)
    r = compress("mnist-cnn", config, out=tmp_path / "d.onnx", memory=False)
    assert r.report["param_ratio"] <= 0.30
    assert _acc(r)["candidate"] >= 0.97 * _acc(r)["reference"]


def test_mobilenetv2_int8_static(tmp_path):
    r = compress("mobilenetv2", Int8StaticConfig(calibration_samples=64), out=tmp_path / "mb.onnx", memory=False)
    assert r.metrics["size_ratio"] < 0.3 and r.metrics["quality"]["top1_agreement"] >= 0.6


def test_minilm_recommended_int8_cosine(tmp_path):
    config = dataclasses.replace(recommended_int8("minilm"), calibration_samples=32)
    r = compress("minilm", config, out=tmp_path / "ml.onnx", memory=False)
    assert r.metrics["size_ratio"] <= 0.27 and r.metrics["quality"]["cosine_mean"] >= 0.99


def test_minilm_int4_reports_coverage(tmp_path):
    r = compress("minilm", Int4WeightConfig(), out=tmp_path / "m4.onnx", memory=False, evaluate=False)
    assert len(r.report["covered"]) == 36  # 6 layers x (q, k, v, attn-out, ffn-in, ffn-out)
