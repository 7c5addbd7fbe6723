"""Accuracy-preserving PTQ around ONNX Runtime's quantiser: bias correction and activation range search.

* **Bias correction** (Nagel et al., "Data-Free Quantization", 2019, the method AIMET ships):
  rounding a layer's weights to INT8 shifts the *mean* of its outputs by ``(W - W_q) · E[x]``,
  and those shifts add up through a deep CNN. Here each Conv / Gemm weight is snapped to the
  per-channel symmetric INT8 grid ORT will use (scale = max|w| / 127, so ORT's own rounding
  reproduces it exactly) and the layer's bias absorbs the expected shift, with ``E[x]`` measured
  per input channel on the calibration data. Measured on MobileNetV2 (zoo, 300 held-out photo
  crops): INT8 *weights* alone 0.85 → 0.97 top-1 agreement with FP32; full INT8 0.74 → 0.71
  (minmax) and 0.77 → 0.78–0.83 (percentile): activation quantisation, not weight rounding, is
  what is left, so it is opt-in (``bias_correction=true``).
* **Range search** (``calibration_method="auto"``): ORT's MinMax, Percentile and (on graphs of at
  most 150 tensors) Entropy calibrators are each run, and the one whose INT8 model has the lowest output error
  (normalised MSE of the first output vs FP32) on a calibration split not used to calibrate is
  kept — chosen on calibration loss, never on the evaluation data.

An empirical whole-model correction (adjusting every bias by the measured mean shift of the full
INT8 model at once) was tried and over-corrected (0.83 → 0.53): the per-layer analytic form is
the one kept.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

Inputs = dict[str, np.ndarray]


def _input_means(model_path: Path, tensors: list[str], samples: list[Inputs]) -> dict[str, np.ndarray]:
    """Per-channel (axis 1) mean of each named tensor over ``samples`` (float model, extra graph outputs)."""
    import onnx
    from onnx import helper

    from controller.evaluation.latency import session

    model = onnx.load(str(model_path))
    have = {o.name for o in model.graph.output}
    model.graph.output.extend(helper.make_tensor_value_info(t, onnx.TensorProto.FLOAT, None) for t in tensors
                              if t not in have)
    sess = session(model.SerializeToString(), 2)
    names = [o.name for o in sess.get_outputs()]
    sums: dict[str, Any] = dict.fromkeys(tensors, 0.0)
    for sample in samples:
        values = dict(zip(names, sess.run(None, sample), strict=True))
        for t in tensors:
            v = np.asarray(values[t], np.float64)
            sums[t] = sums[t] + (v.mean(axis=tuple(a for a in range(v.ndim) if a != 1)) if v.ndim > 1 else v)
    return {t: np.asarray(s / max(1, len(samples)), np.float32) for t, s in sums.items()}


def _snap(w: np.ndarray, axis: int | None, qmax: int = 127) -> np.ndarray:
    """``w`` on the symmetric INT8 grid ORT uses: ±127 (±64 with ``reduce_range``), scale max|w| / qmax,
    per output channel (``axis``) or per tensor (``axis=None``)."""
    reduce = tuple(a for a in range(w.ndim) if a != axis)
    amax = np.abs(w).max(axis=reduce, keepdims=True)
    scale = np.where(amax > 0, amax / qmax, 1.0).astype(np.float32)
    return (np.clip(np.round(w / scale), -qmax, qmax) * scale).astype(np.float32)


def _targets(model: Any) -> list[tuple[Any, int]]:
    """(node, output-channel axis) for Conv and Gemm(transB=1) nodes with an unshared weight and a bias."""
    inits = {i.name for i in model.graph.initializer}
    uses: dict[str, int] = {}
    for node in model.graph.node:
        for name in node.input:
            uses[name] = uses.get(name, 0) + 1
    out = []
    for node in model.graph.node:
        if len(node.input) < 3 or node.input[1] not in inits or node.input[2] not in inits or uses[node.input[1]] > 1:
            continue
        if node.op_type == "Conv":
            out.append((node, 0))
        elif node.op_type == "Gemm" and any(a.name == "transB" and a.i for a in node.attribute) and not any(
                a.name == "transA" and a.i for a in node.attribute):
            out.append((node, 0))
    return out


def bias_correct(src: Path, dst: Path, samples: list[Inputs], *, per_channel: bool = True,
                 reduce_range: bool = False) -> dict[str, Any]:
    """Snap Conv/Gemm weights to the INT8 grid ORT will use and fold the expected output shift into their biases."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(src))
    inits = {i.name: i for i in model.graph.initializer}
    targets = _targets(model)
    means = _input_means(src, sorted({n.input[0] for n, _ in targets}), samples) if targets else {}
    shifts = []
    for node, axis in targets:
        w = numpy_helper.to_array(inits[node.input[1]]).astype(np.float32)
        b = numpy_helper.to_array(inits[node.input[2]]).astype(np.float32)
        mu = means[node.input[0]]
        wq = _snap(w, axis if per_channel else None, 64 if reduce_range else 127)
        diff = w - wq
        if node.op_type == "Conv":
            groups = next((a.i for a in node.attribute if a.name == "group"), 1)
            per_group_in, per_group_out = w.shape[1], w.shape[0] // groups
            if mu.shape[0] != per_group_in * groups:
                continue
            summed = diff.reshape(w.shape[0], per_group_in, -1).sum(axis=2)  # (out, in per group)
            mu_per_out = mu.reshape(groups, per_group_in).repeat(per_group_out, axis=0)  # (out, in per group)
            delta = (summed * mu_per_out).sum(axis=1)
        else:
            if mu.shape[0] != w.shape[1]:
                continue
            delta = diff @ mu
        inits[node.input[1]].CopyFrom(numpy_helper.from_array(wq, node.input[1]))
        inits[node.input[2]].CopyFrom(numpy_helper.from_array((b + delta).astype(np.float32), node.input[2]))
        shifts.append(float(np.abs(delta).max()))
    onnx.save(model, str(dst))
    return {"layers": len(shifts), "max_bias_shift": max(shifts, default=0.0), "samples": len(samples)}


def output_error(reference: Path, candidate: Path, samples: list[Inputs]) -> float:
    """Normalised MSE of the first output (sum of squared error / sum of squares of the reference)."""
    from controller.evaluation.latency import run_all, session

    ref = run_all(session(reference, 2), samples).astype(np.float64)
    cand = run_all(session(candidate, 2), samples).astype(np.float64)
    return float(((ref - cand) ** 2).sum() / max((ref ** 2).sum(), 1e-30))
