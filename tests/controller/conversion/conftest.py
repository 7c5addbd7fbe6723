"""Tiny models built in the test (no zoo, no download) that exercise the converters' real paths."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.tiny_models import tiny_module

torch = pytest.importorskip("torch")
nn = torch.nn


@pytest.fixture(scope="session")
def tiny_cnn():
    return tiny_module("mobile-cnn"), (torch.randn(1, 3, 16, 16),)


@pytest.fixture(scope="session")
def tiny_encoder():
    torch.manual_seed(0)
    ids = torch.randint(0, 1000, (1, 12))
    return tiny_module("token-encoder", seed=None), (ids, torch.ones(1, 12, dtype=torch.int64))


@pytest.fixture(scope="session")
def bessel_model():
    return tiny_module("bessel"), (torch.randn(1, 8),)


@pytest.fixture(scope="session")
def tiny_cnn_onnx(tiny_cnn, tmp_path_factory) -> Path:
    model, args = tiny_cnn
    path = tmp_path_factory.mktemp("onnx") / "tiny_cnn.onnx"
    torch.onnx.export(model, args, str(path), dynamo=False, input_names=["input"], output_names=["output"],
                      dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}}, opset_version=17)
    return path


@pytest.fixture(scope="session")
def custom_op_onnx(tmp_path_factory) -> Path:
    """An ONNX graph with a node from a custom domain no runtime knows: 'block3/mystery'."""
    import onnx
    from onnx import TensorProto, helper

    nodes = [helper.make_node("Relu", ["input"], ["r"], name="block1/relu"),
             helper.make_node("MysteryOp", ["r"], ["output"], name="block3/mystery", domain="example.ops")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("example.ops", 1)])
    path = tmp_path_factory.mktemp("onnx") / "custom.onnx"
    onnx.save(model, str(path))
    return path


def cnn_golden(n: int = 6, seed: int = 1) -> dict[str, np.ndarray]:
    """Golden images with a fixed seed (positive-ish, like normalised photos)."""
    rng = np.random.default_rng(seed)
    return {"input": rng.standard_normal((n, 3, 16, 16)).astype(np.float32)}
