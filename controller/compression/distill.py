"""Knowledge distillation: teacher (the FP32 model) → smaller student, response + feature losses.

* Response: KL between temperature-softened teacher and student logits (``temperature``,
  weight ``alpha`` against the label cross-entropy where labels exist), or ``1 - cosine`` for
  embedding models.
* Feature: MSE between intermediate maps of teacher and student, through a learned projection
  (1×1 conv for feature maps, linear otherwise) because the student's maps are narrower.
* Student: ``pruned`` (generic: the teacher with ``1 - width`` of its channels removed by
  torch-pruning, round_to 8, then trained) or ``narrow`` (a freshly initialised narrower
  architecture — available for the zoo's mnist-cnn).
Training stops early when the validation loss stops improving for ``patience`` epochs.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Literal

from controller.compression.config import CompressionConfig, TechniqueFamily, check_range, register_handler
from controller.compression.errors import UnsupportedModelError
from controller.compression.source import ModelSource


@dataclasses.dataclass(frozen=True)
class DistillConfig(CompressionConfig):
    """Teacher → student distillation.

    Attributes:
        student: ``pruned`` (any torch model) or ``narrow`` (mnist-cnn only).
        width: student width as a fraction of the teacher's.
        temperature: softmax temperature of the response loss.
        alpha: weight of the distillation loss vs label cross-entropy (labels only).
        feature_weight: weight of the feature loss (0 disables feature distillation).
        feature_layers: module names to match (empty = the last 3 prunable layers before the head).
        epochs / patience / lr: training loop with early stopping.
        max_samples: cap on training samples (time on a 2-core CPU grows linearly).
    """

    technique: ClassVar[str] = "distill"

    family: ClassVar[TechniqueFamily] = TechniqueFamily.DISTILL
    needs_torch: ClassVar[bool] = True
    student: Literal["pruned", "narrow"] = "pruned"
    width: float = 0.5
    temperature: float = 4.0
    alpha: float = 0.7
    feature_weight: float = 1.0
    feature_layers: tuple[str, ...] = ()
    epochs: int = 8
    patience: int = 2
    lr: float = 1e-3
    max_samples: int = 4000
    version: int = 1

    def _validate(self) -> None:
        check_range("width", self.width, 0.05, 1.0)
        check_range("temperature", self.temperature, 0.1, 100.0)
        check_range("alpha", self.alpha, 0.0, 1.0)
        check_range("feature_weight", self.feature_weight, 0.0, 1000.0)
        check_range("epochs", self.epochs, 1, 1000)


def make_student(source: ModelSource, config: DistillConfig) -> Any:
    """The untrained-or-pruned student module."""
    from controller.compression import torch_tools
    from controller.compression.prune_structured import PruneStructuredConfig, prune_model

    if config.student == "narrow":
        if source.zoo is None or source.zoo.name != "mnist-cnn":
            raise UnsupportedModelError("student='narrow' has an architecture only for mnist-cnn; use student='pruned'")
        import torch

        from controller.zoo.mnist_cnn import WIDTHS, build_mnist_cnn

        torch.manual_seed(0)
        return build_mnist_cnn(tuple(max(8, int(round(w * config.width / 8)) * 8) for w in WIDTHS))
    student = source.torch_model(config.technique)
    prune_model(student, torch_tools.example_inputs(source),
                PruneStructuredConfig(ratio=1.0 - config.width, finetune_epochs=0), None)
    return student


def _feature_layers(teacher: Any, student: Any, names: tuple[str, ...]) -> list[str]:
    from torch import nn

    t_mods, s_mods = dict(teacher.named_modules()), dict(student.named_modules())
    if names:
        missing = [n for n in names if n not in t_mods or n not in s_mods]
        if missing:
            raise UnsupportedModelError(f"feature_layers not found in teacher and student: {missing}")
        return list(names)
    prunable = [n for n, m in teacher.named_modules() if isinstance(m, nn.Conv2d | nn.Linear) and n in s_mods]
    return prunable[:-1][-3:]  # skip the head


def feature_matcher(teacher: Any, student: Any, names: list[str], example: tuple[Any, ...]) -> tuple[Any, list[Any]]:
    """Hooks + projections; returns (loss closure, projection parameters)."""
    import torch
    from torch import nn

    t_feats: dict[str, Any] = {}
    s_feats: dict[str, Any] = {}
    t_mods, s_mods = dict(teacher.named_modules()), dict(student.named_modules())
    for name in names:
        t_mods[name].register_forward_hook(lambda _m, _i, out, n=name: t_feats.__setitem__(n, out))
        s_mods[name].register_forward_hook(lambda _m, _i, out, n=name: s_feats.__setitem__(n, out))
    with torch.no_grad():
        teacher(*example)
        student(*example)
    projections = nn.ModuleDict()
    for name in names:
        t, s = t_feats[name], s_feats[name]
        key = name.replace(".", "_")
        if t.dim() == 4:
            projections[key] = nn.Conv2d(s.shape[1], t.shape[1], 1, bias=False)
        else:
            projections[key] = nn.Linear(s.shape[-1], t.shape[-1], bias=False)

    def loss() -> Any:
        total = torch.zeros(())
        for name in names:
            proj = projections[name.replace(".", "_")]
            total = total + nn.functional.mse_loss(proj(s_feats[name]), t_feats[name].detach())
        return total / max(len(names), 1)

    return loss, list(projections.parameters())


@register_handler(DistillConfig)
def distill(source: ModelSource, config: DistillConfig, ctx: Any) -> dict[str, Any]:
    """Build the student, train it against the teacher with early stopping, export it."""
    from controller.compression import torch_tools

    teacher = source.torch_model(config.technique)
    student = make_student(source, config)
    ctx.progress(0.05, f"student has {torch_tools.param_count(student)} parameters")
    data = torch_tools.train_data(source, ctx, max_samples=config.max_samples, batch=32)
    extra_loss, extra_params, layers = None, [], []
    if config.feature_weight > 0:
        layers = _feature_layers(teacher, student, config.feature_layers)
        match, extra_params = feature_matcher(teacher, student, layers, data.train[0])
        extra_loss = lambda: config.feature_weight * match()  # noqa: E731
    history = torch_tools.fine_tune(student, teacher, data, metric=source.quality_metric, epochs=config.epochs,
                                    lr=config.lr, temperature=config.temperature, alpha=config.alpha,
                                    patience=config.patience, extra_loss=extra_loss, extra_params=extra_params,
                                    progress=lambda f, m: ctx.progress(0.1 + 0.8 * f, m))
    torch_tools.export(student, source, ctx.output)
    t_params, s_params = torch_tools.param_count(teacher), torch_tools.param_count(student)
    return {"student": config.student, "teacher_params": t_params, "student_params": s_params,
            "param_ratio": s_params / t_params, "feature_layers": layers, "training": history}
