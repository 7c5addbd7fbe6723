"""Latency with ONNX Runtime: p50/p95 per (threads, batch), reference and candidate interleaved.

The two models run in alternating rounds so that load from other processes on a shared machine
hits both alike; the ratio is then trustworthy even when absolute numbers wander.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

Inputs = dict[str, np.ndarray]


def session(path: Path | str, threads: int = 1) -> Any:
    """A CPU ORT session with ``threads`` intra-op threads, full graph optimisation and the host's tuning."""
    from controller.ort_tuning import cpu_session

    return cpu_session(path, threads)


def make_batches(inputs: Sequence[Inputs], batch: int) -> list[Inputs]:
    """Concatenate per-sample dicts into batches of ``batch`` (last partial batch dropped if others exist)."""
    if batch == 1:  # as stored: scalars and recurrent states must not be concatenated
        return [dict(s) for s in inputs]
    out = []
    for i in range(0, len(inputs), batch):
        chunk = inputs[i : i + batch]
        if len(chunk) < batch and out:
            break
        out.append({k: np.concatenate([c[k] for c in chunk]) for k in chunk[0]})
    return out


def run_all(sess: Any, inputs: Sequence[Inputs], batch: int = 32) -> np.ndarray:
    """First output of ``sess`` over all samples, samples on axis 0.

    Samples are batched only when every graph input has a dynamic leading axis fed as 1
    (``can_batch``): a recurrent state's fixed leading axis or a scalar input is not a batch axis.
    """
    from controller.compression.inputs import can_batch

    outs = []
    if inputs and can_batch(sess.get_inputs(), inputs[0]):
        try:
            for b in make_batches(inputs, batch):
                outs.append(sess.run(None, b)[0])
            if sum(len(o) for o in outs) == len(inputs):
                return np.concatenate(outs)
        except Exception:  # noqa: BLE001 - a graph that refuses batches: one sample at a time
            pass
    outs = [np.asarray(sess.run(None, s)[0]) for s in inputs]
    if outs and outs[0].ndim == 0:
        return np.stack(outs)
    return np.concatenate(outs)


def _pcts(times: list[float]) -> dict[str, float]:
    arr = np.asarray(times) * 1000.0
    q = np.percentile(arr, [5, 25, 50, 75, 95, 99])  # a quantile summary: enough to draw the distribution
    quantiles = {f"p{p}": round(float(v), 4) for p, v in zip((5, 25, 50, 75, 95, 99), q, strict=True)}
    quantiles |= {"min": round(float(arr.min()), 4), "max": round(float(arr.max()), 4)}
    return {"p50_ms": float(np.percentile(arr, 50)), "p95_ms": float(np.percentile(arr, 95)),
            "mean_ms": float(arr.mean()), "runs": len(arr), "quantiles_ms": quantiles}


def compare_latency(reference: Path | str, candidate: Path | str, inputs: Sequence[Inputs], *,
                    threads: int = 1, batch: int = 1, budget_s: float = 4.0, min_runs: int = 10,
                    max_runs: int = 200) -> dict[str, Any]:
    """p50/p95 of both models at one (threads, batch) point, and candidate/reference ratios."""
    batches = make_batches(inputs, batch)
    sessions = {"reference": session(reference, threads), "candidate": session(candidate, threads)}
    times: dict[str, list[float]] = {k: [] for k in sessions}
    for sess in sessions.values():  # warm-up
        for b in batches[:2]:
            sess.run(None, b)
    start = time.perf_counter()
    i = 0
    while True:
        b = batches[i % len(batches)]
        for name, sess in sessions.items():
            t0 = time.perf_counter()
            sess.run(None, b)
            times[name].append(time.perf_counter() - t0)
        i += 1
        elapsed = time.perf_counter() - start
        if i >= max_runs or (i >= min_runs and elapsed > budget_s):
            break
    out: dict[str, Any] = {name: _pcts(t) for name, t in times.items()}
    out["ratio_p50"] = out["candidate"]["p50_ms"] / out["reference"]["p50_ms"]
    out["ratio_p95"] = out["candidate"]["p95_ms"] / out["reference"]["p95_ms"]
    return out


def measure_latency(model: Path | str, inputs: Sequence[Inputs], *, threads: int = 1, batch: int = 1,
                    runs: int = 50) -> dict[str, float]:
    """p50/p95 of one model alone (e.g. for the agent-side style benchmark)."""
    sess = session(model, threads)
    batches = make_batches(inputs, batch)
    for b in batches[:2]:
        sess.run(None, b)
    times = []
    for i in range(runs):
        t0 = time.perf_counter()
        sess.run(None, batches[i % len(batches)])
        times.append(time.perf_counter() - t0)
    return _pcts(times)
