"""INT8 static post-training quantisation with ONNX Runtime (QDQ, per-channel weights).

U8 activations / S8 weights in QDQ form: the fast combination on x86 VNNI and ARM dot-product
CPUs (S8S8 QDQ was measured slow on x86). ``quant_pre_process`` (shape inference + graph
optimisation) runs first, as ORT recommends. ``reduce_range`` (7-bit weights) is for targets
without VNNI / dot-product, where the 16-bit accumulation of u8×s8 could saturate. Nodes touching
tensors with ranges no 8-bit grid can hold (attention masks) are kept in float automatically.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar, Literal

from controller.compression.config import (
    CompressionConfig,
    TechniqueFamily,
    check_range,
    default_calibration_samples,
    register_handler,
)
from controller.compression.onnx_utils import topological_sort
from controller.compression.qdq_tools import (
    ListReader,
    activation_matmuls,
    extreme_range_nodes,
    float_activation_inputs,
    preprocess,
    weight_only_int8,
)
from controller.compression.source import Inputs, ModelSource


@dataclasses.dataclass(frozen=True)
class Int8StaticConfig(CompressionConfig):
    """Static INT8 QDQ quantisation calibrated on real inputs.

    Attributes:
        calibration_method: ``minmax`` (fast, default), ``entropy``, ``percentile``, or ``auto``: each is
            run and the one with the lowest output error on a calibration split not used to calibrate
            is kept (``controller.compression.ptq_methods``; entropy only on graphs of ≤ 150 tensors).
        calibration_samples: how many calibration inputs to run (default: the ``CALIBRATION_SAMPLES`` setting).
        per_channel: per-output-channel weight scales (much better for depthwise convs).
        reduce_range: 7-bit weights for CPUs without VNNI / dot-product.
        percentile: clipping percentile for ``percentile`` calibration.
        exclude_nodes: node names kept fully in float (per-layer fallback, see ``mixed``).
        weight_only_nodes: node names whose weights are stored INT8 but whose activations stay
            float (the cheaper fallback for layers with activation outliers).
        op_types: restrict quantisation to these op types. Empty = automatic: ORT's full set for
            graphs with convolutions (quantised residual Adds and pools keep CNNs in INT8), and
            only the weight-bearing ops (MatMul, Gemm, Gather) otherwise — quantising a
            transformer's Add / LayerNorm / Mul cut MiniLM's cosine from 0.946 to 0.839.
        guard_extreme_ranges: keep nodes touching tensors beyond ±1e5 (attention masks) in float.
        float_output_ops: op types whose *outputs* stay float. ORT then runs ``DQ → MatMul`` as one
            ``MatMulIntegerToFloat`` instead of ``QLinearMatMul`` + a re-quantise + a dequantise for
            the float bias Add that follows. Measured on MiniLM: cosine 0.941 → 0.992 (the
            re-quantised FFN outputs carried the outliers) and latency 0.54× → 0.43× FP32.
        bias_correction: snap Conv/Gemm weights to the INT8 grid and fold the expected output shift
            ``(W - W_q)·E[x]`` into their biases. Off by default: on MobileNetV2 it lifts INT8-*weights*
            agreement 0.85 → 0.97, but with INT8 activations too the gain was not robust (minmax
            0.74 → 0.71, percentile 0.77 → 0.78–0.83 on 300 held-out crops).
        quantize_activation_matmuls: also quantise MatMuls with no constant input (attention's
            Q·Kᵀ and P·V). Off by default: their per-tensor scales are re-learnt per head and the
            extra Q/DQ pairs cost more than the INT8 kernel saves (MiniLM 0.43× → 0.38× with them float).

    Node names are those of the graph after ``quant_pre_process`` (see the ``mixed`` technique's
    per-layer table for the names of a given model).
    """

    technique: ClassVar[str] = "int8-static"
    speed_guarded: ClassVar[bool] = True
    family: ClassVar[TechniqueFamily] = TechniqueFamily.QUANTIZE
    calibration_method: Literal["minmax", "entropy", "percentile", "auto"] = "minmax"
    calibration_samples: int = dataclasses.field(default_factory=default_calibration_samples)
    per_channel: bool = True
    reduce_range: bool = False
    percentile: float = 99.999
    exclude_nodes: tuple[str, ...] = ()
    weight_only_nodes: tuple[str, ...] = ()
    op_types: tuple[str, ...] = ()
    guard_extreme_ranges: bool = True
    float_output_ops: tuple[str, ...] = ("MatMul", "Gemm")
    quantize_activation_matmuls: bool = False
    bias_correction: bool = False
    version: int = 3

    def _validate(self) -> None:
        check_range("calibration_samples", self.calibration_samples, 1, 100_000)
        check_range("percentile", self.percentile, 90.0, 100.0)


class _Reader(ListReader):
    """Calibration reader that reports progress as samples are consumed."""

    def __init__(self, samples: list[Inputs], progress: Callable[[float, str], None]) -> None:
        super().__init__(samples)
        self.progress = progress

    def get_next(self) -> Inputs | None:
        item = super().get_next()
        if item is not None and self.i % max(1, len(self.samples) // 10) == 0:
            self.progress(self.i / len(self.samples), f"calibrating {self.i}/{len(self.samples)}")
        return item


def preprocessed(src: Path, workdir: Path) -> Path:
    """The job's ``quant_pre_process`` output, computed once per work dir."""
    pre = workdir / "preprocessed.onnx"
    return pre if pre.exists() else preprocess(src, pre)


