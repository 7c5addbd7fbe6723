"""INT8 dynamic quantisation (ORT): INT8 weights, activation scales computed per inference.

Good for MatMul-heavy models (transformers, LSTMs) on CPUs; on CNNs ORT's ConvInteger path was
measured 6-10× *slower* than FP32 here, so the handler times the result against FP32 and warns
(``on_slower="warn"``) or refuses (``"refuse"``) when it is slower — measured, not assumed.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Literal

from controller.compression.config import CompressionConfig, TechniqueFamily, check_range, register_handler
from controller.compression.errors import CompressionError
from controller.compression.source import ModelSource


class SlowerThanBaselineError(CompressionError):
    """The compressed model measured slower than FP32 and the config asked to refuse that."""


@dataclasses.dataclass(frozen=True)
class Int8DynamicConfig(CompressionConfig):
    """Dynamic INT8 quantisation.

    Attributes:
        op_types: op types to quantise (Conv is possible but measured slow on CPU).
        per_channel: per-channel weight scales.
        reduce_range: 7-bit weights for CPUs without VNNI / dot-product.
        on_slower: ``warn`` or ``refuse`` when the output is slower than FP32 on this machine.
        max_latency_ratio: what counts as slower (candidate p50 / FP32 p50, 1 thread, batch 1).
    """

    technique: ClassVar[str] = "int8-dynamic"

    family: ClassVar[TechniqueFamily] = TechniqueFamily.QUANTIZE
    op_types: tuple[str, ...] = ("MatMul", "Gemm", "Gather")
    per_channel: bool = True
    reduce_range: bool = False
    on_slower: Literal["warn", "refuse"] = "warn"
    max_latency_ratio: float = 1.0
    version: int = 1

    def _validate(self) -> None:
        check_range("max_latency_ratio", self.max_latency_ratio, 0.01, 100.0)


@register_handler(Int8DynamicConfig)
def int8_dynamic(source: ModelSource, config: Int8DynamicConfig, ctx: Any) -> dict[str, Any]:
    """Quantise, then time against FP32 and warn / refuse when slower."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from controller.compression.int8_static import preprocessed, quantized_op_counts
    from controller.compression.onnx_utils import quick_latency_ratio

    pre = preprocessed(source.onnx_path, ctx.workdir)
    ctx.progress(0.3, "dynamic INT8 quantisation")
    quantize_dynamic(str(pre), str(ctx.output), op_types_to_quantize=list(config.op_types),
                     per_channel=config.per_channel, reduce_range=config.reduce_range, weight_type=QuantType.QInt8)
    counts = quantized_op_counts(ctx.output)
    ctx.progress(0.7, "timing against FP32")
    inputs, _, _ = ctx.eval_data()
    ratio = quick_latency_ratio(source.onnx_path, ctx.output, inputs)
    report = {"quick_latency_ratio": ratio, "quantized_op_counts": counts}
    if ratio > config.max_latency_ratio:
        message = (f"dynamic INT8 measured {ratio:.2f}x the FP32 latency on this machine (limit "
                   f"{config.max_latency_ratio}); use int8-static for this model")
        if config.on_slower == "refuse":
            raise SlowerThanBaselineError(message)
        ctx.warn(message)
    return report
