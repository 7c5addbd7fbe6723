"""Evaluation harness: agreement metrics, latency ratios, RSS in a fresh process, regression checks."""

from __future__ import annotations

import numpy as np
import pytest

from controller.evaluation import Thresholds, agreement, check_regression, evaluate, peak_rss_delta


def test_cosine_and_top1_agreement():
    ref = np.array([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0]])
    same = agreement(ref, ref * 3, "cosine")
    assert same["cosine_mean"] == pytest.approx(1.0)
    flipped = agreement(ref, np.array([[0.0, 1.0, 0.0], [0.0, 2.0, 0.0]]), "top1")
    assert flipped["top1_agreement"] == 0.5 and flipped["kl_mean"] > 0
    with pytest.raises(ValueError, match="cosine"):
        agreement(ref, ref, "f1")


def _mlp_onnx(path, hidden: int):
    import torch

    from controller.zoo.export import export_onnx

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(16, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, 4))
    return export_onnx(model, (torch.zeros(1, 16),), path, input_names=["x"], output_names=["y"],
                       dynamic_axes={"x": {0: "b"}, "y": {0: "b"}})


def test_evaluate_reports_every_figure(tmp_path):
    small, big = _mlp_onnx(tmp_path / "s.onnx", 32), _mlp_onnx(tmp_path / "b.onnx", 512)
    rng = np.random.default_rng(0)
    inputs = [{"x": rng.standard_normal((1, 16)).astype(np.float32)} for _ in range(16)]
    labels = rng.integers(0, 4, 16)
    r = evaluate(big, small, inputs, "top1", labels=labels, threads=(1, 2), batches=(1, 8), latency_budget_s=0.3)
    assert r["size_ratio"] < 0.2
    assert set(r["latency"]) == {"t1_b1", "t1_b8", "t2_b1", "t2_b8"}
    assert r["latency"]["t1_b1"]["candidate"]["p95_ms"] >= r["latency"]["t1_b1"]["candidate"]["p50_ms"]
    assert 0 <= r["quality"]["top1_agreement"] <= 1 and set(r["accuracy"]) == {"reference", "candidate"}
    assert r["memory"]["reference"]["peak_rss_delta_mb"] >= 0 and r["memory_ratio"] is not None


def test_peak_rss_grows_with_model_size(tmp_path):
    small, big = _mlp_onnx(tmp_path / "s.onnx", 16), _mlp_onnx(tmp_path / "b.onnx", 200_000)  # ~13 MB of weights
    x = {"x": np.zeros((1, 16), np.float32)}
    assert peak_rss_delta(big, x)["peak_rss_delta_mb"] > peak_rss_delta(small, x)["peak_rss_delta_mb"] + 8


def test_regression_detection():
    metrics = {"quality_score": 0.97, "latency_ratio": 1.3, "size_ratio": 0.3, "memory_ratio": 0.5,
               "accuracy": {"reference": 0.98, "candidate": 0.95}}
    reasons = check_regression(metrics, Thresholds(min_quality=0.99, max_latency_ratio=1.0, max_size_ratio=0.5,
                                                   max_accuracy_drop=0.01))
    assert len(reasons) == 3 and any("quality" in r for r in reasons) and any("accuracy" in r for r in reasons)
    assert check_regression(metrics, Thresholds()) == []
