"""Torch-side plumbing for the training-based techniques: data, fine-tuning, distillation losses, export.

Fine-tuning uses real labels where the zoo has them (MNIST); otherwise it distils from the FP32
model's own outputs on the real calibration inputs (MobileNetV2 photos, MiniLM sentences, a
user's ``.npz``): KL on temperature-softened logits for classifiers, ``1 - cosine`` for
embeddings. Early stopping watches a held-apart validation slice, never the evaluation split.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from controller.compression.source import ModelSource

log = logging.getLogger(__name__)

# Without labels the student learns from the FP32 model's outputs on real calibration inputs; on a
# 2-core CPU a few hundred photos / sentences per epoch is what a job can afford.
UNLABELLED_CAP = 256


@dataclasses.dataclass
class TrainData:
    """Inputs as tuples of tensors (one per graph input) + optional labels, split train / validation."""

    train: list[tuple[Any, ...]]
    train_labels: Any | None
    val: list[tuple[Any, ...]]
    val_labels: Any | None


def _stack(samples: list[dict[str, np.ndarray]], names: list[str]) -> tuple[Any, ...]:
    import torch

    return tuple(torch.from_numpy(np.concatenate([s[n] for s in samples])) for n in names)


def train_data(source: ModelSource, ctx: Any, max_samples: int, batch: int) -> TrainData:
    """Batches for fine-tuning: labelled training data if the zoo has it, else calibration inputs."""
    import torch

    zoo = source.zoo
    labelled = zoo.train_data() if zoo is not None else None
    if labelled is not None:
        x, y = labelled
        x, y = x[:max_samples], y[:max_samples]
        n_val = max(len(x) // 10, 1)
        xt, yt = torch.from_numpy(x), torch.from_numpy(y)
        train = [(xt[i : i + batch],) for i in range(n_val, len(x), batch)]
        train_labels = [yt[i : i + batch] for i in range(n_val, len(x), batch)]
        return TrainData(train, train_labels, [(xt[:n_val],)], [yt[:n_val]])
    samples = ctx.calibration(min(max_samples, UNLABELLED_CAP))
    names = [s.name for s in source.specs]
    n_val = max(len(samples) // 8, 1)
    train = [_stack(samples[i : i + batch], names) for i in range(n_val, len(samples), batch)]
    val = [_stack(samples[i : i + batch], names) for i in range(0, n_val, batch)]
    if not train:
        train = val
    return TrainData(train, None, val, None)


def output_loss(student_out: Any, teacher_out: Any, metric: str, temperature: float) -> Any:
    """Response distillation: KL(teacher ‖ student) at ``temperature`` (classifiers) or 1 - cosine (embeddings)."""
    import torch.nn.functional as F

    if metric == "cosine":
        return (1.0 - F.cosine_similarity(student_out.flatten(1), teacher_out.flatten(1), dim=1)).mean()
    t = temperature
    return F.kl_div(F.log_softmax(student_out / t, dim=1), F.softmax(teacher_out / t, dim=1),
                    reduction="batchmean") * (t * t)


def fine_tune(
    student: Any,
    teacher: Any | None,
    data: TrainData,
    *,
    metric: str,
    epochs: int,
    lr: float,
    temperature: float = 4.0,
    alpha: float = 0.5,
    patience: int = 2,
    extra_loss: Callable[[], Any] | None = None,
    extra_params: list[Any] | None = None,
    progress: Callable[[float, str], None] | None = None,
) -> dict[str, Any]:
    """Train ``student`` (labels: CE mixed with KD by ``alpha``; no labels: KD only), early-stopping on validation.

    ``extra_loss`` is added each step (feature distillation); ``extra_params`` are trained with the
    student (projections). Returns the per-epoch validation history; the best epoch's weights are kept.
    """
    import torch
    import torch.nn.functional as F

    if epochs <= 0:
        return {"epochs": 0}
    if teacher is not None:
        teacher.eval()
    params = list(student.parameters()) + list(extra_params or [])
    opt = torch.optim.Adam(params, lr=lr)
    history: list[float] = []
    best_state, best, bad = copy.deepcopy(student.state_dict()), float("inf"), 0
    for epoch in range(epochs):
        student.train()
        for i, inputs in enumerate(data.train):
            opt.zero_grad()
            out = student(*inputs)
            loss = torch.zeros(())
            if data.train_labels is not None:
                loss = loss + (1 - alpha if teacher is not None else 1.0) * F.cross_entropy(out, data.train_labels[i])
            if teacher is not None:
                with torch.no_grad():
                    t_out = teacher(*inputs)
                loss = loss + (alpha if data.train_labels is not None else 1.0) * output_loss(out, t_out, metric,
                                                                                              temperature)
            if extra_loss is not None:
                loss = loss + extra_loss()
            loss.backward()
            opt.step()
        val = validation_loss(student, teacher, data, metric)
        history.append(val)
        if progress:
            progress((epoch + 1) / epochs, f"epoch {epoch + 1}/{epochs}: validation loss {val:.4f}")
        if val < best - 1e-6:
            best, bad, best_state = val, 0, copy.deepcopy(student.state_dict())
        else:
            bad += 1
            if bad >= patience:
                break
    student.load_state_dict(best_state)
    student.eval()
    return {"epochs": len(history), "validation_loss": history, "early_stopped": len(history) < epochs}


def validation_loss(student: Any, teacher: Any | None, data: TrainData, metric: str) -> float:
    """CE on labels where they exist, else the distillation loss against the teacher."""
    import torch
    import torch.nn.functional as F

    student.eval()
    total = 0.0
    with torch.no_grad():
        for i, inputs in enumerate(data.val):
            out = student(*inputs)
            if data.val_labels is not None:
                total += float(F.cross_entropy(out, data.val_labels[i]))
            elif teacher is not None:
                total += float(output_loss(out, teacher(*inputs), metric, 1.0))
    return total / max(len(data.val), 1)


def export(module: Any, source: ModelSource, path: Path) -> Path:
    """Export a (modified) torch module with the source model's input/output names and dynamic axes."""
    from controller.zoo.export import export_onnx

    if source.zoo is not None:
        z = source.zoo
        return export_onnx(module, z.example_inputs(), path, input_names=z.input_names, output_names=z.output_names,
                           dynamic_axes=z.dynamic_axes())
    names = [s.name for s in source.specs]
    return export_onnx(module, source.example_inputs, path, input_names=names, output_names=["output"],
                       dynamic_axes={n: {0: "batch"} for n in [*names, "output"]})


def param_count(module: Any) -> int:
    """Number of trainable scalars."""
    return int(sum(p.numel() for p in module.parameters()))


def example_inputs(source: ModelSource) -> tuple[Any, ...]:
    """Example tensors for tracing / dependency graphs."""
    return source.zoo.example_inputs() if source.zoo is not None else tuple(source.example_inputs or ())
