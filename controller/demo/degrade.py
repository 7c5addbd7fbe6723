"""Make a deliberately broken build: the demo's proof that agents catch a quality regression.

The degraded model keeps the INT8 model's graph, size and speed and only scrambles
its quantized weights, so latency and memory look fine and only the on-device
golden-set check can tell it apart. That is exactly the failure that a rollout
tool counting crashes would ship to the whole fleet.
"""

from __future__ import annotations

from pathlib import Path


def perturb_int8_weights(src: Path, dst: Path, *, noise: float = 48.0, seed: int = 7) -> int:
    """Add Gaussian noise to every INT8 weight initializer; returns how many tensors were changed."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(src))
    rng = np.random.default_rng(seed)
    changed = 0
    for i, init in enumerate(model.graph.initializer):
        arr = numpy_helper.to_array(init)
        if arr.dtype not in (np.int8, np.uint8) or arr.size < 256:
            continue
        lo, hi = (-127, 127) if arr.dtype == np.int8 else (0, 255)
        noisy = np.clip(arr.astype(np.float32) + rng.normal(0, noise, arr.shape), lo, hi).astype(arr.dtype)
        model.graph.initializer[i].CopyFrom(numpy_helper.from_array(noisy, init.name))
        changed += 1
    if not changed:
        raise ValueError(f"{src} has no INT8 weight tensors to perturb")
    onnx.save(model, str(dst))
    return changed
