"""The ``ZooModel`` interface every zoo entry implements."""

from __future__ import annotations

import abc
import copy
import functools
import inspect
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from controller.zoo.cache import cache_dir, cached_file, code_key
from controller.zoo.export import export_onnx

Inputs = dict[str, np.ndarray]


class ZooModel(abc.ABC):
    """A real model with its real data: FP32 ONNX, the torch module, calibration and held-out inputs.

    Every input dict holds one sample (batch dimension 1) keyed by the ONNX graph input names, so
    the same lists serve ORT calibration, evaluation, golden sets and ``.npz`` files.
    """

    name: ClassVar[str]
    quality_metric: ClassVar[str]  # "cosine" (embeddings) or "top1" (classifiers)
    input_names: ClassVar[tuple[str, ...]]
    output_names: ClassVar[tuple[str, ...]]

    # ---- torch side
    @abc.abstractmethod
    def _build_torch_model(self) -> Any:
        """Build the FP32 torch module with its pretrained / trained weights."""

    @abc.abstractmethod
    def example_inputs(self) -> tuple[Any, ...]:
        """Torch tensors used to trace the export (batch 1)."""

    def dynamic_axes(self) -> dict[str, dict[int, str]]:
        """Batch axis dynamic on every input and output, so batched latency can be measured."""
        return {name: {0: "batch"} for name in (*self.input_names, *self.output_names)}

    @functools.cached_property
    def _torch_model(self) -> Any:
        return self._build_torch_model().eval()

    def torch_model(self) -> Any:
        """A fresh FP32 copy of the torch module (eval mode) that callers may train or prune freely."""
        return copy.deepcopy(self._torch_model)

    # ---- ONNX side
    def _cache_key(self) -> str:
        import torch

        files = (Path(__file__), Path(__file__).with_name("export.py"), Path(inspect.getfile(type(self))))
        return code_key(self.name, torch.__version__, files=files)

    @property
    def onnx_path(self) -> Path:
        """FP32 ONNX (single file), exported once and cached under the zoo cache directory."""
        path = cache_dir() / "zoo" / f"{self.name}-{self._cache_key()}" / "model.onnx"
        return cached_file(path, lambda tmp: export_onnx(
            self._torch_model, self.example_inputs(), tmp, input_names=self.input_names,
            output_names=self.output_names, dynamic_axes=self.dynamic_axes()))

    # ---- data
    @abc.abstractmethod
    def calibration_inputs(self, n: int) -> list[Inputs]:
        """``n`` real inputs for calibration / fine-tuning (disjoint from :meth:`eval_inputs`)."""

    @abc.abstractmethod
    def eval_inputs(self, n: int) -> list[Inputs]:
        """``n`` real held-out inputs for quality and latency measurement."""

    def eval_labels(self, n: int) -> np.ndarray | None:
        """Ground-truth labels aligned with ``eval_inputs(n)``, where the data set has them."""
        return None

    def task_score(self, onnx_path: Path) -> dict[str, float]:
        """A downstream task metric measured with ONNX Runtime on real labelled data ({} if none)."""
        return {}

    def train_data(self) -> tuple[np.ndarray, np.ndarray] | None:
        """(inputs, labels) for gradient-based fine-tuning, where labelled training data exists."""
        return None

    def __repr__(self) -> str:
        return f"<ZooModel {self.name} metric={self.quality_metric}>"


def ort_session(path: Path | str, threads: int = 1) -> Any:
    """A deterministic single-stream ORT CPU session (used for task scores)."""
    from controller.ort_tuning import cpu_session

    return cpu_session(path, threads)
