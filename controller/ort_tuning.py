"""ONNX Runtime session tuning for measurements taken on this host.

Why: the controller's latency and memory figures must be the ones a device running the same
artifact sees, and the agent applies its profile's ``[onnxruntime]`` tuning (``OrtTuning``) to
every session. So every session the controller times uses the tuning of the shipped profile
closest to this host (``EDGEFLEET_HOST_PROFILE`` overrides the guess) — FP32 baselines and
compressed candidates alike, so ratios stay fair.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from common.profiles import OrtTuning, ProfileError, load_profile


@functools.cache
def host_tuning() -> OrtTuning:
    """Tuning of ``EDGEFLEET_HOST_PROFILE`` or of the shipped profile closest to this machine."""
    from controller.settings import Settings

    name = Settings().host_profile
    if not name:
        from controller.hardware import profile_host

        name = profile_host().closest
    try:
        return load_profile(name).onnxruntime if name else OrtTuning()
    except ProfileError:
        return OrtTuning()


def cpu_session(model: Path | str | bytes, threads: int = 1, tuning: OrtTuning | None = None) -> Any:
    """A sequential CPU ORT session with ``threads`` intra-op threads and the host's tuning."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    disabled = (tuning or host_tuning()).apply(opts)
    src = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(src, opts, providers=["CPUExecutionProvider"], disabled_optimizers=disabled)
