"""What a report measures straight from the model files: size breakdown and per-layer weight drift.

Computed from the stored ONNX blobs rather than from anything a technique chose to report, so
every ONNX version gets the same two charts whichever technique made it: bytes per tensor
type (shows what INT8/INT4/FP16 really shrank, and what stayed FP32), and, for each weight
that still maps onto an FP32 weight of the lineage root (same name, or ``<name>_quantized``
with its scale and zero point), the signal-to-quantisation-noise ratio of the stored weight
against the FP32 one. Weights whose shape changed (pruned, decomposed) have no counterpart
and are counted, not compared.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

MAX_LAYERS = 400  # MiniLM has ~100 weight tensors; bound the work on huge graphs


def _load(path: Path) -> Any:
    import onnx

    return onnx.load(str(path), load_external_data=False)


def size_breakdown(path: Path) -> dict[str, int]:
    """Bytes of the initializers per element type (``FLOAT``, ``INT8``, ...), plus ``graph + other``."""
    import onnx

    model = _load(path)
    out: dict[str, int] = {}
    for init in model.graph.initializer:
        name = onnx.TensorProto.DataType.Name(init.data_type)
        out[name] = out.get(name, 0) + (len(init.raw_data) or init.ByteSize())
    total = Path(path).stat().st_size
    out["graph + other"] = max(total - sum(out.values()), 0)
    return out


def _dequantize(q: np.ndarray, scale: np.ndarray, zero: np.ndarray | None, axis: int) -> np.ndarray:
    q = q.astype(np.float32)
    zero_f = np.zeros_like(scale, dtype=np.float32) if zero is None else zero.astype(np.float32)
    if scale.size > 1:
        shape = [1] * q.ndim
        shape[axis] = scale.size
        return (q - zero_f.reshape(shape)) * scale.reshape(shape)
    return (q - zero_f.reshape(())) * scale.reshape(())


def _sqnr_db(ref: np.ndarray, cand: np.ndarray) -> float:
    noise = float(np.sum((ref.astype(np.float64) - cand.astype(np.float64)) ** 2))
    signal = float(np.sum(ref.astype(np.float64) ** 2))
    if noise <= 0.0:
        return 200.0
    return 10.0 * float(np.log10(max(signal, 1e-30) / noise))


def _candidate_weights(model: Any) -> dict[str, np.ndarray]:
    """Float view of every weight of the candidate, keyed by the FP32 name it stands for."""
    from onnx import numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    out: dict[str, np.ndarray] = {}
    for node in model.graph.node:  # QDQ weights: DequantizeLinear(q_init, scale, zero_point)
        if node.op_type != "DequantizeLinear" or node.input[0] not in inits:
            continue
        axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
        q = numpy_helper.to_array(inits[node.input[0]])
        if q.ndim < 2 or len(node.input) < 2 or node.input[1] not in inits:
            continue
        scale = numpy_helper.to_array(inits[node.input[1]])
        zero = numpy_helper.to_array(inits[node.input[2]]) if len(node.input) > 2 and node.input[2] in inits else None
        name = node.input[0].removesuffix("_quantized")
        out[name] = _dequantize(q, scale, zero, axis if axis >= 0 else q.ndim + axis)
    for name, init in inits.items():  # weights quantized without a DequantizeLinear (dynamic INT8: MatMulInteger)
        base = name.removesuffix("_quantized")
        if base == name or base in out or f"{base}_scale" not in inits:
            continue
        q = numpy_helper.to_array(init)
        scale = numpy_helper.to_array(inits[f"{base}_scale"])
        zp = inits.get(f"{base}_zero_point")
        axis = _channel_axis(q.shape, scale.size)
        if q.ndim >= 2 and axis is not None:
            out[base] = _dequantize(q, scale, numpy_helper.to_array(zp) if zp is not None else None, axis)
    for name, init in inits.items():
        if name not in out and init.data_type in (1, 10, 11, 16):  # float, float16, double, bfloat16
            arr = numpy_helper.to_array(init)
            if arr.ndim >= 2:
                out[name] = arr.astype(np.float32)
    return out


def _channel_axis(shape: tuple[int, ...], n_scales: int) -> int | None:
    """The axis a per-channel scale runs along: output channels (MatMul weight [K, N] → 1, Conv [O, ...] → 0)."""
    if n_scales == 1:
        return 0
    preferred = 1 if len(shape) == 2 else 0
    if shape[preferred] == n_scales:
        return preferred
    return next((i for i, d in enumerate(shape) if d == n_scales), None)


def layer_drift(reference: Path, candidate: Path) -> dict[str, Any]:
    """Per-layer SQNR of the candidate's weights against the reference's, in the reference's order.

    Returns ``{"layers": [{"name", "shape", "sqnr_db", "rel_error"}], "compared", "unmatched"}``.
    """
    from onnx import numpy_helper

    ref_model = _load(reference)
    cand = _candidate_weights(_load(candidate))
    layers: list[dict[str, Any]] = []
    unmatched = 0
    for init in ref_model.graph.initializer:
        if init.data_type != 1 or len(init.dims) < 2:
            continue
        if len(layers) >= MAX_LAYERS:
            break
        other = cand.get(init.name)
        ref = numpy_helper.to_array(init)
        if other is None or other.shape != ref.shape:
            unmatched += 1
            continue
        norm = float(np.linalg.norm(ref)) or 1.0
        layers.append({"name": init.name, "shape": list(ref.shape), "sqnr_db": round(_sqnr_db(ref, other), 2),
                       "rel_error": float(np.linalg.norm(ref - other)) / norm})
    return {"layers": layers, "compared": len(layers), "unmatched": unmatched}
