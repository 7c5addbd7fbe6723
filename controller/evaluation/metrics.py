"""Quality metrics: how a candidate's outputs compare with the FP32 reference's, built in or the user's own.

Built in (``reference`` and ``candidate`` are the model's first output, samples on axis 0):

* ``top1_agreement`` (alias ``top1``): share of samples whose argmax class matches (classifiers);
* ``cosine``: mean cosine similarity of the flattened outputs (embeddings, regressions);
* ``mean_abs_diff``: mean |reference − candidate| (lower is better: any numeric output);
* ``sequence_agreement``: per-step argmax agreement over the last axis (CTC / sequence outputs
  shaped (N, T, classes)), plus the share of whole sequences that match exactly.

A user hook is named ``module:function``; it is imported (the module must be importable, e.g. on
``PYTHONPATH``) and called as ``function(reference_outputs, candidate_outputs) -> float`` with the
two arrays above; higher must mean better.

Why names rather than callables in configs: the metric is part of a job, a REST request and a
report, all JSON; a name round-trips, a function object does not.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

import numpy as np

BUILTIN = ("top1_agreement", "cosine", "mean_abs_diff", "sequence_agreement")
ALIASES = {"top1": "top1_agreement"}


class MetricError(ValueError):
    """A metric name that is neither built in nor an importable ``module:function``."""


def canonical(metric: str) -> str:
    """The canonical name of a metric (``top1`` → ``top1_agreement``); hooks are returned unchanged."""
    return ALIASES.get(metric, metric)


def higher_is_better(metric: str) -> bool:
    """False only for distance metrics (``mean_abs_diff``)."""
    return canonical(metric) != "mean_abs_diff"


def load_hook(spec: str) -> Callable[[np.ndarray, np.ndarray], float]:
    """Import ``module:function``; MetricError naming what was wrong and what is accepted."""
    module_name, _, func_name = spec.partition(":")
    if not module_name or not func_name:
        raise MetricError(f"metric {spec!r}: use one of {', '.join(BUILTIN)} or a hook 'module:function'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise MetricError(f"metric hook {spec!r}: cannot import module {module_name!r} ({exc}); put it on "
                          "PYTHONPATH") from None
    fn = getattr(module, func_name, None)
    if not callable(fn):
        raise MetricError(f"metric hook {spec!r}: module {module_name!r} has no function {func_name!r}")
    return fn


def check_metric(metric: str) -> str:
    """Validate a metric name up front (before any work) and return its canonical form."""
    name = canonical(metric)
    if name not in BUILTIN:
        load_hook(name)
    return name


def _rows(x: np.ndarray) -> np.ndarray:
    return x.reshape(len(x), -1).astype(np.float64) if x.ndim else x.reshape(1, 1).astype(np.float64)


def _softmax(x: np.ndarray) -> np.ndarray:
    z = x - x.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def _cosine(ref: np.ndarray, cand: np.ndarray) -> dict[str, float]:
    ref, cand = _rows(ref), _rows(cand)
    num = (ref * cand).sum(1)
    den = np.linalg.norm(ref, axis=1) * np.linalg.norm(cand, axis=1)
    cos = np.where(den > 0, num / np.maximum(den, 1e-30), np.where(np.abs(ref - cand).max(1) == 0, 1.0, 0.0))
    return {"cosine_mean": float(cos.mean()), "cosine_min": float(cos.min()),
            "cosine_p05": float(np.percentile(cos, 5))}


def _top1(ref: np.ndarray, cand: np.ndarray) -> dict[str, float | None]:
    ref, cand = _rows(ref), _rows(cand)
    p, q = _softmax(ref), _softmax(cand)
    kl = (p * (np.log(np.maximum(p, 1e-12)) - np.log(np.maximum(q, 1e-12)))).sum(1)
    agree = ref.argmax(1) == cand.argmax(1)
    confident = p.max(1) >= 0.5  # where FP32 itself is sure; flips elsewhere are near-ties
    return {"top1_agreement": float(agree.mean()), "kl_mean": float(kl.mean()),
            "top1_agreement_confident": float(agree[confident].mean()) if confident.any() else None,
            "confident_share": float(confident.mean())}


def _sequence(ref: np.ndarray, cand: np.ndarray) -> dict[str, float]:
    if ref.ndim < 2:
        raise MetricError(f"sequence_agreement needs outputs shaped (N, steps, classes), got {ref.shape}")
    r, c = ref.argmax(-1), cand.argmax(-1)
    per_sample = (r == c).reshape(len(r), -1)
    return {"sequence_agreement": float(per_sample.mean()), "sequence_exact": float(per_sample.all(1).mean())}


def measure(reference: np.ndarray, candidate: np.ndarray, metric: str) -> dict[str, float | None]:
    """The metric's detailed figures plus ``score`` (the one number targets compare with)."""
    name = canonical(metric)
    if reference.shape != candidate.shape:
        raise MetricError(f"reference output shape {reference.shape} != candidate {candidate.shape}")
    if name == "cosine":
        out: dict[str, float | None] = dict(_cosine(reference, candidate))
        out["score"] = out["cosine_mean"]
    elif name == "top1_agreement":
        out = dict(_top1(reference, candidate))
        out["score"] = out["top1_agreement"]
    elif name == "mean_abs_diff":
        diff = np.abs(reference.astype(np.float64) - candidate.astype(np.float64))
        out = {"mean_abs_diff": float(diff.mean()), "max_abs_diff": float(diff.max()) if diff.size else 0.0}
        out["score"] = out["mean_abs_diff"]
    elif name == "sequence_agreement":
        out = dict(_sequence(reference, candidate))
        out["score"] = out["sequence_agreement"]
    else:
        value = float(load_hook(name)(reference, candidate))
        out = {"hook": name, "score": value}  # type: ignore[dict-item]
    return out
