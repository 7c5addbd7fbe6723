"""Tiny models built in the test (no zoo, no download) that exercise the converters' real paths."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn


class TinyCnn(nn.Module):
    """Conv-BN-ReLU, depthwise conv, pooling, linear: the MobileNet building blocks in miniature."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.dw = nn.Sequential(nn.Conv2d(16, 16, 3, padding=1, groups=16), nn.ReLU6())
        self.head = nn.Linear(16, 10)

    def forward(self, x):
        return self.head(self.dw(self.stem(x)).mean((2, 3)))


class TinyEncoder(nn.Module):
    """Token ids + attention mask → pooled, normalised embedding: the MiniLM signature in miniature."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(1000, 32)
        self.ff = nn.Sequential(nn.Linear(32, 64), nn.GELU(), nn.Linear(64, 32))
        self.norm = nn.LayerNorm(32)

    def forward(self, input_ids, attention_mask):
        h = self.norm(self.emb(input_ids) + self.ff(self.emb(input_ids)))
        mask = attention_mask.unsqueeze(-1).to(h.dtype)
        pooled = (h * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        return torch.nn.functional.normalize(pooled, dim=-1)


class Bessel(nn.Module):
    """Has an op (special_bessel_j0) that no mobile converter lowers, inside a named submodule."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(8, 8)
        self.act = _BesselAct()

    def forward(self, x):
        return self.act(self.proj(x))


class _BesselAct(nn.Module):
    def forward(self, x):
        return torch.special.bessel_j0(x)


@pytest.fixture(scope="session")
def tiny_cnn():
    torch.manual_seed(0)
    model = TinyCnn().eval()
    with torch.no_grad():  # non-trivial BN statistics so folding is actually exercised
        model.stem[1].running_mean.uniform_(-0.5, 0.5)
        model.stem[1].running_var.uniform_(0.5, 2.0)
    return model, (torch.randn(1, 3, 16, 16),)


@pytest.fixture(scope="session")
def tiny_encoder():
    torch.manual_seed(0)
    ids = torch.randint(0, 1000, (1, 12))
    return TinyEncoder().eval(), (ids, torch.ones(1, 12, dtype=torch.int64))


@pytest.fixture(scope="session")
def bessel_model():
    torch.manual_seed(0)
    return Bessel().eval(), (torch.randn(1, 8),)


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
