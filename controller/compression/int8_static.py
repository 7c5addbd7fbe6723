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
        calibration_method: ``minmax`` (fast, default), ``entropy`` or ``percentile``.
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
        quantize_activation_matmuls: also quantise MatMuls with no constant input (attention's
            Q·Kᵀ and P·V). Off by default: their per-tensor scales are re-learnt per head and the
            extra Q/DQ pairs cost more than the INT8 kernel saves (MiniLM 0.43× → 0.38× with them float).

    Node names are those of the graph after ``quant_pre_process`` (see the ``mixed`` technique's
    per-layer table for the names of a given model).
    """

    technique: ClassVar[str] = "int8-static"

    family: ClassVar[TechniqueFamily] = TechniqueFamily.QUANTIZE
    calibration_method: Literal["minmax", "entropy", "percentile"] = "minmax"
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
    version: int = 2

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


def quantize_qdq(src: Path, dst: Path, samples: list[Inputs], config: Int8StaticConfig, workdir: Path,
                 progress: Callable[[float, str], None]) -> dict[str, Any]:
    """Pre-process and static-quantise ``src`` to ``dst``; returns what was quantised and what was not."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    pre = preprocessed(src, workdir)
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
    onnx.save(model, str(dst))
    return {"calibration_samples": len(samples), "excluded_nodes": list(config.exclude_nodes),
            "weight_only_int8_nodes": weight_only, "float_activation_inputs": float_inputs,
            "weight_only_not_applied": sorted(set(config.weight_only_nodes) - set(weight_only)),
            "float_activation_matmuls": act_matmuls,
            "float_for_extreme_range": {k: float(f"{v:.3g}") for k, v in guarded.items()},
            "op_types": op_types or "onnxruntime default",
            "quantized_ops": quantized_op_counts(dst)}


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
    if report["float_for_extreme_range"]:
        ctx.warn(f"{len(report['float_for_extreme_range'])} node(s) kept in float: their tensors exceed ±1e5 "
                 "(e.g. attention masks), which 8 bits cannot represent")
    return report
