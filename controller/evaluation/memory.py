"""Inference memory: peak-RSS increase of a fresh process that loads and runs a model.

The child imports onnxruntime and numpy and loads the inputs first, records its peak RSS
(``ru_maxrss``) as the baseline, then creates the session and runs the inputs; the reported
figure is the peak RSS after that minus the baseline — the memory the *model* costs, not the
runtime. A fresh process per model keeps allocator caches of one model out of the other's figure.

Run directly: ``python -m controller.evaluation.memory MODEL.onnx INPUTS.npz [THREADS]``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from controller.ort_tuning import host_tuning

Inputs = dict[str, np.ndarray]


def _maxrss_mb() -> float:
    """This process's peak RSS (MiB). ``VmHWM`` is per address space, so unlike ``ru_maxrss`` it does
    not inherit the (possibly huge) peak of the parent that forked us."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def _child(model: str, inputs_npz: str, threads: int, tuning_json: str = "{}") -> dict[str, float]:
    import time

    import onnxruntime  # noqa: F401 - the runtime library is the baseline, not the model's memory

    from common.profiles import OrtTuning
    from controller.ort_tuning import cpu_session

    with np.load(inputs_npz, allow_pickle=False) as npz:
        feeds = {k: npz[k] for k in npz.files}
    tuning = OrtTuning.model_validate_json(tuning_json)
    baseline = _maxrss_mb()
    t0 = time.perf_counter()
    sess = cpu_session(model, threads, tuning)
    load_s = time.perf_counter() - t0
    for _ in range(3):
        sess.run(None, feeds)
    peak = _maxrss_mb()
    return {"baseline_rss_mb": baseline, "peak_rss_mb": peak, "peak_rss_delta_mb": peak - baseline,
            "load_s": load_s}


def peak_rss_delta(model: Path | str, sample: Inputs, *, threads: int = 1, timeout: float = 300) -> dict[str, float]:
    """Peak RSS increase (MiB) of a fresh Python process loading ``model`` and running ``sample`` 3×."""
    with tempfile.TemporaryDirectory(prefix="edgefleet-mem-") as tmp:
        npz = Path(tmp) / "inputs.npz"
        np.savez(npz, **sample)
        env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
        argv = [sys.executable, "-m", "controller.evaluation.memory", str(model), str(npz), str(threads),
                host_tuning().model_dump_json()]
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"memory probe failed for {model}: {proc.stderr.strip()[-500:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def compare_memory(reference: Path | str, candidate: Path | str, sample: Inputs, *, threads: int = 1) -> dict:
    """Peak-RSS deltas of both models (each in its own fresh process) and their ratio."""
    ref = peak_rss_delta(reference, sample, threads=threads)
    cand = peak_rss_delta(candidate, sample, threads=threads)
    return {"reference": ref, "candidate": cand,
            "ratio": cand["peak_rss_delta_mb"] / max(ref["peak_rss_delta_mb"], 1e-6)}


def main(argv: Sequence[str] | None = None) -> int:
    """Child entry point: print one JSON line with the measurement."""
    args = list(sys.argv[1:] if argv is None else argv)
    threads = int(args[2]) if len(args) > 2 else 1
    print(json.dumps(_child(args[0], args[1], threads, args[3] if len(args) > 3 else "{}")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