def opset_for(src: Path, config: Int8StaticConfig, workdir: Path) -> tuple[Path, Int8StaticConfig, dict[str, Any]]:
    """The source at an opset the config can be written in, or per-tensor weights when it cannot be raised.

    Computed once per work dir (``mixed`` quantises the same source many times).
    """
    import json

    from controller.compression.opset import PER_CHANNEL_MIN_OPSET, ensure_opset

    if not config.per_channel:
        return src, config, {}
    record = workdir / "opset.json"
    if record.exists():
        info = json.loads(record.read_text())
    else:
        _path, info = ensure_opset(src, PER_CHANNEL_MIN_OPSET, workdir)
        record.write_text(json.dumps(info))
    if info.get("converted"):
        return workdir / f"opset{PER_CHANNEL_MIN_OPSET}.onnx", config, info
    if info["from"] < PER_CHANNEL_MIN_OPSET:
        info["fallback"] = "per-tensor weights (per-channel QDQ needs opset 13)"
        return src, dataclasses.replace(config, per_channel=False), info
    return src, config, info


def quantize_qdq(src: Path, dst: Path, samples: list[Inputs], config: Int8StaticConfig, workdir: Path,
                 progress: Callable[[float, str], None]) -> dict[str, Any]:
    """Pre-process and static-quantise ``src`` to ``dst``; returns what was quantised and what was not."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    if config.calibration_method == "auto":
        return _auto_range(src, dst, samples, config, workdir, progress)
    src, config, opset = opset_for(src, config, workdir)
    pre = preprocessed(src, workdir)
    _check_node_names(pre, src, config)
    corrected = _bias_corrected(pre, samples, config, workdir)
    if corrected:
        pre = workdir / corrected["path"]
    guarded = extreme_range_nodes(pre, samples[:8], workdir) if config.guard_extreme_ranges else {}
    act_matmuls = [] if config.quantize_activation_matmuls else activation_matmuls(pre)
    exclude = sorted({*config.exclude_nodes, *config.weight_only_nodes, *guarded, *act_matmuls})
    op_types = list(config.op_types) or auto_op_types(pre)
    method = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
              "percentile": CalibrationMethod.Percentile}[config.calibration_method]
    extra: dict[str, Any] = {"CalibTensorRangeSymmetric": False,
                             "OpTypesToExcludeOutputQuantization": list(config.float_output_ops)}
    if config.calibration_method == "percentile":
        extra["CalibPercentile"] = config.percentile
    quantized = workdir / "quantized.onnx"
    quantize_static(
        str(pre), str(quantized), _Reader(samples, progress),
        quant_format=QuantFormat.QDQ,
        per_channel=config.per_channel,
        reduce_range=config.reduce_range,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        calibrate_method=method,
        nodes_to_exclude=exclude,
        op_types_to_quantize=op_types,
        extra_options=extra,
    )
    model = onnx.load(str(quantized))
    float_inputs = float_activation_inputs(model, [*config.exclude_nodes, *config.weight_only_nodes])
    weight_only = weight_only_int8(model, list(config.weight_only_nodes)) if config.weight_only_nodes else []
    topological_sort(model.graph)  # ORT appends Q/DQ of an If's outputs after their consumers (silero VAD)
    onnx.save(model, str(dst))
    return {"calibration_samples": len(samples), "excluded_nodes": list(config.exclude_nodes),
            "weight_only_int8_nodes": weight_only, "float_activation_inputs": float_inputs,
            "weight_only_not_applied": sorted(set(config.weight_only_nodes) - set(weight_only)),
            "float_activation_matmuls": act_matmuls,
            "float_for_extreme_range": {k: float(f"{v:.3g}") for k, v in guarded.items()},
            "op_types": op_types or "onnxruntime default", "per_channel": config.per_channel,
            **({"opset": opset} if opset.get("converted") or opset.get("fallback") else {}),
            **({"bias_correction": corrected} if corrected else {}),
            "quantized_ops": quantized_op_counts(dst)}


def _bias_corrected(pre: Path, samples: list[Inputs], config: Int8StaticConfig, workdir: Path) -> dict[str, Any]:
    """Bias-corrected copy of the pre-processed model (once per work dir and grid), or {} when off / no target."""
    import json

    from controller.compression.ptq_methods import bias_correct

    if not config.bias_correction:
        return {}
    name = f"bias-corrected-{'pc' if config.per_channel else 'pt'}{'-rr' if config.reduce_range else ''}"
    record = workdir / f"{name}.json"
    if record.exists():
        return json.loads(record.read_text())
    info = bias_correct(pre, workdir / f"{name}.onnx", samples[:32], per_channel=config.per_channel,
                        reduce_range=config.reduce_range)
    info = {**info, "path": f"{name}.onnx"} if info["layers"] else {}
    record.write_text(json.dumps(info))
    return info


# ORT's entropy calibrator searches a threshold per tensor in Python: on a 379-tensor CTC recogniser it ran for
# more than 5 minutes. ``auto`` tries it only on graphs up to this many node outputs.
ENTROPY_MAX_TENSORS = 150


def _auto_range(src: Path, dst: Path, samples: list[Inputs], config: Int8StaticConfig, workdir: Path,
                progress: Callable[[float, str], None]) -> dict[str, Any]:
    """Calibrate with MinMax, Percentile and Entropy; keep the lowest output error on a held-back calibration split."""
    import shutil

    from controller.compression.ptq_methods import output_error

    split = max(4, len(samples) // 4)
    calib, check = (samples[:-split], samples[-split:]) if len(samples) >= 16 else (samples, samples)
    pre_src = src
    trials = {}
    methods = ["minmax", "percentile"]
    if _activation_count(src) <= ENTROPY_MAX_TENSORS:
        methods.append("entropy")
    for i, method in enumerate(methods):
        out = workdir / f"auto-{method}.onnx"
        progress(i / len(methods), f"range search: {method}")
        report = quantize_qdq(pre_src, out, calib, dataclasses.replace(config, calibration_method=method), workdir,
                              lambda f, m: None)
        trials[method] = (output_error(workdir / "preprocessed.onnx", out, check), report)
    best = min(trials, key=lambda m: trials[m][0])
    shutil.copy(workdir / f"auto-{best}.onnx", dst)
    report = dict(trials[best][1])
    report["range_search"] = {"chosen": best, "samples_calibrated": len(calib), "samples_scored": len(check),
                              "scored_on": "calibration split not used to calibrate" if check is not calib
                              else "calibration samples (fewer than 16 given)",
                              "output_nmse": {m: round(v[0], 6) for m, v in trials.items()},
                              **({} if "entropy" in trials else {"entropy_skipped": f"more than {ENTROPY_MAX_TENSORS} "
                                                                 "activation tensors (ORT's entropy search is slow)"})}
    return report


def _activation_count(model: Path) -> int:
    import onnx

    return sum(len(n.output) for n in onnx.load(str(model), load_external_data=False).graph.node)


def _check_node_names(pre: Path, src: Path, config: Int8StaticConfig) -> None:
    """Refuse node names that are in neither the source graph nor the pre-processed one (a typo would
    otherwise silently quantise the layer the user meant to protect)."""
    import onnx

    from controller.compression.errors import InvalidConfigError

    wanted = {*config.exclude_nodes, *config.weight_only_nodes}
    if not wanted:
        return
    known = {n.name for p in (pre, src) for n in onnx.load(str(p), load_external_data=False).graph.node}
    unknown = sorted(wanted - known)
    if unknown:
        sample = ", ".join(sorted(known)[:8])
        raise InvalidConfigError(f"exclude_nodes/weight_only_nodes name node(s) not in the graph: {unknown}; node "
                                 f"names look like: {sample} … (the 'mixed' technique's per-layer table lists them)")


def auto_op_types(model: Path) -> list[str] | None:
    """ORT's defaults (None) for conv nets; weight-bearing ops only for everything else."""
    import onnx

    ops = {n.op_type for n in onnx.load(str(model), load_external_data=False).graph.node}
    return None if "Conv" in ops else ["MatMul", "Gemm", "Gather"]


