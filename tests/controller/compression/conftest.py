"""Tiny models built in the tests (seconds to export and compress) and their calibration data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.tiny_models import tiny_module


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    """name → {onnx, npz, module, example, inputs}: a small CNN (Conv/depthwise/Gemm), an MLP (MatMul) and a
    three-block attention encoder."""
    import torch

    from controller.zoo.export import export_onnx

    root = tmp_path_factory.mktemp("tiny")
    rng = np.random.default_rng(0)
    out = {}
    for name, module, shape in (("cnn", tiny_module("cnn"), (1, 3, 16, 16)), ("mlp", tiny_module("mlp"), (1, 32)),
                                ("encoder", tiny_module("attention-encoder"), (1, 8, 32))):
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
