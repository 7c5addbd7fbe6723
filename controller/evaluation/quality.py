"""Output agreement between a candidate and the FP32 reference, plus task accuracy where labels exist."""

from __future__ import annotations

import numpy as np


def _softmax(x: np.ndarray) -> np.ndarray:
    z = x - x.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def agreement(reference: np.ndarray, candidate: np.ndarray, metric: str) -> dict[str, float]:
    """Compare outputs row by row (axis 0 = samples).

    ``cosine``: mean / min / 5th-percentile cosine similarity of flattened rows (embeddings).
    ``top1``: share of rows whose argmax matches, plus mean KL(reference ‖ candidate) of the softmaxes.
    """
    ref = reference.reshape(len(reference), -1).astype(np.float64)
    cand = candidate.reshape(len(candidate), -1).astype(np.float64)
    if metric == "cosine":
        num = (ref * cand).sum(1)
        den = np.linalg.norm(ref, axis=1) * np.linalg.norm(cand, axis=1)
        cos = np.where(den > 0, num / np.maximum(den, 1e-30), 0.0)
        return {"cosine_mean": float(cos.mean()), "cosine_min": float(cos.min()),
                "cosine_p05": float(np.percentile(cos, 5))}
    if metric == "top1":
        p, q = _softmax(ref), _softmax(cand)
        kl = (p * (np.log(np.maximum(p, 1e-12)) - np.log(np.maximum(q, 1e-12)))).sum(1)
        agree = ref.argmax(1) == cand.argmax(1)
        confident = p.max(1) >= 0.5  # where FP32 itself is sure; flips elsewhere are near-ties
        return {"top1_agreement": float(agree.mean()), "kl_mean": float(kl.mean()),
                "top1_agreement_confident": float(agree[confident].mean()) if confident.any() else None,
                "confident_share": float(confident.mean())}
    raise ValueError(f"unknown quality metric {metric!r}; use 'cosine' or 'top1'")


def quality_score(metrics: dict[str, float], metric: str) -> float:
    """The single number a quality target is compared with: mean cosine or top-1 agreement."""
    return metrics["cosine_mean"] if metric == "cosine" else metrics["top1_agreement"]


def accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    """Top-1 accuracy of ``logits`` against integer ``labels``."""
    return float((logits.reshape(len(logits), -1).argmax(1) == np.asarray(labels)).mean())
