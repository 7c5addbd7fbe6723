"""INT8 static post-training quantisation with ONNX Runtime (QDQ, per-channel weights).

U8 activations / S8 weights in QDQ form: the fast combination on x86 VNNI and ARM dot-product
CPUs (S8S8 QDQ was measured slow on x86). ``quant_pre_process`` (shape inference + graph
optimisation) runs first, as ORT recommends, and falls back to ONNX-only shape inference when the
symbolic shape inference cannot handle a graph. ``reduce_range`` (7-bit weights) is for targets
without VNNI / dot-product, where the 16-bit accumulation of u8×s8 could saturate.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar, Literal

from controller.compression.config import CompressionConfig, check_range, register_handler
from controller.compression.source import Inputs, ModelSource


def _default_samples() -> int:
    return int(os.environ.get("CALIBRATION_SAMPLES", "128"))


@dataclasses.dataclass(frozen=True)
class Int8StaticConfig(CompressionConfig):
    """Static INT8 QDQ quantisation calibrated on real inputs.

    Attributes:
        calibration_method: ``minmax`` (fast, default), ``entropy`` or ``percentile``.
        calibration_samples: how many calibration inputs to run (env ``CALIBRATION_SAMPLES``).
        per_channel: per-output-channel weight scales (much better for depthwise convs).
        reduce_range: 7-bit weights for CPUs without VNNI / dot-product.
        percentile: clipping percentile for ``percentile`` calibration.
        exclude_nodes: node names kept in float (per-layer fallback, see ``mixed``).
        op_types: restrict quantisation to these op types (empty = ORT's defaults).
    """

    technique: ClassVar[str] = "int8-static"
    calibration_method: Literal["minmax", "entropy", "percentile"] = "minmax"
    calibration_samples: int = dataclasses.field(default_factory=_default_samples)
    per_channel: bool = True
    reduce_range: bool = False
    percentile: float = 99.999
    exclude_nodes: tuple[str, ...] = ()
    op_types: tuple[str, ...] = ()
    version: int = 1

    def _validate(self) -> None:
        check_range("calibration_samples", self.calibration_samples, 1, 100_000)
        check_range("percentile", self.percentile, 90.0, 100.0)


class _Reader:
    """ORT CalibrationDataReader over per-sample dicts, reporting progress as it is consumed."""

    def __init__(self, samples: list[Inputs], progress: Callable[[float, str], None]) -> None:
        self.samples, self.i, self.progress = samples, 0, progress

    def get_next(self) -> Inputs | None:
        if self.i >= len(self.samples):
            return None
        self.i += 1
        if self.i % max(1, len(self.samples) // 10) == 0:
            self.progress(self.i / len(self.samples), f"calibrating {self.i}/{len(self.samples)}")
        return self.samples[self.i - 1]

    def rewind(self) -> None:
        self.i = 0


def preprocess(src: Path, dst: Path) -> Path:
    """ORT's ``quant_pre_process``; retry without symbolic shape inference where that fails."""
    import logging

    from onnxruntime.quantization.shape_inference import quant_pre_process

    try:
        quant_pre_process(str(src), str(dst), skip_symbolic_shape=False)
    except Exception as exc:  # symbolic shape inference is brittle on some graphs
        logging.getLogger(__name__).info("quant_pre_process symbolic shapes failed (%s); retrying without", exc)
        quant_pre_process(str(src), str(dst), skip_symbolic_shape=True)
    return dst


def quantize_qdq(src: Path, dst: Path, samples: list[Inputs], config: Int8StaticConfig, workdir: Path,
                 progress: Callable[[float, str], None]) -> dict[str, Any]:
    """Pre-process and static-quantise ``src`` to ``dst``; returns what was quantised."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    pre = preprocess(src, workdir / "preprocessed.onnx")
    method = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
              "percentile": CalibrationMethod.Percentile}[config.calibration_method]
    extra: dict[str, Any] = {"CalibTensorRangeSymmetric": False}
    if config.calibration_method == "percentile":
        extra["CalibPercentile"] = config.percentile
    quantize_static(
        str(pre), str(dst), _Reader(samples, progress),
        quant_format=QuantFormat.QDQ,
        per_channel=config.per_channel,
        reduce_range=config.reduce_range,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        calibrate_method=method,
        nodes_to_exclude=list(config.exclude_nodes),
        op_types_to_quantize=list(config.op_types) or None,
        extra_options=extra,
    )
    return {"calibration_samples": len(samples), "excluded_nodes": list(config.exclude_nodes),
            "quantized_ops": quantized_op_counts(dst)}


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
    if config.per_channel is False:
        ctx.warn("per-tensor weight scales: expect lower quality on depthwise convolutions")
    return report
