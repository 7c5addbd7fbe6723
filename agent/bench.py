"""On-device benchmark: load time, p50/p95 latency, peak RSS delta and golden-set quality.

The measurement runs in a fresh child process (``python -m agent.bench_child``) because
peak RSS is only honest there: the child records its high-water mark after importing the
runtime and reading the golden set, loads and runs the model, and reports the growth of
that high-water mark. A crash or out-of-memory kill of a bad model also takes down the
child, not the agent. The parent side is :func:`run_benchmark`; :func:`measure` is the
in-process measurement the child performs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from agent.errors import BenchmarkError
from common.errors import ReasonCode
from common.messages import BenchMetrics


@dataclass(frozen=True)
class BenchSpec:
    """What to benchmark and how hard.

    Example:
        >>> BenchSpec(Path("m.onnx"), Path("g.npz"), "onnx", "cosine", threads=1, runs=20).warmup
        5
    """

    model_path: Path
    golden_path: Path
    format: str
    quality_metric: str
    threads: int = 1
    runs: int = 50
    warmup: int = 5
    providers: list[str] = field(default_factory=lambda: ["CPUExecutionProvider"])
    tensorrt_recipe: dict[str, Any] | None = None
    """The manifest's signed TensorRT recipe (JSON form): build/cache an engine, or fall back to ORT."""
    engine_cache_dir: Path | None = None
    """Where engines are cached (``<data-dir>/engines``); required with ``tensorrt_recipe``."""
    ort_tuning: dict[str, Any] | None = None
    """The device profile's ``[onnxruntime]`` session tuning (``OrtTuning`` JSON form); None = defaults."""

    def to_json(self) -> str:
        """Serialised for the child's command line."""
        data = asdict(self)
        data["model_path"] = str(self.model_path)
        data["golden_path"] = str(self.golden_path)
        data["engine_cache_dir"] = str(self.engine_cache_dir) if self.engine_cache_dir else None
        return json.dumps(data)

    @classmethod
    def from_json(cls, text: str) -> BenchSpec:
        """Inverse of :meth:`to_json`."""
        data = json.loads(text)
        data["model_path"] = Path(data["model_path"])
        data["golden_path"] = Path(data["golden_path"])
        if data.get("engine_cache_dir"):
            data["engine_cache_dir"] = Path(data["engine_cache_dir"])
        return cls(**data)


class BenchCancelled(Exception):  # noqa: N818 - a control-flow signal, not an error condition
    """The agent is shutting down; the benchmark will be redone on resume."""


class PeakMemory:
    """Peak resident memory of this process from a starting point, in MiB.

    Linux: ``VmHWM`` from ``/proc/self/status`` (per address space, so not inherited from the
    agent across fork+exec, unlike ``ru_maxrss``), reset to the current RSS at the start point
    through ``/proc/self/clear_refs`` where the kernel allows it. Elsewhere: ``ru_maxrss`` (macOS)
    or psutil's peak working set (Windows).
    """

    def __init__(self) -> None:
        self.reset = self._reset_hwm()
        self.start_rss = self._rss()
        self.start_peak = self._peak()

    @staticmethod
    def _status_mb(key: str) -> float | None:
        try:
            with open("/proc/self/status") as fh:
                for line in fh:
                    if line.startswith(key + ":"):
                        return int(line.split()[1]) / 1024
        except OSError:
            return None
        return None

    @staticmethod
    def _reset_hwm() -> bool:
        try:
            with open("/proc/self/clear_refs", "w") as fh:
                fh.write("5")
        except OSError:
            return False
        return True

    def _rss(self) -> float:
        import psutil

        return psutil.Process().memory_info().rss / 2**20

    def _peak(self) -> float:
        hwm = self._status_mb("VmHWM")
        if hwm is not None:
            return hwm
        import psutil

        info = psutil.Process().memory_info()
        if hasattr(info, "peak_wset"):
            return info.peak_wset / 2**20
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (2**20 if sys.platform == "darwin" else 1024)

    def delta_mb(self) -> float:
        """Growth of the peak over the start point: its RSS when the high-water mark could be reset, else
        its high-water mark (so a transient peak while importing is never charged to the model)."""
        return max(0.0, self._peak() - (self.start_rss if self.reset else self.start_peak))


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def _opener(spec: BenchSpec, default: Callable[[Path, int, list[str]], Any]) -> Callable[[Path, int, list[str]], Any]:
    """How to load the model. With a TensorRT recipe the engine is built or found in the cache
    *here*, before memory and load time are measured: a one-off build (minutes on a Jetson) is
    not the model's load time, and the builder's memory is not what the model needs to run."""
    if spec.tensorrt_recipe is None:
        return default
    from agent.trt_engine import prepare
    from common.tensorrt_recipe import TensorrtRecipe

    if spec.engine_cache_dir is None:
        raise BenchmarkError(ReasonCode.BENCHMARK_FAILED, "a TensorRT recipe needs engine_cache_dir")
    try:
        plan = prepare(spec.model_path, TensorrtRecipe.model_validate(spec.tensorrt_recipe), spec.providers,
                       spec.engine_cache_dir)
    except BenchmarkError:
        raise
    except Exception as exc:  # noqa: BLE001 - TensorRT/CUDA raise their own types; all mean "cannot load"
        raise BenchmarkError(ReasonCode.LOAD_FAILED, f"preparing the TensorRT engine failed: {exc}") from exc
    return plan.open


