"""Regression detection: compare a candidate's measured figures with a baseline under thresholds."""

from __future__ import annotations

import dataclasses
from typing import Any


@dataclasses.dataclass(frozen=True)
class Thresholds:
    """Limits a candidate must respect (``None`` = not checked).

    Ratios are candidate / reference; ``min_quality`` is the mean cosine or top-1 agreement with
    FP32; ``max_accuracy_drop`` is in absolute points (0.01 = one percentage point).
    """

    min_quality: float | None = None
    max_latency_ratio: float | None = None
    max_size_ratio: float | None = None
    max_memory_ratio: float | None = None
    max_accuracy_drop: float | None = None


def check_regression(metrics: dict[str, Any], thresholds: Thresholds) -> list[str]:
    """Reasons the candidate regresses (empty list = acceptable), from an ``evaluate`` result."""
    reasons = []
    q = metrics.get("quality_score")
    if thresholds.min_quality is not None and q is not None and q < thresholds.min_quality:
        reasons.append(f"quality {q:.4f} < {thresholds.min_quality}")
    lat = metrics.get("latency_ratio")
    if thresholds.max_latency_ratio is not None and lat is not None and lat > thresholds.max_latency_ratio:
        reasons.append(f"latency ratio {lat:.2f} > {thresholds.max_latency_ratio}")
    size = metrics.get("size_ratio")
    if thresholds.max_size_ratio is not None and size is not None and size > thresholds.max_size_ratio:
        reasons.append(f"size ratio {size:.3f} > {thresholds.max_size_ratio}")
    mem = metrics.get("memory_ratio")
    if thresholds.max_memory_ratio is not None and mem is not None and mem > thresholds.max_memory_ratio:
        reasons.append(f"memory ratio {mem:.2f} > {thresholds.max_memory_ratio}")
    acc = metrics.get("accuracy")
    if thresholds.max_accuracy_drop is not None and acc:
        drop = acc["reference"] - acc["candidate"]
        if drop > thresholds.max_accuracy_drop:
            reasons.append(f"accuracy drop {drop * 100:.2f} points > {thresholds.max_accuracy_drop * 100:.2f}")
    return reasons
