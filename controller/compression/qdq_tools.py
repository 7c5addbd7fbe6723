"""Graph-level helpers around ORT static quantisation: isolated pre-processing, range guards, weight-only INT8.

* ``preprocess`` runs ORT's ``quant_pre_process`` in a child process whose working directory is
  the job's work dir: when symbolic shape inference gives up it dumps ``sym_shape_infer_temp.onnx``
  and a 90 MB ``<uuid>.data`` into the *current directory*, which must never be the user's repo.
* ``extreme_range_nodes`` finds nodes touching tensors whose calibrated range no 8-bit grid can
  represent (attention-mask additions of -3.4e38 in exported transformers): quantising them turned
  MiniLM's embeddings into noise (cosine 0.41), so they stay in float.
* ``weight_only_int8`` stores chosen nodes' weights as INT8 + per-channel ``DequantizeLinear``
  while their activations stay float: the middle rung between full INT8 and FP32 used for
  sensitive layers (e.g. MiniLM's FFN output projections after GELU, whose activations have
  outliers) — the size saving is kept, only their activation quantisation is dropped.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

from controller.compression.errors import UnsupportedModelError

Inputs = dict[str, np.ndarray]

_PREPROCESS = (
    "import sys\n"
    "from onnxruntime.quantization.shape_inference import quant_pre_process\n"
    "try:\n"
    "    quant_pre_process(sys.argv[1], sys.argv[2], skip_symbolic_shape=False)\n"
    "except Exception:\n"
    "    quant_pre_process(sys.argv[1], sys.argv[2], skip_symbolic_shape=True)\n"
)


def preprocess(src: Path, dst: Path) -> Path:
    """``quant_pre_process`` (symbolic shapes, falling back to ONNX shapes) isolated in ``dst``'s directory."""
    proc = subprocess.run([sys.executable, "-c", _PREPROCESS, str(src), str(dst)], cwd=dst.parent,
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0 or not dst.exists():
        raise UnsupportedModelError(f"ONNX Runtime's quant_pre_process failed on {src.name}: "
                                    f"{proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else 'no output'}")
    return dst


class ListReader:
    """ORT ``CalibrationDataReader`` over a list of per-sample dicts."""

    def __init__(self, samples: list[Inputs]) -> None:
        self.samples, self.i = samples, 0

    def get_next(self) -> Inputs | None:
        if self.i >= len(self.samples):
            return None
        self.i += 1
        return self.samples[self.i - 1]

    def rewind(self) -> None:
        self.i = 0


def tensor_ranges(model: Path, samples: list[Inputs], workdir: Path) -> dict[str, tuple[float, float]]:
    """MinMax-calibrated (min, max) of every float activation tensor, from a few samples."""
    from onnxruntime.quantization.calibrate import CalibrationMethod, create_calibrator

    calibrator = create_calibrator(str(model), augmented_model_path=str(workdir / "ranges-augmented.onnx"),
                                   calibrate_method=CalibrationMethod.MinMax)
    calibrator.collect_data(ListReader(samples))
    data = calibrator.compute_data()
    out = {}
    for name in data:
        lo, hi = data[name].range_value
        out[name] = (float(np.asarray(lo).min()), float(np.asarray(hi).max()))
    return out


def extreme_range_nodes(model: Path, samples: list[Inputs], workdir: Path, limit: float = 1e5) -> dict[str, float]:
    """Node name → largest |value| it touches, for nodes reading or writing a tensor beyond ``limit``."""
    import onnx

    ranges = tensor_ranges(model, samples, workdir)
    extreme = {t: max(abs(lo), abs(hi)) for t, (lo, hi) in ranges.items() if max(abs(lo), abs(hi)) > limit}
    nodes = {}
    for node in onnx.load(str(model), load_external_data=False).graph.node:
        touched = [extreme[t] for t in (*node.input, *node.output) if t in extreme]
        if touched:
            nodes[node.name] = max(touched)
    return nodes


def activation_matmuls(model: Path) -> list[str]:
    """MatMul nodes neither of whose inputs is a constant (attention's Q·Kᵀ and P·V in transformers)."""
    import onnx

    graph = onnx.load(str(model), load_external_data=False).graph
    constants = {i.name for i in graph.initializer}
    constants |= {o for n in graph.node if n.op_type == "Constant" for o in n.output}
    return [n.name for n in graph.node if n.op_type == "MatMul" and not any(i in constants for i in n.input)]


_WEIGHT_INPUT = {"MatMul": 1, "Gemm": 1, "Conv": 1}
_CHANNEL_AXIS = {"MatMul": 1, "Conv": 0}


def weight_only_int8(model: Any, node_names: list[str]) -> list[str]:
    """Replace the float weight of each named node by INT8 + per-channel DequantizeLinear (in place).

    Returns the node names actually converted (nodes without an initializer weight are skipped).
    """
    from onnx import helper, numpy_helper

    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    users: dict[str, int] = {}
    for node in graph.node:
        for name in node.input:
            users[name] = users.get(name, 0) + 1
    done = []
    ordered = []
    for node in graph.node:
        idx = _WEIGHT_INPUT.get(node.op_type)
        if node.name not in node_names or idx is None or len(node.input) <= idx or node.input[idx] not in inits:
            ordered.append(node)
            continue
        weight_name = node.input[idx]
        w = numpy_helper.to_array(inits[weight_name]).astype(np.float32)
        if node.op_type == "Gemm":
            trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
            axis = 0 if trans_b else 1
        else:
            axis = _CHANNEL_AXIS[node.op_type]
        reduce_axes = tuple(a for a in range(w.ndim) if a != axis)
        scale = (np.abs(w).max(axis=reduce_axes) / 127.0).astype(np.float32)
        scale = np.where(scale > 0, scale, np.float32(1e-8)).astype(np.float32)
        shape = [1] * w.ndim
        shape[axis] = -1
        q = np.clip(np.round(w / scale.reshape(shape)), -127, 127).astype(np.int8)
        base = f"{node.name}_{weight_name}_wo8"
        graph.initializer.extend([numpy_helper.from_array(q, base + "_q"), numpy_helper.from_array(scale, base + "_s"),
                                  numpy_helper.from_array(np.zeros_like(scale, dtype=np.int8), base + "_zp")])
        ordered.append(helper.make_node("DequantizeLinear", [base + "_q", base + "_s", base + "_zp"], [base],
                                        name=base + "_dq", axis=axis))
        node.input[idx] = base
        users[weight_name] -= 1
        ordered.append(node)
        done.append(node.name)
    del graph.node[:]
    graph.node.extend(ordered)
    unused = [i for i in graph.initializer if users.get(i.name, 1) == 0]
    for init in unused:
        graph.initializer.remove(init)
    return done


def float_activation_inputs(model: Any, node_names: list[str]) -> list[str]:
    """Give the named nodes their activation inputs in float: ``DQ(Q(x))`` → ``Clip(x, lo, hi)`` (in place).

    Excluding a node from ORT's quantiser does not stop the *producer's* output from being
    quantised, so its input would still carry 8-bit noise. The Clip keeps what the Q/DQ pair also
    did on purpose — clamp to the calibrated range, which is how ORT folds a removed ReLU/ReLU6 —
    and drops only the rounding. Returns the nodes changed.
    """
    from onnx import helper, numpy_helper

    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    producer = {o: n for n in graph.node for o in n.output}
    wanted = set(node_names)
    ordered, changed = [], []
    for node in graph.node:
        if node.name in wanted:
            for idx, name in enumerate(node.input):
                dq = producer.get(name)
                if dq is None or dq.op_type != "DequantizeLinear" or dq.input[0] in inits:
                    continue
                q = producer.get(dq.input[0])
                if q is None or q.op_type != "QuantizeLinear" or q.input[1] not in inits:
                    continue
                scale = float(numpy_helper.to_array(inits[q.input[1]]).reshape(-1)[0])
                zp_arr = numpy_helper.to_array(inits[q.input[2]]) if len(q.input) > 2 and q.input[2] in inits \
                    else np.zeros(1, np.uint8)
                info = np.iinfo(zp_arr.dtype)
                zp = float(zp_arr.reshape(-1)[0])
                base = f"{node.name}_in{idx}_float"
                graph.initializer.extend([numpy_helper.from_array(np.array((info.min - zp) * scale, np.float32),
                                                                  base + "_lo"),
                                          numpy_helper.from_array(np.array((info.max - zp) * scale, np.float32),
                                                                  base + "_hi")])
                ordered.append(helper.make_node("Clip", [q.input[0], base + "_lo", base + "_hi"], [base],
                                                name=base + "_clip"))
                node.input[idx] = base
                if node.name not in changed:
                    changed.append(node.name)
        ordered.append(node)
    del graph.node[:]
    graph.node.extend(ordered)
    return changed
