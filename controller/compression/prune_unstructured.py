"""Unstructured magnitude pruning of ONNX weights — reported honestly.

Zeroing the smallest weights keeps every tensor dense: the ONNX file, its memory use and its
latency do **not** change on ORT (no sparse kernels). It only helps where a sparse runtime or a
compressed transfer exists, so the report gives the gzip size of both models (what a compressed
OTA download would cost) next to the unchanged dense size.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Literal

import numpy as np

from controller.compression.config import CompressionConfig, TechniqueFamily, check_range, register_handler
from controller.compression.source import ModelSource


@dataclasses.dataclass(frozen=True)
class PruneUnstructuredConfig(CompressionConfig):
    """Magnitude pruning.

    Attributes:
        sparsity: fraction of weights set to zero.
        scope: ``layer`` (same sparsity in every layer) or ``global`` (one magnitude threshold).
        op_types: weight-bearing ops to prune.
    """

    technique: ClassVar[str] = "prune-unstructured"

    family: ClassVar[TechniqueFamily] = TechniqueFamily.PRUNE
    sparsity: float = 0.5
    scope: Literal["layer", "global"] = "layer"
    op_types: tuple[str, ...] = ("Conv", "MatMul", "Gemm")
    version: int = 1

    def _validate(self) -> None:
        check_range("sparsity", self.sparsity, 0.0, 0.99)


def _gzip_size(path: Any) -> int:
    import gzip

    with open(path, "rb") as fh:
        return len(gzip.compress(fh.read(), compresslevel=6))


@register_handler(PruneUnstructuredConfig)
def prune_unstructured(source: ModelSource, config: PruneUnstructuredConfig, ctx: Any) -> dict[str, Any]:
    """Zero the smallest-magnitude weights and report dense vs compressed sizes."""
    import onnx
    from onnx import numpy_helper

    from controller.compression.onnx_utils import weight_nodes

    model = onnx.load(str(source.onnx_path))
    inits = {i.name: i for i in model.graph.initializer}
    names = sorted({w for _, w in weight_nodes(model, config.op_types)})
    arrays = {n: numpy_helper.to_array(inits[n]) for n in names}
    threshold = None
    if config.scope == "global" and arrays:
        threshold = np.quantile(np.concatenate([np.abs(a).ravel() for a in arrays.values()]), config.sparsity)
    zeros = total = 0
    for name, arr in arrays.items():
        cut = threshold if threshold is not None else np.quantile(np.abs(arr), config.sparsity)
        pruned = np.where(np.abs(arr) <= cut, 0, arr).astype(arr.dtype)
        zeros += int((pruned == 0).sum())
        total += pruned.size
        inits[name].CopyFrom(numpy_helper.from_array(pruned, name))
    onnx.save(model, str(ctx.output))
    ctx.warn("unstructured sparsity does not make the dense ONNX smaller or faster on ONNX Runtime; only a "
             "compressed download or a sparse runtime benefits (see report.gzip_size_ratio)")
    return {"sparsity": zeros / max(total, 1), "pruned_tensors": len(arrays),
            "gzip_size_ratio": _gzip_size(ctx.output) / _gzip_size(source.onnx_path)}
