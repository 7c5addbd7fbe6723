"""Tiny models built in the tests (seconds to export and compress) and their calibration data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest


def _tiny_cnn():
    import torch
    from torch import nn

    class TinyCnn(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(3, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(),
                                      nn.Conv2d(64, 64, 3, padding=1), nn.ReLU())
            self.block = nn.Sequential(nn.Conv2d(64, 64, 3, padding=1, groups=64), nn.ReLU(), nn.Conv2d(64, 64, 1))
            self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 256), nn.ReLU(),
                                      nn.Linear(256, 10))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = self.stem(x)
            return self.head(x + self.block(x))

    torch.manual_seed(0)
    return TinyCnn().eval()


def _tiny_mlp():
    import torch
    from torch import nn

    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(32, 128), nn.GELU(), nn.Linear(128, 128), nn.GELU(), nn.Linear(128, 16)).eval()


def _tiny_encoder():
    """Three self-attention blocks under ``encoder.layer`` (BERT's layout): activation×activation MatMuls."""
    import torch
    from torch import nn

    class Block(nn.Module):
        def __init__(self, d: int = 32) -> None:
            super().__init__()
            self.q, self.k, self.v, self.o = (nn.Linear(d, d) for _ in range(4))
            self.ffn = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d))
            self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            att = torch.softmax(self.q(x) @ self.k(x).transpose(1, 2) / 32 ** 0.5, dim=-1) @ self.v(x)
            x = self.ln1(x + self.o(att))
            return self.ln2(x + self.ffn(x))

    class Encoder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.layer = nn.ModuleList(Block() for _ in range(3))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            for block in self.layer:
                x = block(x)
            return x

    class TinyEncoder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.encoder = Encoder()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.encoder(x).mean(1)

    torch.manual_seed(0)
    return TinyEncoder().eval()


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    """name → {onnx, npz, module, example, inputs}: a small CNN (Conv/depthwise/Gemm), an MLP (MatMul) and a
    three-block attention encoder."""
    import torch

    from controller.zoo.export import export_onnx

    root = tmp_path_factory.mktemp("tiny")
    rng = np.random.default_rng(0)
    out = {}
    for name, module, shape in (("cnn", _tiny_cnn(), (1, 3, 16, 16)), ("mlp", _tiny_mlp(), (1, 32)),
                                ("encoder", _tiny_encoder(), (1, 8, 32))):
        example = torch.from_numpy(rng.standard_normal(shape).astype(np.float32))
        path = export_onnx(module, (example,), root / f"{name}.onnx", input_names=["input"], output_names=["output"],
                           dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}})
        samples = rng.standard_normal((48, *shape[1:])).astype(np.float32)
        npz = root / f"{name}-calib.npz"
        np.savez(npz, input=samples)
        out[name] = {"onnx": path, "npz": npz, "module": module, "example": example,
                     "inputs": [{"input": s[None]} for s in samples]}
    return out


@pytest.fixture
def out_dir(tmp_path: Path) -> Path:
    return tmp_path / "out"
