"""Evaluation harness shared by every compression technique, the benchmark and the pipeline.

Example:
    >>> from controller import zoo
    >>> from controller.evaluation import evaluate
    >>> m = zoo.load("minilm")
    >>> r = evaluate(m.onnx_path, "int8.onnx", m.eval_inputs(200), "cosine", threads=(1, 2), batches=(1, 32))
    >>> r["size_ratio"], r["quality"]["cosine_mean"], r["latency"]["t1_b1"]["ratio_p50"], r["memory_ratio"]

``evaluate`` returns flat headline figures (``size_ratio``, ``quality_score``, ``latency_ratio``
at the first (threads, batch) point, ``memory_ratio``) plus the detailed nested measurements.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from controller.evaluation.latency import compare_latency, measure_latency, run_all, session
from controller.evaluation.memory import compare_memory, peak_rss_delta
from controller.evaluation.quality import accuracy, agreement, quality_score
from controller.evaluation.regression import Thresholds, check_regression

__all__ = ["Thresholds", "accuracy", "agreement", "check_regression", "compare_latency", "compare_memory",
           "evaluate", "measure_latency", "peak_rss_delta", "quality_score", "run_all", "session"]


def evaluate(
    reference_onnx: Path | str,
    candidate_onnx: Path | str,
    inputs: Sequence[dict[str, np.ndarray]],
    metric: str,
    *,
    labels: np.ndarray | None = None,
    threads: Sequence[int] = (1,),
    batches: Sequence[int] = (1,),
    latency_budget_s: float = 3.0,
    memory: bool = True,
) -> dict[str, Any]:
    """Measure a candidate against its FP32 reference on the same real held-out inputs.

    Args:
        reference_onnx: the FP32 model.
        candidate_onnx: the compressed model (same graph inputs).
        inputs: per-sample dicts (batch 1) keyed by graph input names.
        metric: ``cosine``, ``top1_agreement`` (``top1``), ``mean_abs_diff``, ``sequence_agreement`` or a
            user hook ``module:function`` (see :mod:`controller.evaluation.metrics`).
        labels: task labels aligned with ``inputs``; adds task accuracy of both models.
        threads / batches: latency grid, measured as ORT intra-op threads × batch size.
        memory: measure peak-RSS increase in fresh subprocesses (~2 s per model).

    Returns:
        ``size_bytes``, ``size_ratio``, ``quality`` (agreement details), ``quality_score``,
        ``accuracy`` (if labels), ``latency`` (``t{threads}_b{batch}`` → p50/p95 and ratios),
        ``latency_ratio`` (p50 ratio at the first grid point), ``memory`` and ``memory_ratio``.
    """
    from controller.onnx_files import model_bytes

    # every weight file counts: torch's default export keeps the weights in model.onnx.data
    ref_size, cand_size = model_bytes(Path(reference_onnx)), model_bytes(Path(candidate_onnx))
    result: dict[str, Any] = {"metric": metric, "n_inputs": len(inputs),
                              "size_bytes": {"reference": ref_size, "candidate": cand_size},
                              "size_ratio": cand_size / ref_size}
    ref_out = run_all(session(reference_onnx, 2), inputs)
    cand_out = run_all(session(candidate_onnx, 2), inputs)
    result["quality"] = agreement(ref_out, cand_out, metric)
    result["quality_score"] = quality_score(result["quality"], metric)
    if labels is not None:
        result["accuracy"] = {"reference": accuracy(ref_out, labels), "candidate": accuracy(cand_out, labels)}
    result["latency"] = {}
    for t in threads:
        for b in batches:
            if b > len(inputs):
                continue
            try:
                result["latency"][f"t{t}_b{b}"] = compare_latency(reference_onnx, candidate_onnx, inputs, threads=t,
                                                                  batch=b, budget_s=latency_budget_s)
            except Exception as exc:  # e.g. a fixed batch dimension
                result["latency"][f"t{t}_b{b}"] = {"error": str(exc).splitlines()[0][:200]}
    first = next(iter(result["latency"].values()), {})
    result["latency_ratio"] = first.get("ratio_p50")
    if memory:
        result["memory"] = compare_memory(reference_onnx, candidate_onnx, dict(inputs[0]), threads=threads[0])
        result["memory_ratio"] = result["memory"]["ratio"]
    return result
