"""Quality metrics the search can optimise, behind one small interface.

Why an interface: the foreign-models work brings task metrics (e.g. a user's labelled data and
their own scoring function). A metric is a function ``(reference_outputs, candidate_outputs,
labels) -> float`` where higher is better and the FP32 model scores about 1.0, so a quality
floor reads the same whatever the metric (``0.99`` = "keep 99 %"). Register more with
:func:`register_metric`.

Example:
    >>> import numpy as np
    >>> from controller.optimize.metrics import get_metric
    >>> ref = np.array([[1.0, 0.0], [0.0, 1.0]])
    >>> get_metric("top1").score(ref, ref, None)
    1.0
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np

from controller.optimize.errors import InvalidSearchError

MetricFn = Callable[[np.ndarray, np.ndarray, "np.ndarray | None"], float]


@dataclasses.dataclass(frozen=True)
class QualityMetric:
    """A named quality score (higher is better, FP32 ≈ 1.0); ``needs_labels`` metrics need held-out labels."""

    name: str
    score: MetricFn
    description: str
    needs_labels: bool = False


_METRICS: dict[str, QualityMetric] = {}


def register_metric(metric: QualityMetric) -> QualityMetric:
    """Make ``metric`` selectable by name (``--metric NAME``, ``metric`` in REST)."""
    _METRICS[metric.name] = metric
    return metric


def metric_names() -> list[str]:
    """Every registered metric name."""
    return sorted(_METRICS)


def get_metric(name: str) -> QualityMetric:
    """The metric called ``name``, or InvalidSearchError listing the registered ones."""
    try:
        return _METRICS[name]
    except KeyError:
        raise InvalidSearchError(f"unknown quality metric {name!r}; available: {', '.join(metric_names())}") from None


def _rows(x: np.ndarray) -> np.ndarray:
    return np.asarray(x, np.float64).reshape(len(x), -1)


def _cosine(reference: np.ndarray, candidate: np.ndarray, labels: np.ndarray | None) -> float:
    ref, cand = _rows(reference), _rows(candidate)
    n_ref, n_cand = np.linalg.norm(ref, axis=1), np.linalg.norm(cand, axis=1)
    den = n_ref * n_cand
    cos = np.where(den > 0, (ref * cand).sum(1) / np.maximum(den, 1e-30), 0.0)
    cos = np.where((n_ref == 0) & (n_cand == 0), 1.0, cos)  # both all-zero (e.g. after ReLU): identical
    return float(np.nan_to_num(cos, nan=0.0).mean())


def _top1(reference: np.ndarray, candidate: np.ndarray, labels: np.ndarray | None) -> float:
    return float((_rows(reference).argmax(1) == _rows(candidate).argmax(1)).mean())


def _accuracy_retained(reference: np.ndarray, candidate: np.ndarray, labels: np.ndarray | None) -> float:
    if labels is None:
        raise InvalidSearchError("metric 'accuracy' needs labels with the held-out data (an 'labels' array in "
                                 "the --eval .npz, or a zoo model that has them)")
    labels = np.asarray(labels).reshape(-1)
    ref = float((_rows(reference).argmax(1) == labels).mean())
    cand = float((_rows(candidate).argmax(1) == labels).mean())
    return cand / ref if ref > 0 else 0.0


register_metric(QualityMetric("cosine", _cosine, "mean cosine similarity of the outputs with FP32 (embeddings)"))
register_metric(QualityMetric("top1", _top1, "share of inputs whose top-1 class matches FP32 (classifiers)"))
register_metric(QualityMetric("accuracy", _accuracy_retained,
                              "task accuracy on labelled held-out data, relative to FP32 (1.0 = no loss)",
                              needs_labels=True))
