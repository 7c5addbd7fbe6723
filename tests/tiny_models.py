"""The one factory for the tiny models tests build (seconds to export, compress and convert; no zoo, no download).

Two kinds, both real models:

- ONNX graphs built with ``onnx.helper`` (no torch): :func:`tiny_linear_onnx` (MatMul+Add+Relu,
  8→4) and :func:`tiny_mlp_onnx` (a 2-layer MLP, the API's upload);
- torch modules by name, :func:`tiny_module`: ``cnn`` (residual Conv/depthwise/Gemm, 64 channels)
  ``mlp``, ``attention-encoder`` (three BERT-layout blocks) for compression; ``mobile-cnn``
  (Conv-BN-ReLU + depthwise + ReLU6 with non-trivial BN statistics), ``token-encoder`` (ids + mask →
  normalised embedding, MiniLM's signature) and ``bessel`` (an op no mobile converter lowers) for
  conversion. Weights are seeded, so every test sees the same model.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from torch import nn


# ---------------------------------------------------------------- ONNX graphs (no torch)
def tiny_linear_onnx(path: Path, *, seed: int = 0, scale: float = 1.0) -> Path:
    """y = relu(x @ W + b) with a dynamic batch axis; ``scale`` perturbs weights (a 'degraded' model)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    w = (rng.standard_normal((8, 4)) * scale).astype(np.float32)
    b = rng.standard_normal(4).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "W"], ["h"]),
            helper.make_node("Add", ["h", "B"], ["z"]),
            helper.make_node("Relu", ["z"], ["y"]),
        ],
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])],
        initializer=[numpy_helper.from_array(w, "W"), numpy_helper.from_array(b, "B")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.write_bytes(model.SerializeToString())
    return path


def tiny_mlp_onnx(path: Path, features: int = 16, seed: int = 0) -> Path:
    """A 2-layer MLP (MatMul+Add+Relu+MatMul) with a dynamic batch axis: compresses in well under a second."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    w1 = numpy_helper.from_array(rng.standard_normal((features, 32)).astype(np.float32), "w1")
    b1 = numpy_helper.from_array(rng.standard_normal(32).astype(np.float32), "b1")
    w2 = numpy_helper.from_array(rng.standard_normal((32, 8)).astype(np.float32), "w2")
    nodes = [helper.make_node("MatMul", ["input", "w1"], ["h"]), helper.make_node("Add", ["h", "b1"], ["h1"]),
             helper.make_node("Relu", ["h1"], ["h2"]), helper.make_node("MatMul", ["h2", "w2"], ["output"])]
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("input", TensorProto.FLOAT,
                                                                            ["batch", features])],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", 8])],
                              [w1, b1, w2])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


# ---------------------------------------------------------------- torch modules (tests/tiny_torch.py)
def tiny_module(name: str, seed: int | None = 0) -> nn.Module:
    """A tiny torch model in eval mode, its weights drawn after ``torch.manual_seed(seed)`` (None: no reseed)."""
    import torch

    from tests.tiny_torch import MODULES as builders

    if name not in builders:
        raise KeyError(f"no tiny model {name!r}; known: {', '.join(builders)}")
    if seed is not None:
        torch.manual_seed(seed)
    return builders[name]().eval()
