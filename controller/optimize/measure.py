"""Build a candidate from existing techniques and measure it against FP32 on this host.

Latency is measured with ONNX Runtime on the host, with the *profile's* session tuning
(``[onnxruntime]`` in the profile, as the agent applies it), reference and candidate interleaved
so that load from other processes hits both alike; quality with the search's metric on held-out
data; size from the files; peak memory as the peak-RSS increase of a fresh process
(``controller.evaluation.memory``). Architecture stages (pruning, distillation, low-rank) are the
expensive part and are cached per arch under ``<workdir>/stages`` so every precision tried on a
sub-network reuses it; the cache is shared by worker processes (atomic rename, lock file).
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import os
import platform
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from common.profiles import DeviceProfile
from controller.optimize.data import SearchData
from controller.optimize.errors import CandidateFailed
from controller.optimize.metrics import QualityMetric
from controller.optimize.space import Candidate, arch_kind

COLLAPSE_BELOW = 0.5  # a quality this low is a broken model, not a trade-off


@dataclasses.dataclass(frozen=True)
class BuildOptions:
    """How hard each stage works (fine-tune epochs dominate the cost of an architecture stage)."""

    finetune_epochs: int = 3
    max_samples: int = 4000
    calibration_samples: int = 64
    threads: int = 1
    latency_budget_s: float = 1.5
    measure_memory: bool = True


@dataclasses.dataclass
class Measurement:
    """Figures of one candidate, ratios are candidate / FP32 measured in the same run."""

    quality: float
    latency_ratio: float
    latency_p50_ms: float
    latency_p95_ms: float
    reference_p50_ms: float
    size_ratio: float
    size_bytes: int
    memory_ratio: float | None
    memory_mb: float | None
    measured_on: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return dataclasses.asdict(self)


@dataclasses.dataclass
class Built:
    """A built candidate: its ONNX and the chain of technique configs that made it."""

    path: Path
    stages: list[dict[str, Any]]


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def host_label(profile: DeviceProfile) -> str:
    """``host:<machine>`` plus the profile whose ORT tuning was applied."""
    return f"host:{platform.node() or 'controller'} (ORT tuning of {profile.id})"


class Evaluator:
    """Builds and measures candidates of one model for one profile."""

    def __init__(self, model: Any, source: Any, profile: DeviceProfile, metric: QualityMetric, data: SearchData,
                 workdir: Path, options: BuildOptions | None = None, *, stage_dir: Path | str | None = None) -> None:
        self.model = model
        self.source = source
        self.profile = profile
        self.metric = metric
        self.data = data
        self.workdir = Path(workdir)
        self.options = options or BuildOptions()
        self.stage_dir = Path(stage_dir) if stage_dir else self.workdir / "stages"
        self.stage_dir.mkdir(parents=True, exist_ok=True)
        self.reference_path = Path(source.onnx_path)
        self._ref_out: np.ndarray | None = None
        self._ref_memory: float | None = None

    # ---------------------------------------------------------------- reference
    def _outputs(self, path: Path) -> np.ndarray:
        from controller.evaluation.latency import run_all
        from controller.ort_tuning import cpu_session

        return run_all(cpu_session(path, 2, self.profile.onnxruntime), self.data.eval_inputs)

    @property
    def reference_outputs(self) -> np.ndarray:
        """FP32 outputs on the held-out inputs (computed once)."""
        if self._ref_out is None:
            self._ref_out = self._outputs(self.reference_path)
        return self._ref_out

    def reference_memory_mb(self) -> float:
        """Peak-RSS increase of the FP32 model (measured once)."""
        if self._ref_memory is None:
            from controller.evaluation.memory import peak_rss_delta

            sample = dict(self.data.eval_inputs[0])
            self._ref_memory = peak_rss_delta(self.reference_path, sample, threads=self.options.threads)[
                "peak_rss_delta_mb"]
        return self._ref_memory

    # ---------------------------------------------------------------- build
    def _calibration_arg(self) -> Any:
        return self.data.calibration if (self.data.user_calibration or self.source.zoo is None) else None

    def arch_config(self, arch: str) -> Any:
        """The technique config of an architecture stage."""
        from controller.compression import DistillConfig, PruneStructuredConfig, SvdConfig, TuckerConfig

        kind, ratio = arch_kind(arch)
        o = self.options
        if kind == "width":
            return PruneStructuredConfig(ratio=ratio, finetune_epochs=o.finetune_epochs, max_samples=o.max_samples)
        if kind == "depth":
            return PruneStructuredConfig(ratio=ratio, scope="layers", finetune_epochs=o.finetune_epochs,
                                         max_samples=o.max_samples)
        if kind == "student":
            return DistillConfig(student="narrow", width=ratio, epochs=max(2, 2 * o.finetune_epochs),
                                 max_samples=o.max_samples)
        if kind == "svd":
            return SvdConfig(ratio=ratio, finetune_epochs=max(1, o.finetune_epochs - 1))
        return TuckerConfig(rank_ratio=ratio, finetune_epochs=max(1, o.finetune_epochs - 1))

    def base_model(self, arch: str) -> tuple[Path, list[dict[str, Any]]]:
        """The ONNX of the sub-network ``arch`` (built once, shared by trials and workers)."""
        if arch == "none":
            return self.reference_path, []
        from controller.compression import CompressionError, compress

        config = self.arch_config(arch)
        slug = arch.replace(":", "-")
        path, failed = self.stage_dir / f"{slug}.onnx", self.stage_dir / f"{slug}.failed"
        stage = {"technique": config.technique, "config": config.to_dict(), "stage": "arch"}
        with _locked(self.stage_dir / f"{slug}.lock"):
            if failed.exists():
                raise CandidateFailed(failed.read_text())
            if not path.exists():
                tmp = self.stage_dir / f"{slug}.tmp-{os.getpid()}.onnx"
                try:
                    compress(self.model, config, out=tmp, calibration=self._calibration_arg(), evaluate=False,
                             never_slower=False)
                except (CompressionError, RuntimeError, ValueError) as exc:
                    reason = f"{arch}: {config.technique} failed: {str(exc).splitlines()[0][:300]}"
                    failed.write_text(reason)
                    raise CandidateFailed(reason) from exc
                os.replace(tmp, path)
                tmp.with_suffix(".json").unlink(missing_ok=True)
        return path, [stage]

    def sensitivity(self, arch: str, calibration: str) -> list[dict[str, Any]]:
        """Quantised layers of the sub-network, most INT8-sensitive first (SQNR, the ``mixed`` analysis)."""
        from controller.compression import MixedPrecisionConfig, compress

        base, _ = self.base_model(arch)
        cache = self.stage_dir / f"sensitivity-{arch.replace(':', '-')}-{calibration}.json"
        with _locked(cache.with_suffix(".lock")):
            if not cache.exists():
                out = self.stage_dir / f"sens-{os.getpid()}.onnx"
                n = self.options.calibration_samples
                cfg = MixedPrecisionConfig(max_fallback=0, calibration_method=calibration, calibration_samples=n,
                                           validation_samples=8)
                result = compress(base, cfg, out=out, calibration=self.data.calibration, evaluate=False,
                                  never_slower=False)
                rows = [{"node": r["node"], "op": r["op"], "has_weight": r["has_weight"],
                         "sensitivity_sqnr_db": r["sensitivity_sqnr_db"]} for r in result.report["per_layer"]]
                cache.write_text(json.dumps(rows))
                out.unlink(missing_ok=True)
                out.with_suffix(".json").unlink(missing_ok=True)
        return json.loads(cache.read_text())

    def layer_plan(self, candidate: Candidate) -> dict[str, str]:
        """Node → ``weight-only`` / ``fp32`` for every layer that leaves INT8 (explicit or the N most sensitive)."""
        if candidate.layers:
            return {n: c for n, c in candidate.layers if c != "int8"}
        if not candidate.fallback_layers:
            return {}
        table = self.sensitivity(candidate.arch, candidate.calibration)
        return {r["node"]: candidate.fallback for r in table[:candidate.fallback_layers]}

    def precision_config(self, candidate: Candidate, plan: dict[str, str], table: list[dict[str, Any]]) -> Any:
        """The technique config of the precision stage (None for FP32)."""
        from controller.compression import Fp16Config, Int4WeightConfig, Int8DynamicConfig, Int8StaticConfig

        reduce_range = not self.profile.has_int8_dot
        if candidate.precision == "int8":
            can_wo = {r["node"] for r in table if r["has_weight"] and r["op"] in ("MatMul", "Gemm", "Conv")}
            weight_only = tuple(sorted(n for n, c in plan.items() if c == "weight-only" and (n in can_wo or not table)))
            exclude = tuple(sorted(n for n in plan if n not in weight_only))
            return Int8StaticConfig(calibration_method=candidate.calibration,
                                    calibration_samples=self.options.calibration_samples, per_channel=True,
                                    reduce_range=reduce_range, exclude_nodes=exclude, weight_only_nodes=weight_only)
        if candidate.precision == "int8-dynamic":
            return Int8DynamicConfig(reduce_range=reduce_range)
        if candidate.precision == "int4":
            return Int4WeightConfig()
        if candidate.precision == "fp16":
            return Fp16Config()
        return None

    def build(self, candidate: Candidate, out: Path) -> Built:
        """Run the candidate's stages; the model lands at ``out``. Raises CandidateFailed on any crash."""
        from controller.compression import CompressionError, compress

        base, stages = self.base_model(candidate.arch)
        plan = self.layer_plan(candidate) if candidate.precision == "int8" else {}
        table = self.sensitivity(candidate.arch, candidate.calibration) if plan else []
        config = self.precision_config(candidate, plan, table)
        out.parent.mkdir(parents=True, exist_ok=True)
        if config is None:
            shutil.copy(base, out)
            return Built(out, stages)
        try:
            # the search measures every candidate itself: the engine's never-slower swap would mislabel it
            compress(base, config, out=out, calibration=self.data.calibration, evaluate=False, never_slower=False)
        except (CompressionError, RuntimeError, ValueError) as exc:
            raise CandidateFailed(f"{candidate.describe()}: {config.technique} failed: "
                                  f"{str(exc).splitlines()[0][:300]}") from exc
        out.with_suffix(".json").unlink(missing_ok=True)
        return Built(out, [*stages, {"technique": config.technique, "config": config.to_dict(), "stage": "precision"}])

    # ---------------------------------------------------------------- measure
    def latency(self, candidate: Path) -> dict[str, float]:
        """p50/p95 of reference and candidate, interleaved, batch 1, the profile's ORT tuning."""
        from controller.ort_tuning import cpu_session

        o = self.options
        tuning = self.profile.onnxruntime
        sessions = [cpu_session(self.reference_path, o.threads, tuning), cpu_session(candidate, o.threads, tuning)]
        inputs = self.data.eval_inputs
        times: list[list[float]] = [[], []]
        for sess in sessions:
            for x in inputs[:2]:
                sess.run(None, x)
        start, i = time.perf_counter(), 0
        while True:
            x = inputs[i % len(inputs)]
            for k, sess in enumerate(sessions):
                t0 = time.perf_counter()
                sess.run(None, x)
                times[k].append(time.perf_counter() - t0)
            i += 1
            if i >= 400 or (i >= 10 and time.perf_counter() - start > o.latency_budget_s):
                break
        ref, cand = (np.asarray(t) * 1000.0 for t in times)
        return {"reference_p50_ms": float(np.percentile(ref, 50)), "p50_ms": float(np.percentile(cand, 50)),
                "p95_ms": float(np.percentile(cand, 95)),
                "ratio": float(np.percentile(cand, 50) / max(np.percentile(ref, 50), 1e-9))}

    def measure(self, path: Path) -> Measurement:
        """Quality, latency, size and memory of a built candidate; CandidateFailed if it does not run or collapses."""
        try:
            out = self._outputs(path)
        except Exception as exc:  # ORT refuses to load or run it: a failed candidate, not a failed search
            raise CandidateFailed(f"does not run in ONNX Runtime: {str(exc).splitlines()[0][:300]}") from exc
        if not np.all(np.isfinite(out)):
            raise CandidateFailed("collapsed: non-finite outputs")
        quality = float(self.metric.score(self.reference_outputs, out, self.data.labels))
        if not np.isfinite(quality) or quality < COLLAPSE_BELOW:
            raise CandidateFailed(f"collapsed: {self.metric.name} {quality:.3f} vs FP32 (below {COLLAPSE_BELOW})")
        lat = self.latency(path)
        if lat["p95_ms"] > 3 * lat["p50_ms"]:
            # a spiky window (another process took the CPU): measure once more and keep the calmer one, so a
            # scheduler hiccup on a shared host does not decide the [slo] p95 check
            lat = min(lat, self.latency(path), key=lambda x: x["p95_ms"])
        size = path.stat().st_size
        memory_ratio = memory_mb = None
        if self.options.measure_memory:
            from controller.evaluation.memory import peak_rss_delta

            memory_mb = peak_rss_delta(path, dict(self.data.eval_inputs[0]), threads=self.options.threads)[
                "peak_rss_delta_mb"]
            memory_ratio = memory_mb / max(self.reference_memory_mb(), 1e-6)
        return Measurement(quality=quality, latency_ratio=lat["ratio"], latency_p50_ms=lat["p50_ms"],
                           latency_p95_ms=lat["p95_ms"], reference_p50_ms=lat["reference_p50_ms"],
                           size_ratio=size / self.reference_path.stat().st_size, size_bytes=size,
                           memory_ratio=memory_ratio, memory_mb=memory_mb, measured_on=host_label(self.profile))
