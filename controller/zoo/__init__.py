"""The real, offline model zoo: ``load(name)`` returns a :class:`ZooModel` with its data.

Example:
    >>> from controller import zoo
    >>> m = zoo.load("mobilenetv2")
    >>> m.onnx_path                     # FP32 ONNX, exported once and cached
    >>> m.calibration_inputs(64)        # [{"input": float32[1,3,224,224]}, ...] real photos
    >>> m.eval_inputs(300), m.quality_metric   # held-out photos, "top1"

Models: ``minilm`` (all-MiniLM-L6-v2 sentence embeddings, metric "cosine"), ``mobilenetv2``
(ImageNet, "top1"), ``mnist-cnn`` (trained here on real MNIST, "top1", with labels). Everything is
offline; the cache directory is ``$EDGEFLEET_CACHE`` (default ``~/.cache/edgefleet``).
"""

from __future__ import annotations

import functools

from common.errors import NotFoundError
from controller.zoo.base import Inputs, ZooModel
from controller.zoo.cache import cache_dir

__all__ = ["ZOO_NAMES", "Inputs", "UnknownZooModelError", "ZooModel", "cache_dir", "load"]

ZOO_NAMES = ("minilm", "mobilenetv2", "mnist-cnn")


class UnknownZooModelError(NotFoundError, KeyError):
    """Raised for a zoo name that does not exist; the message lists the ones that do."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else super().__str__()


@functools.cache
def load(name: str) -> ZooModel:
    """The zoo model called ``name`` (one shared instance per process, so exports and data are reused)."""
    if name == "minilm":
        from controller.zoo.minilm import MiniLMZoo

        return MiniLMZoo()
    if name == "mobilenetv2":
        from controller.zoo.mobilenetv2 import MobileNetV2Zoo

        return MobileNetV2Zoo()
    if name == "mnist-cnn":
        from controller.zoo.mnist_cnn import MnistCnnZoo

        return MnistCnnZoo()
    raise UnknownZooModelError(f"unknown zoo model {name!r}; available: {', '.join(ZOO_NAMES)}")