def measure(spec: BenchSpec) -> BenchMetrics:
    """Benchmark in this process (the child calls this). See the module docstring.

    Raises:
        BenchmarkError: the model does not load, run, or match its golden set.
    """
    from agent.emulation import emulator
    from agent.golden import load_golden, read_golden, score
    from agent.runtimes import get_runtime

    runtime = get_runtime(spec.format)
    if spec.ort_tuning is not None:
        from agent.runtimes import set_ort_tuning
        from common.profiles import OrtTuning

        set_ort_tuning(OrtTuning.model_validate(spec.ort_tuning))
    runtime.preload()  # the runtime library and the golden set are not the model's memory
    arrays = read_golden(spec.golden_path)
    open_model = _opener(spec, runtime.open)
    memory = PeakMemory()
    start = time.perf_counter()
    session = open_model(spec.model_path, spec.threads, spec.providers)
    load_ms = (time.perf_counter() - start) * 1000
    golden = load_golden(arrays, session)
    try:
        first = golden.feed(session, 0)
        for _ in range(spec.warmup):
            session.run(first)
        timings = []
        for k in range(spec.runs):
            feeds = golden.feed(session, k % golden.samples)
            t0 = time.perf_counter()
            session.run(feeds)
            timings.append((time.perf_counter() - t0) * 1000)
        produced = [session.run(golden.feed(session, i)) for i in range(golden.samples)]
    except BenchmarkError:
        raise
    except Exception as exc:  # noqa: BLE001 - any runtime failure on the golden set is a failed benchmark
        raise BenchmarkError(ReasonCode.BENCHMARK_FAILED, f"running {spec.model_path.name} failed: {exc}") from exc
    quality = score(golden, produced, spec.quality_metric)
    return BenchMetrics(
        latency_p50_ms=round(_percentile(timings, 0.50), 4),
        latency_p95_ms=round(_percentile(timings, 0.95), 4),
        load_ms=round(load_ms, 3),
        peak_rss_delta_mb=round(memory.delta_mb(), 3),
        quality=round(quality, 6),
        quality_metric=spec.quality_metric,
        runs=spec.runs,
        runtime=getattr(session, "runtime_label", runtime.name),
        emulated=emulator(),
    )


def _child_env() -> dict[str, str]:
    """Make sure the child imports this same agent package, wherever it is installed."""
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    env["EDGEFLEET_BENCH_PARENT"] = str(os.getpid())
    return env


def run_benchmark(spec: BenchSpec, *, timeout_s: float = 600.0, cancel: threading.Event | None = None) -> BenchMetrics:
    """Benchmark in a fresh child process and return its figures.

    Args:
        spec: model, golden set, format, metric, threads, runs.
        timeout_s: the child is killed after this long (a hung model is a failed benchmark).
        cancel: set by the agent on shutdown; the child is killed and BenchCancelled raised.

    Raises:
        BenchmarkError: load/run failure, timeout, or a child that died (e.g. out of memory).
        BenchCancelled: ``cancel`` was set.

    Example:
        >>> metrics = run_benchmark(spec)  # doctest: +SKIP
        >>> metrics.latency_p95_ms
        1.8
    """
    proc = subprocess.Popen(
        [sys.executable, "-m", "agent.bench_child", spec.to_json()],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=_child_env(),
    )
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            try:
                out, err = proc.communicate(timeout=0.2)
                break
            except subprocess.TimeoutExpired:
                if cancel is not None and cancel.is_set():
                    raise BenchCancelled("agent shutting down") from None
                if time.monotonic() > deadline:
                    raise BenchmarkError(
                        ReasonCode.BENCHMARK_FAILED, f"benchmark did not finish within {timeout_s:.0f}s"
                    ) from None
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return _parse_child_output(proc.returncode, out, err)


def _parse_child_output(returncode: int, out: bytes, err: bytes) -> BenchMetrics:
    lines = out.decode(errors="replace").strip().splitlines()
    try:
        result = json.loads(lines[-1]) if lines else {}
    except ValueError:
        result = {}
    if "error" in result:
        raise BenchmarkError(ReasonCode(result.get("reason", "benchmark_failed")), result["error"])
    if returncode != 0 or "metrics" not in result:
        tail = err.decode(errors="replace").strip().splitlines()[-3:]
        raise BenchmarkError(
            ReasonCode.BENCHMARK_FAILED, f"benchmark process exited with {returncode}: {' | '.join(tail)}"
        )
    return BenchMetrics.model_validate(result["metrics"])
