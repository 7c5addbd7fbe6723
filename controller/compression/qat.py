"""Quantisation-aware training with torchao's PT2E flow, exported to ONNX QDQ with INT8 weights.

``torch.export`` → ``prepare_qat_pt2e`` (X86 inductor quantizer config, per-channel symmetric
INT8 weights, fake-quant on activations) → fine-tune on real data → ``convert_pt2e`` →
``torch.onnx.export(dynamo=True)``. Eager ``torch.ao`` QAT was measured not to export INT8 ONNX
cleanly (fused fake-quant ops), which is why this path is used.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

from controller.compression.config import CompressionConfig, TechniqueFamily, check_range, register_handler
from controller.compression.source import ModelSource


@dataclasses.dataclass(frozen=True)
class QatConfig(CompressionConfig):
    """QAT fine-tune.

    Attributes:
        epochs / lr / patience: fine-tune loop (labels where they exist, else distillation from FP32).
        max_samples: cap on training samples (training time on a 2-core CPU grows linearly).
    """

    technique: ClassVar[str] = "qat"

    family: ClassVar[TechniqueFamily] = TechniqueFamily.QUANTIZE
    needs_torch: ClassVar[bool] = True
    epochs: int = 1
    lr: float = 1e-4
    patience: int = 1
    max_samples: int = 4000
    version: int = 1

    def _validate(self) -> None:
        check_range("epochs", self.epochs, 0, 1000)
        check_range("lr", self.lr, 1e-8, 1.0)
        check_range("max_samples", self.max_samples, 8, 10_000_000)


def _batched(example: tuple[Any, ...]) -> tuple[Any, ...]:
    """Batch-2 copy of the example (batch 1 would make torch.export specialise the batch dim)."""
    import torch

    return tuple(torch.cat([t, t]) for t in example)


@register_handler(QatConfig)
def qat(source: ModelSource, config: QatConfig, ctx: Any) -> dict[str, Any]:
    """Prepare, train, convert and export an INT8 QDQ model."""
    import warnings

    import onnx
    import torch
    from torchao.quantization.pt2e import allow_exported_model_train_eval
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_qat_pt2e
    from torchao.quantization.pt2e.quantizer.x86_inductor_quantizer import (
        X86InductorQuantizer,
        get_default_x86_inductor_quantization_config,
    )

    from controller.compression import torch_tools
    from controller.compression.errors import UnsupportedModelError

    teacher = source.torch_model(config.technique)
    model = source.torch_model(config.technique)
    example = _batched(torch_tools.example_inputs(source))
    batch = torch.export.Dim("batch", min=1, max=4096)
    dynamic = tuple({0: batch} for _ in example)
    ctx.progress(0.05, "torch.export + prepare_qat_pt2e")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            exported = torch.export.export(model, example, dynamic_shapes=dynamic).module()
            quantizer = X86InductorQuantizer().set_global(get_default_x86_inductor_quantization_config(is_qat=True))
            prepared = prepare_qat_pt2e(exported, quantizer)
    except Exception as exc:  # torch.export is strict about data-dependent control flow
        raise UnsupportedModelError(f"qat: torch.export / prepare_qat_pt2e failed on {source.name}: "
                                    f"{str(exc).splitlines()[0][:300]}") from None
    allow_exported_model_train_eval(prepared)
    data = torch_tools.train_data(source, ctx, max_samples=config.max_samples, batch=32)
    history = torch_tools.fine_tune(prepared, teacher, data, metric=source.quality_metric, epochs=config.epochs,
                                    lr=config.lr, patience=config.patience,
                                    progress=lambda f, m: ctx.progress(0.1 + 0.7 * f, m))
    ctx.progress(0.85, "convert_pt2e + ONNX export")
    converted = convert_pt2e(prepared)
    names = list(source.zoo.input_names) if source.zoo else [s.name for s in source.specs]
    outputs = list(source.zoo.output_names) if source.zoo else ["output"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(converted, example, str(ctx.output), dynamo=True, external_data=False,
                          input_names=names, output_names=outputs,
                          dynamic_shapes=tuple({0: batch} for _ in example), verbose=False)
    graph = onnx.load(str(ctx.output)).graph
    int8_weights = sum(1 for i in graph.initializer if i.data_type == onnx.TensorProto.INT8)
    if int8_weights == 0:
        raise UnsupportedModelError("qat: the exported model has no INT8 weights (nothing was quantised)")
    return {"int8_weight_tensors": int8_weights, "training": history,
            "qdq_nodes": sum(1 for n in graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear"))}
