"""INT4 weight-only quantisation with ORT's ``MatMulNBitsQuantizer`` (block-wise, MatMulNBits kernels).

Only MatMul weights (and optionally Gather embeddings) are packed to 4 bits; Conv and Gemm
weights stay FP32, so CNNs barely shrink. The report lists every weight-bearing layer the
quantiser did *not* cover, with its parameter count, so nobody mistakes "INT4" for "all 4-bit".
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import numpy as np

from controller.compression.config import CompressionConfig, TechniqueFamily, check_choice, register_handler
from controller.compression.source import ModelSource


@dataclasses.dataclass(frozen=True)
class Int4WeightConfig(CompressionConfig):
    """Block-wise INT4 weights.

    Attributes:
        block_size: 32, 64 or 128 weights share one scale (smaller = more accurate, bigger file).
        symmetric: symmetric (no zero point) blocks.
        accuracy_level: MatMulNBits compute type (0 = default, 4 = int8 compute, fastest on CPU).
        quantize_gather: also pack Gather (embedding) tables to 4 bits.
        convert_gemm: rewrite constant-weight Gemm (torch's 2-D Linear) as MatMul + Add first so
            MatMulNBits can pack it.
    """

    technique: ClassVar[str] = "int4-weight"

    family: ClassVar[TechniqueFamily] = TechniqueFamily.QUANTIZE
    block_size: int = 32
    symmetric: bool = True
    accuracy_level: int = 4
    quantize_gather: bool = False
    convert_gemm: bool = True
    version: int = 1

    def _validate(self) -> None:
        check_choice("block_size", self.block_size, (16, 32, 64, 128, 256))
        check_choice("accuracy_level", self.accuracy_level, (0, 1, 2, 3, 4))


def _pack(model: Any, ops: tuple[str, ...], config: Int4WeightConfig, out: Any) -> None:
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    quantizer = MatMulNBitsQuantizer(model, bits=4, block_size=config.block_size, is_symmetric=config.symmetric,
                                     accuracy_level=config.accuracy_level or None, op_types_to_quantize=ops)
    quantizer.process()
    quantizer.model.save_model_to_file(str(out), use_external_data_format=False)


@register_handler(Int4WeightConfig)
def int4_weight(source: ModelSource, config: Int4WeightConfig, ctx: Any) -> dict[str, Any]:
    """Pack MatMul weights to INT4 and report what stayed in float."""
    import onnx

    from controller.compression.errors import UnsupportedModelError
    from controller.compression.onnx_utils import gemm_to_matmul, weight_nodes

    model = onnx.load(str(source.onnx_path))
    converted = gemm_to_matmul(model) if config.convert_gemm else []
    inits = {i.name: i for i in model.graph.initializer}
    candidates = weight_nodes(model, ("Conv", "MatMul", "Gemm", "Gather") if config.quantize_gather else
                              ("Conv", "MatMul", "Gemm"))
    ops = ("MatMul", "Gather") if config.quantize_gather else ("MatMul",)
    ctx.progress(0.2, f"packing {', '.join(ops)} weights to INT4 (block {config.block_size})")
    _pack(model, ops, config, ctx.output)
    try:
        onnx.checker.check_model(str(ctx.output))
        invalid = None
    except onnx.checker.ValidationError as exc:  # without Gather, the engine's own check reports it
        invalid = exc
    if invalid is not None and "Gather" in ops:
        exc = invalid
        # Packing Gather raises the opset (GatherBlockQuantized) and leaves opset-17 ops such as
        # ReduceL2 with an `axes` attribute invalid: fall back to MatMul-only and say so.
        ctx.warn(f"INT4 Gather packing produced an invalid graph ({str(exc).splitlines()[0][:120]}); "
                 "packed MatMul weights only")
        ops = ("MatMul",)
        model = onnx.load(str(source.onnx_path))
        if config.convert_gemm:
            gemm_to_matmul(model)
        _pack(model, ops, config, ctx.output)
    out_names = {n.name for n in onnx.load(str(ctx.output), load_external_data=False).graph.node
                 if n.op_type in ("MatMulNBits", "GatherBlockQuantized")}
    covered, uncovered = [], []
    for node, weight in candidates:
        params = int(np.prod(inits[weight].dims))
        # quantised nodes are replaced by MatMulNBits named "<name>_Q4" (or similar)
        if any(name.startswith(node.name) for name in out_names) and node.op_type in ops:
            covered.append({"node": node.name, "op": node.op_type, "params": params})
        else:
            reason = "op not supported by MatMulNBits" if node.op_type not in ops else "shape not packable"
            uncovered.append({"node": node.name, "op": node.op_type, "params": params, "reason": reason})
    if not covered:
        raise UnsupportedModelError(f"int4-weight found no MatMul weights to pack in {source.name}: "
                                    f"its weight ops are {sorted({c['op'] for c in uncovered})}; use int8-static")
    total = sum(c["params"] for c in covered) + sum(u["params"] for u in uncovered)
    share = sum(u["params"] for u in uncovered) / max(total, 1)
    if share > 0.2:
        ctx.warn(f"{share:.0%} of weight parameters stay FP32 (not covered by INT4): see report.uncovered")
    return {"covered": covered, "uncovered": uncovered, "uncovered_param_share": share,
            "gemm_rewritten_as_matmul": converted}
