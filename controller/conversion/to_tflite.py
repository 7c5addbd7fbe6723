"""TFLite target: torch → ``.tflite`` through litert-torch (no TensorFlow), run with ai-edge-litert.

Precisions:
* ``fp32``: straight conversion.
* ``fp16``: FP32 conversion, then ai-edge-quantizer's float-casting recipe stores
  weights as FP16 (half the download; XNNPACK computes in FP16 where the CPU has it).
* ``int8-dynamic``: dynamic-range INT8 (ai-edge-quantizer ``dynamic_wi8_afp32``): INT8
  weights, activations quantized on the fly by the kernels. The fallback for models
  whose activations do not survive full-integer INT8 (transformers: LayerNorm, GELU,
  softmax), at near-INT8 size and most of its speed.
* ``int8``: full-integer static quantization with the PT2E flow (litert-torch's
  XNNPACK-style quantizer, per-channel weights), calibrated on a representative
  dataset. The graph is exported *strict* (see :func:`_pt2e_graph`) so residual
  ADDs are quantized too, and by default the float32 I/O is kept: QUANTIZE /
  DEQUANTIZE at the graph edges (see :func:`_float_io_edges`). With
  ``float_io=False`` the I/O is INT8 with scale/zero-point, which
  :func:`tflite_runner` (and the agent) apply.

:func:`tflite_structure` records, per artifact, the op histogram, the ops that
compute in float, and whether XNNPACK took the whole graph — the properties the
INT8 latency depends on.

Why litert-torch rather than ONNX→TF→TFLite: no TensorFlow dependency, and the
PT2E quantizer sees the torch graph, so per-channel depthwise scales and fused
conv+relu patterns come out right for XNNPACK.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from controller.conversion.errors import ConversionError, UnsupportedOpError
from controller.conversion.registry import Artifact, ConversionContext, Runner, register_converter

if TYPE_CHECKING:
    from common.profiles import DeviceProfile
    from controller.conversion.source import SourceModel

_LOWERING = re.compile(r"Lowering not found: (\S+)|(aten\.\w+)(?:\.default)?")


@dataclass(frozen=True)
class TfliteOptions:
    """How to produce the ``.tflite`` artifact.

    Attributes:
        precision: ``fp32``, ``fp16`` (weights), ``int8-dynamic`` (weights, dynamic-range
            kernels) or ``int8`` (full integer, PT2E static).
        per_channel: per-output-channel INT8 weight scales (needed for depthwise convs).
        calibration_samples: at most this many representative samples for INT8.
        num_threads: interpreter threads for the check (the agent uses the profile's cores).
        float_io: ``int8`` only: keep float32 inputs/outputs, with QUANTIZE/DEQUANTIZE
            inside the graph (run by XNNPACK) rather than in NumPy in every caller;
            outputs are bit-identical, and a 224×224 image call is ~0.3 ms cheaper on one x86
            core. The agent and :func:`tflite_runner` accept either I/O form.
    """

    version: int = 2
    precision: Literal["fp32", "fp16", "int8-dynamic", "int8"] = "fp32"
    per_channel: bool = True
    calibration_samples: int = 64
    num_threads: int = 1
    float_io: bool = True


def tflite_runner(path: Path, num_threads: int = 1, input_names: list[str] | None = None) -> Runner:
    """Run a ``.tflite`` with ai-edge-litert, feeding inputs positionally through the default signature.

    Quantized (INT8/UINT8) I/O tensors are quantized / dequantized with their
    scale and zero point, so callers always feed and receive float32 (and
    integer token ids are cast to the tensor's int type).
    """
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=str(path), num_threads=num_threads)
    runner = interp.get_signature_runner()
    in_details = runner.get_input_details()
    out_details = runner.get_output_details()
    in_names = sorted(in_details, key=_arg_index)
    out_names = sorted(out_details, key=_arg_index)

    def run(feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        args = {}
        values = [feeds[n] for n in input_names] if input_names else list(feeds.values())
        for name, value in zip(in_names, values, strict=True):
            d = in_details[name]
            scale, zero = d["quantization"]
            if scale and np.issubdtype(d["dtype"], np.integer) and value.dtype.kind == "f":
                info = np.iinfo(d["dtype"])
                value = np.clip(np.round(value / scale) + zero, info.min, info.max)
            args[name] = np.asarray(value).astype(d["dtype"])
        res = runner(**args)
        outs = []
        for name in out_names:
            d, v = out_details[name], res[name]
            scale, zero = d["quantization"]
            outs.append((v.astype(np.float32) - zero) * scale if scale else v)
        return outs

    return run


def _arg_index(name: str) -> tuple[int, str]:
    m = re.search(r"(\d+)$", name)
    return (int(m.group(1)) if m else 0, name)


def _translate(exc: Exception, module: Any, args: tuple[Any, ...]) -> Exception:
    from controller.conversion.source import locate_torch_op

    text = str(exc)
    m = _LOWERING.search(text)
    if m:
        op = (m.group(1) or m.group(2)).removesuffix(".default")
        return UnsupportedOpError("tflite", op, locate_torch_op(module, args, op), text)
    return ConversionError(f"tflite: litert-torch failed: {type(exc).__name__}: {text[:500]}")


def _pt2e_graph(module: Any, args: tuple[Any, ...]) -> tuple[Any, str | None]:
    """The graph PT2E annotates: strict ``torch.export`` first, non-strict as the fallback.

    litert-torch's annotators for ``add``/``mul``/``cat``/pooling find their ops by the
    ``source_fn_stack`` node metadata, which only strict (dynamo) export records. Since
    torch made non-strict the default, a non-strict graph left 9 of MobileNetV2's 10
    residual ADDs in float (DEQUANTIZE → ADD → QUANTIZE): not a full-integer model.
    Modules dynamo cannot trace still convert non-strict; the returned note says that
    such ops may stay float (``tflite_structure`` then lists them).
    """
    import torch

    try:
        return torch.export.export(module, args, strict=True).module(), None
    except Exception as exc:  # noqa: BLE001 - dynamo raises many types; non-strict may still work
        note = (f"strict torch.export failed ({type(exc).__name__}); non-strict graph: add/mul/cat/pooling "
                "are not annotated and may stay float")
        return torch.export.export(module, args).module(), note


def _is_float(model: Any, node: Any) -> bool:
    """True unless ``node`` is known to be a non-float tensor (scalars become get_attr constants)."""
    if getattr(node, "op", None) == "get_attr":
        value = model
        for part in str(node.target).split("."):
            value = getattr(value, part, None)
    else:
        value = node.meta.get("val") if hasattr(node, "meta") else None
    dtype = getattr(value, "dtype", None)
    return dtype is None or dtype.is_floating_point


# An activation whose calibrated range exceeds this is not quantizable: its INT8 step would
# be > 7 800. In practice these are additive attention masks filled with finfo(float32).min.
_MAX_ACTIVATION_RANGE = 1e6


def _drop_annotations(model: Any, skip: set[str]) -> Any:
    """Remove PT2E quantization specs from integer tensors and from the nodes named in ``skip``.

    litert-torch's ``add``/``mul`` annotators match by source function, not dtype or range, so
    in a strict graph they also annotate index arithmetic (a transformer's ``arange + offset``
    position ids: calibration fails, ``"histogram_cpu" not implemented for 'Long'``) and the
    additive attention mask (range ±3.4e38: LiteRT's INT8 ADD then *aborts the process* in
    ``Prepare``). Integer tensors are exact already; ``skip`` holds nodes whose calibrated
    range is unquantizable (:func:`_unquantizable`). Specs shared with a dropped tensor go too.
    """
    from torchao.quantization.pt2e.quantizer import SharedQuantizationSpec

    dropped = {n for n in model.graph.nodes if n.name in skip or not _is_float(model, n)}

    def tied(spec: Any) -> bool:
        if not isinstance(spec, SharedQuantizationSpec):
            return False
        edge = spec.edge_or_node
        return any(n in dropped for n in (edge if isinstance(edge, tuple) else (edge,)))

    changed = True
    while changed:
        changed = False
        for node in model.graph.nodes:
            ann = node.meta.get("quantization_annotation")
            if ann is None:
                continue
            ann.input_qspec_map = {a: s for a, s in ann.input_qspec_map.items() if a not in dropped and not tied(s)}
            if ann.output_qspec is not None and (node in dropped or tied(ann.output_qspec)):
                ann.output_qspec = None
                changed |= node not in dropped
                dropped.add(node)
    return model


def _unquantizable(graph: Any) -> set[str]:
    """Names of nodes whose observed output range is non-finite or beyond ``_MAX_ACTIVATION_RANGE``."""
    import torch

    names = set()
    for node in graph.graph.nodes:
        observer = getattr(graph, str(node.target), None) if node.op == "call_module" else None
        lo, hi = getattr(observer, "min_val", None), getattr(observer, "max_val", None)
        if not isinstance(lo, torch.Tensor) or not isinstance(hi, torch.Tensor) or lo.numel() == 0:
            continue
        bound = torch.maximum(lo.abs().max(), hi.abs().max())
        if not torch.isfinite(bound) or bound > _MAX_ACTIVATION_RANGE:
            names.update(a.name for a in node.args if hasattr(a, "name"))
    return names


def _quantize_int8(module: Any, args: tuple[Any, ...], options: TfliteOptions,
                   calibration: list[dict[str, np.ndarray]], names: list[str]) -> tuple[Any, Any, list[str]]:
    """PT2E static INT8: annotate, calibrate, and recalibrate without unquantizable tensors if any."""
    import copy

    import torch
    from litert_torch.quantize import pt2e_quantizer as pq
    from litert_torch.quantize.quant_config import QuantConfig
    from torchao.quantization.pt2e import quantize_pt2e

    skip: set[str] = set()

    class FloatSafeQuantizer(pq.PT2EQuantizer):
        def annotate(self, model: Any) -> Any:
            return _drop_annotations(super().annotate(model), skip)

    quantizer = FloatSafeQuantizer().set_global(
        pq.get_symmetric_quantization_config(is_per_channel=options.per_channel, is_dynamic=False))
    exported, note = _pt2e_graph(module, args)
    notes = [note] if note else []
    for _ in range(3):  # each pass can only add names; a mask's consumers surface one pass later at most
        graph = quantize_pt2e.prepare_pt2e(copy.deepcopy(exported), quantizer)
        with torch.no_grad():
            for sample in calibration[: options.calibration_samples]:
                graph(*[torch.from_numpy(np.ascontiguousarray(sample[n])) for n in names])
        extreme = _unquantizable(graph) - skip
        if not extreme:
            break
        skip |= extreme
    if skip:
        notes.append(f"kept in float (calibrated range beyond ±{_MAX_ACTIVATION_RANGE:g}): {', '.join(sorted(skip))}")
    graph = quantize_pt2e.convert_pt2e(graph, fold_quantize=False)
    return graph, QuantConfig(pt2e_quantizer=quantizer), notes


def _dynamic_int8(src: Path, dst: Path) -> None:
    from ai_edge_quantizer import quantizer, recipe

    qt = quantizer.Quantizer(str(src), recipe.dynamic_wi8_afp32())
    qt.quantize().export_model(str(dst), overwrite=True)


def _fp16_weights(src: Path, dst: Path) -> None:
    from ai_edge_quantizer import qtyping, quantizer

    qt = quantizer.Quantizer(str(src))
    qt.update_quantization_recipe(
        regex=".*", operation_name=qtyping.TFLOperationName.ALL_SUPPORTED,
        algorithm_key=quantizer.AlgorithmName.FLOAT_CASTING,
        op_config=qtyping.OpQuantizationConfig(
            weight_tensor_config=qtyping.TensorQuantizationConfig(num_bits=16, dtype=qtyping.TensorDataType.FLOAT),
            compute_precision=qtyping.ComputePrecision.FLOAT, explicit_dequantize=True))
    qt.quantize().export_model(str(dst), overwrite=True)


@register_converter("tflite", options=TfliteOptions, needs=("litert_torch", "ai_edge_litert"))
def convert_tflite(source: SourceModel, profile: DeviceProfile, options: TfliteOptions, out: Path,
                   ctx: ConversionContext) -> Artifact:
    """Convert the torch source to ``out`` (.tflite) at ``options.precision``."""
    import litert_torch

    module, args = source.torch_program("tflite")
    out.parent.mkdir(parents=True, exist_ok=True)
    notes: list[str] = []
    try:
        if options.precision == "int8":
            if not ctx.calibration:
                raise ConversionError("tflite: int8 needs a representative dataset (calibration=)")
            graph, qcfg, quant_notes = _quantize_int8(module, args, options, ctx.calibration, source.input_names)
            edge = litert_torch.convert(graph, args, quant_config=qcfg)
            notes.append(f"PT2E static INT8, {min(len(ctx.calibration), options.calibration_samples)} "
                         f"calibration samples, per_channel={options.per_channel}")
            notes += quant_notes
        else:
            edge = litert_torch.convert(module, args)
    except (ConversionError, UnsupportedOpError):
        raise
    except Exception as exc:  # noqa: BLE001 - litert-torch raises AssertionError/RuntimeError/... on lowering
        raise _translate(exc, module, args) from exc
    if options.precision in ("fp16", "int8-dynamic"):
        fp32 = ctx.workdir / "fp32.tflite"
        edge.export(str(fp32))
        if options.precision == "fp16":
            _fp16_weights(fp32, out)
            notes.append("FP16 weights via ai-edge-quantizer float casting")
        else:
            _dynamic_int8(fp32, out)
            notes.append("dynamic-range INT8 via ai-edge-quantizer dynamic_wi8_afp32")
    else:
        edge.export(str(out))
        if options.precision == "int8" and options.float_io and (edges := _float_io_edges(out)):
            notes.append(f"float32 I/O: {edges} QUANTIZE/DEQUANTIZE edge ops inside the graph")
    runner = tflite_runner(out, options.num_threads, source.input_names)
    structure = tflite_structure(out)
    if options.precision == "int8" and structure["float_ops"]:
        notes.append(f"not full-integer: float ops {structure['float_ops']}")
    if not structure["fully_delegated"]:
        notes.append(f"XNNPACK did not take the whole graph: {structure['delegate_partitions']} partition(s), "
                     f"outside it: {structure['undelegated_ops']}")
    inputs = [{"name": s.name, "shape": list(s.shape), "dtype": s.dtype} for s in source.inputs]
    return Artifact(out, "tflite", options.precision, inputs,
                    [{"name": s.name, "shape": list(s.shape), "dtype": "float32"} for s in source.outputs],
                    runner=runner, notes=notes, structural=structure)


def _float_io_edges(path: Path) -> int:
    """Rewrite ``path`` in place so its INT8 graph inputs/outputs become float32, returning how many changed.

    litert-torch folds the PT2E input QUANTIZE / output DEQUANTIZE into INT8 graph I/O, so every
    caller quantizes in NumPy (~0.3 ms per 224×224×3 image on one x86 core, 7 % of the INT8
    inference). An explicit QUANTIZE (DEQUANTIZE) op on a new float32 tensor runs inside the
    XNNPACK partition instead and gives bit-identical results. The signature keeps its names.
    """
    from ai_edge_litert import schema_py_generated as fb
    from ai_edge_litert.tools import flatbuffer_utils as fbu

    model = fbu.read_model(str(path))
    graph = model.subgraphs[0]

    def opcode(code: int) -> int:
        for i, oc in enumerate(model.operatorCodes):
            if fbu.get_builtin_code_from_operator_code(oc) == code:
                return i
        oc = fb.OperatorCodeT()
        oc.builtinCode, oc.deprecatedBuiltinCode, oc.version = code, min(code, 127), 1  # 127: "see builtinCode"
        model.operatorCodes.append(oc)
        return len(model.operatorCodes) - 1

    def float_twin(index: int) -> int:
        old = graph.tensors[index]
        new = fb.TensorT()
        new.shape, new.shapeSignature, new.type, new.name, new.buffer = (
            old.shape, old.shapeSignature, fb.TensorType.FLOAT32, old.name, 0)  # buffer 0: the empty one
        old.name = (old.name or b"") + b"_int8"
        graph.tensors.append(new)
        return len(graph.tensors) - 1

    def quantized(index: int) -> bool:
        t = graph.tensors[index]
        return t.type == fb.TensorType.INT8 and t.quantization is not None and t.quantization.scale is not None

    remap: dict[int, int] = {}
    head, tail = [], []
    for pos, index in enumerate(graph.inputs):
        if quantized(index):
            remap[index] = graph.inputs[pos] = float_twin(index)
            head.append(_operator(fb, opcode(fb.BuiltinOperator.QUANTIZE), remap[index], index))
    for pos, index in enumerate(graph.outputs):
        if quantized(index):
            remap[index] = graph.outputs[pos] = float_twin(index)
            tail.append(_operator(fb, opcode(fb.BuiltinOperator.DEQUANTIZE), index, remap[index]))
    if not remap:
        return 0
    graph.operators = head + list(graph.operators) + tail
    for sig in model.signatureDefs or []:
        for tmap in [*(sig.inputs or []), *(sig.outputs or [])]:
            tmap.tensorIndex = remap.get(tmap.tensorIndex, tmap.tensorIndex)
    fbu.write_model(model, str(path))
    return len(remap)


def _operator(fb: Any, opcode_index: int, src: int, dst: int) -> Any:
    op = fb.OperatorT()
    op.opcodeIndex, op.inputs, op.outputs = opcode_index, [src], [dst]
    return op


_FLOAT = ("float32", "float16")


def tflite_structure(path: Path) -> dict[str, Any]:
    """What decides a ``.tflite``'s CPU speed: op histogram, float ops, XNNPACK coverage.

    * ``float_ops``: ops with a float operand, except QUANTIZE of a graph input and
      DEQUANTIZE to a graph output (the I/O edges). Empty for a full-integer model; a
      DEQUANTIZE → ADD → QUANTIZE detour inside the graph shows up as all three.
    * ``fully_delegated``: after ``allocate_tensors`` (which applies the default XNNPACK
      delegate, as the agent's interpreter does) exactly one DELEGATE node remains, it
      produces every graph output and none of its inputs is produced by a builtin op left
      outside it. Ops XNNPACK refuses (e.g. per-tensor asymmetric weights, unsupported
      ops) run on TFLite's reference kernels, several times slower, and split the graph.
    """
    from collections import Counter

    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=str(path), num_threads=1)
    interp.allocate_tensors()
    nodes = interp._get_ops_details()  # noqa: SLF001 - the interpreter's only op listing
    graph_in = {d["index"] for d in interp.get_input_details()}
    graph_out = {d["index"] for d in interp.get_output_details()}
    builtin = [n for n in nodes if n["op_name"] != "DELEGATE"]
    delegates = [n for n in nodes if n["op_name"] == "DELEGATE"]
    float_ops: Counter[str] = Counter()
    for n in builtin:
        types = [np.dtype(t).name for t in (*n["operand_types"], *n["result_types"])]
        edge = ((n["op_name"] == "QUANTIZE" and set(n["inputs"]) <= graph_in)
                or (n["op_name"] == "DEQUANTIZE" and set(n["outputs"]) <= graph_out))
        if not edge and any(t in _FLOAT for t in types):
            float_ops[n["op_name"]] += 1
    producer = {int(t): n["op_name"] for n in builtin for t in n["outputs"]}
    outside = sorted({producer[int(t)] for d in delegates for t in d["inputs"] if int(t) in producer})
    delegated_out = {int(t) for d in delegates for t in d["outputs"]}
    outside += sorted({producer[t] for t in graph_out - delegated_out if t in producer})
    return {"ops": dict(Counter(n["op_name"] for n in builtin)), "float_ops": dict(float_ops),
            "delegate_partitions": len(delegates), "undelegated_ops": outside,
            "fully_delegated": len(delegates) == 1 and not outside}
