"""``compress``: resolve the model, run the registered handler, check and measure the output.

The handler writes into a private work directory; only an output that passes ``onnx.checker``
is moved to ``out``, so a failed technique never leaves a broken model behind, and the input file
is hashed before and after to prove it was not modified.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from common.manifest import sha256_file
from controller.compression.config import CompressionConfig, default_calibration_samples, handler_for
from controller.compression.errors import (
    CalibrationError,
    CompressionError,
    InvalidConfigError,
    UnsupportedTechniqueError,
)
from controller.compression.inputs import CONTRACT
from controller.compression.source import (
    CalibrationSource,
    Inputs,
    ModelSource,
    check_onnx,
    load_calibration,
    resolve_model,
    synthetic_inputs,
)

log = logging.getLogger(__name__)

Progress = Callable[[float, str], None]

# Held-out samples used to judge a zoo model (latency cycles over them, so more costs little).
EVAL_SAMPLES = {"minilm": 200, "mobilenetv2": 300, "mnist-cnn": 1000}
COLLAPSE_BELOW = 0.5  # agreement / cosine under which a result is flagged as broken, not just degraded


@dataclasses.dataclass
class Context:
    """What a handler gets besides the model and config: data, a work dir, progress, warnings."""

    source: ModelSource
    config: CompressionConfig
    workdir: Path
    output: Path  # where the handler must write its ONNX (moved to ``out`` afterwards)
    calibration_source: CalibrationSource | None = None
    progress_cb: Progress | None = None
    warnings: list[str] = dataclasses.field(default_factory=list)
    eval_source: CalibrationSource | None = None
    metric: str | None = None  # None: the model's own (zoo choice, else cosine)

    @property
    def quality_metric(self) -> str:
        """The metric quality is judged with: the caller's choice, else the model's."""
        return self.metric or self.source.quality_metric

    def progress(self, fraction: float, message: str) -> None:
        """Report handler progress (mapped to 0-80 % of the whole job; evaluation takes the rest)."""
        if self.progress_cb:
            self.progress_cb(0.8 * max(0.0, min(1.0, fraction)), message)

    def warn(self, message: str) -> None:
        """Record a warning that ends up in the result and the JSON report."""
        log.warning("%s: %s", self.config.technique, message)
        if message not in self.warnings:
            self.warnings.append(message)

    def calibration(self, n: int | None = None) -> list[Inputs]:
        """Calibration samples: the user's ``.npz`` / list if given, else the zoo model's real data."""
        n = n or default_calibration_samples()
        if self.calibration_source is not None:
            return load_calibration(self.calibration_source, self.source.specs, limit=n)
        if self.source.zoo is not None:
            return self.source.zoo.calibration_inputs(n)
        names = ", ".join(f"{s.name} {np.dtype(s.dtype).name}{list(s.shape)}" for s in self.source.specs)
        raise CalibrationError(f"--calibration: technique {self.config.technique!r} needs calibration data for "
                               f"this model, none was given. Pass {CONTRACT}. Inputs: {names}")

    def eval_data(self) -> tuple[list[Inputs], np.ndarray | None, str]:
        """(inputs, labels, where they came from) for judging the output."""
        inputs, labels, info = self.eval_plan()
        return inputs, labels, info["description"]

    def eval_plan(self) -> tuple[list[Inputs], np.ndarray | None, dict[str, Any]]:
        """(inputs, labels, provenance) — provenance says which data, whether it is held out, and the metric."""
        zoo = self.source.zoo
        metric = self.quality_metric
        if self.eval_source is not None:
            samples = load_calibration(self.eval_source, self.source.specs, flag="--eval")
            where = str(self.eval_source) if isinstance(self.eval_source, str | Path) else "eval samples (Python)"
            return samples, None, {"data": where, "held_out": True, "samples": len(samples), "metric": metric,
                                   "description": f"held-out --eval data {where}"}
        if zoo is not None:
            n = EVAL_SAMPLES.get(zoo.name, 200)
            samples = zoo.eval_inputs(n)
            return samples, zoo.eval_labels(n), {"data": f"zoo {zoo.name} held-out split", "held_out": True,
                                                 "samples": len(samples), "metric": metric,
                                                 "description": "zoo held-out split"}
        if self.calibration_source is not None:
            samples = load_calibration(self.calibration_source, self.source.specs)
            return samples, None, {"data": "calibration data", "held_out": False, "samples": len(samples),
                                   "metric": metric, "description": "calibration data (no held-out set: pass --eval)"}
        return synthetic_inputs(self.source.specs, 16), None, {
            "data": "synthetic", "held_out": False, "samples": 16, "metric": metric, "synthetic": True,
            "description": "random inputs (no data given: quality not meaningful)"}


@dataclasses.dataclass
class CompressionResult:
    """Output of ``compress``: the model path, the config, measured metrics and the technique's report."""

    output: Path
    config: CompressionConfig
    metrics: dict[str, Any]
    report: dict[str, Any]
    warnings: list[str]
    report_path: Path | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (what is written next to the model)."""
        return {"output": str(self.output), "config": self.config.to_dict(), "metrics": self.metrics,
                "report": self.report, "warnings": self.warnings}


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    return obj


def compress(
    model: Any,
    config: CompressionConfig,
    *,
    out: Path | str,
    calibration: CalibrationSource | None = None,
    eval_data: CalibrationSource | None = None,
    metric: str | None = None,
    never_slower: bool = True,
    progress: Progress | None = None,
    evaluate: bool = True,
    threads: Sequence[int] = (1,),
    batches: Sequence[int] = (1,),
    memory: bool = True,
) -> CompressionResult:
    """Compress ``model`` with ``config``; see the package docstring for the full contract.

    ``eval_data`` is held-out data in the calibration contract (judged with ``metric``: a built-in
    name or ``module:function``); ``never_slower`` times speed techniques against FP32 and falls
    back (FP16, INT4 weight-only, FP32) when they lost.
    """
    from controller.evaluation.metrics import MetricError, check_metric

    if not isinstance(config, CompressionConfig):
        raise UnsupportedTechniqueError(f"config must be a CompressionConfig, got {type(config).__name__}")
    handler = handler_for(config)
    if metric is not None:
        try:
            metric = check_metric(metric)
        except MetricError as exc:
            raise InvalidConfigError(f"--metric: {exc}") from None
    out = Path(out)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="edgefleet-compress-") as tmp:
        workdir = Path(tmp)
        source = resolve_model(model, workdir)
        input_hash = sha256_file(source.onnx_path)
        ctx = Context(source, config, workdir, workdir / "output.onnx", calibration, progress,
                      eval_source=eval_data, metric=metric)
        if eval_data is not None:  # fail on bad eval data before spending minutes compressing
            ctx.eval_plan()
        ctx.progress(0.0, f"{config.technique}: starting on {source.name}")
        report = handler(source, config, ctx) or {}
        if not ctx.output.exists():
            raise CompressionError(f"{config.technique} produced no model")
        try:
            check_onnx(ctx.output, flag=f"{config.technique} output")
        except CompressionError as exc:
            raise CompressionError(f"{config.technique} produced an invalid model (not written): {exc}") from None
        if never_slower and config.speed_guarded:
            from controller.compression.speed_guard import guard

            report["speed_guard"] = guard(source, ctx, ctx.calibration(16), ctx.quality_metric)
        if sha256_file(source.onnx_path) != input_hash:
            raise CompressionError(f"{config.technique} modified its input model {source.onnx_path}")
        metrics: dict[str, Any] = {"compress_s": time.perf_counter() - started}
        if evaluate:  # inside the work dir: a torch-module source's FP32 export lives there
            if progress:
                progress(0.85, "evaluating against FP32")
            metrics.update(_measure(source, ctx, threads, batches, memory))
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(ctx.output), out)
        if evaluate and source.zoo is not None:
            ref_task, cand_task = source.zoo.task_score(source.onnx_path), source.zoo.task_score(out)
            metrics["task"] = {k: {"reference": ref_task[k], "candidate": cand_task[k]} for k in cand_task}
    result = CompressionResult(out, config, _jsonable(metrics), _jsonable(report), ctx.warnings)
    result.report_path = out.with_suffix(".json")
    result.report_path.write_text(json.dumps({"model": source.name, "source": str(source.onnx_path),
                                              **result.to_dict()}, indent=2))
    if progress:
        progress(1.0, f"wrote {out}")
    return result


def _measure(source: ModelSource, ctx: Context, threads: Sequence[int], batches: Sequence[int],
             memory: bool) -> dict[str, Any]:
    """Evaluate ``ctx.output`` against FP32 on the eval plan's data; flags calibration-set quality."""
    from controller.evaluation import evaluate as run_evaluation
    from controller.evaluation.metrics import higher_is_better

    inputs, labels, plan = ctx.eval_plan()
    metric = ctx.quality_metric
    metrics = run_evaluation(source.onnx_path, ctx.output, inputs, metric, labels=labels, threads=threads,
                             batches=batches, memory=memory)
    metrics["eval_data"] = plan.pop("description")
    metrics["eval"] = plan
    metrics["quality_on_calibration_data"] = plan["data"] == "calibration data"
    if metrics["quality_on_calibration_data"]:
        ctx.warn("quality was measured on the calibration data itself (optimistic): pass held-out data with --eval")
    elif plan.get("synthetic"):
        ctx.warn("quality was measured on random inputs (no data given): it says nothing about real inputs")
    score = metrics.get("quality_score", 1.0)
    if higher_is_better(metric) and metric != "mean_abs_diff" and score < COLLAPSE_BELOW:
        ctx.warn(f"quality collapsed: {metric} {score:.3f} vs FP32 — this model is not usable as is (more "
                 "fine-tuning data, a lower ratio or another technique)")
    return metrics
