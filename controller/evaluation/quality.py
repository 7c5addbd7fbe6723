"""Output agreement between a candidate and the FP32 reference, plus task accuracy where labels exist.

The metrics themselves live in :mod:`controller.evaluation.metrics` (built-ins and user hooks);
these functions keep the harness's historical names (``cosine`` / ``top1``) working.
"""

from __future__ import annotations

import numpy as np

from controller.evaluation.metrics import MetricError, measure


def agreement(reference: np.ndarray, candidate: np.ndarray, metric: str) -> dict[str, float]:
    """Compare outputs row by row (axis 0 = samples) with ``metric`` (a built-in name or ``module:function``).

    ``cosine``: mean / min / 5th-percentile cosine similarity of flattened rows (embeddings).
    ``top1``: share of rows whose argmax matches, plus mean KL(reference ‖ candidate) of the softmaxes.
    Every result also carries ``score``, the number a quality target is compared with.
    """
    try:
        return measure(reference, candidate, metric)  # type: ignore[return-value]
    except MetricError as exc:
        raise ValueError(str(exc)) from None


def quality_score(metrics: dict[str, float], metric: str) -> float:
    """The single number a quality target is compared with: mean cosine, top-1 agreement, ... (``score``)."""
    if "score" in metrics:
        return metrics["score"]
    return metrics["cosine_mean"] if metric == "cosine" else metrics["top1_agreement"]


def accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    """Top-1 accuracy of ``logits`` against integer ``labels``."""
    return float((logits.reshape(len(logits), -1).argmax(1) == np.asarray(labels)).mean())
