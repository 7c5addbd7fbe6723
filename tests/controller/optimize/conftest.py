"""Tiny models for optimiser tests: seconds per trial, real ONNX Runtime measurements."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.tiny_models import tiny_module


@pytest.fixture(scope="session")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    """name → {onnx, calib (npz), eval (npz with labels), module, example} for an MLP and a small CNN."""
    import torch

    from controller.zoo.export import export_onnx

    root = tmp_path_factory.mktemp("opt-tiny")
    rng = np.random.default_rng(1)
    out = {}
    for name, module, shape in (("mlp", tiny_module("mlp"), (1, 32)), ("cnn", tiny_module("cnn"), (1, 3, 16, 16))):
        example = torch.from_numpy(rng.standard_normal(shape).astype(np.float32))
        path = export_onnx(module, (example,), root / f"{name}.onnx", input_names=["input"], output_names=["output"],
                           dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}})
        calib = root / f"{name}-calib.npz"
        np.savez(calib, input=rng.standard_normal((32, *shape[1:])).astype(np.float32))
        held = rng.standard_normal((48, *shape[1:])).astype(np.float32)
        with torch.no_grad():
            labels = module(torch.from_numpy(held)).argmax(1).numpy()
        labels[::7] = (labels[::7] + 1) % 10  # FP32 is not perfect on the task: accuracy < 1
        ev = root / f"{name}-eval.npz"
        np.savez(ev, input=held, labels=labels)
        out[name] = {"onnx": path, "calib": calib, "eval": ev, "module": module, "example": example}
    return out


@pytest.fixture
def opt_dir(tmp_path: Path) -> Path:
    return tmp_path / "opt"