def quantized_op_counts(path: Path) -> dict[str, int]:
    """Op type → number of nodes fed by a DequantizeLinear (i.e. running on quantised data)."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    dq_outputs = {o for n in graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    counts: dict[str, int] = {}
    for node in graph.node:
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear") and any(i in dq_outputs for i in node.input):
            counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return dict(sorted(counts.items()))


@register_handler(Int8StaticConfig)
def int8_static(source: ModelSource, config: Int8StaticConfig, ctx: Any) -> dict[str, Any]:
    """Calibrate on real data and write the QDQ INT8 model."""
    samples = ctx.calibration(config.calibration_samples)
    ctx.progress(0.05, f"calibrating on {len(samples)} samples ({config.calibration_method})")
    report = quantize_qdq(source.onnx_path, ctx.output, samples, config, ctx.workdir,
                          lambda f, m: ctx.progress(0.05 + 0.9 * f, m))
    if report["weight_only_not_applied"]:
        ctx.warn(f"weight_only_nodes without an initializer weight (left in float): "
                 f"{report['weight_only_not_applied']}")
    opset = report.get("opset") or {}
    if opset.get("fallback"):
        ctx.warn(f"the model's opset {opset['from']} could not be raised to {opset['required']} "
                 f"({opset.get('error')}): quantised with {opset['fallback']}")
    if report["float_for_extreme_range"]:
        ctx.warn(f"{len(report['float_for_extreme_range'])} node(s) kept in float: their tensors exceed ±1e5 "
                 "(e.g. attention masks), which 8 bits cannot represent")
    return report
