"""FP16 weights and compute (ORT's float16 converter), with FP32 graph inputs/outputs kept.

BF16 is refused with the reason: ONNX Runtime's CPU execution provider has no BF16 kernels for
MatMul/Conv, so a BF16 graph would either fail to load or be cast back to FP32 op by op.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Literal

from controller.compression.config import CompressionConfig, TechniqueFamily, register_handler
from controller.compression.errors import UnsupportedModelError
from controller.compression.source import ModelSource


@dataclasses.dataclass(frozen=True)
class Fp16Config(CompressionConfig):
    """Half precision.

    Attributes:
        precision: ``fp16`` (``bf16`` is refused on the ORT CPU runtime, see module docstring).
        keep_io_types: keep FP32 inputs/outputs so callers and golden sets are unchanged.
        op_block_list: op types kept in FP32 (ORT's default list when empty).
    """

    technique: ClassVar[str] = "fp16"

    family: ClassVar[TechniqueFamily] = TechniqueFamily.QUANTIZE
    precision: Literal["fp16", "bf16"] = "fp16"
    keep_io_types: bool = True
    op_block_list: tuple[str, ...] = ()
    version: int = 1


@register_handler(Fp16Config)
def fp16(source: ModelSource, config: Fp16Config, ctx: Any) -> dict[str, Any]:
    """Convert weights and compute to FP16; warn when the CPU runtime makes it slower."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    from controller.compression.onnx_utils import quick_latency_ratio, topological_sort

    if config.precision == "bf16":
        raise UnsupportedModelError("bf16: ONNX Runtime's CPU execution provider has no BF16 MatMul/Conv kernels; "
                                    "use fp16 (half the size) or a runtime with BF16 support (OpenVINO, TensorRT)")
    ctx.progress(0.2, "converting to FP16")
    model = convert_float_to_float16(onnx.load(str(source.onnx_path)), keep_io_types=config.keep_io_types,
                                     op_block_list=list(config.op_block_list) or None)
    topological_sort(model.graph)  # the converter appends its input/output Casts at the end
    onnx.save(model, str(ctx.output))
    inputs, _, _ = ctx.eval_data()
    ratio = quick_latency_ratio(source.onnx_path, ctx.output, inputs)
    if ratio > 1.05:
        ctx.warn(f"FP16 runs {ratio:.2f}x the FP32 latency on this CPU (no native FP16 kernels): it halves size, "
                 "not latency; target GPUs / ARMv8.2 FP16 instead")
    return {"quick_latency_ratio": ratio}
