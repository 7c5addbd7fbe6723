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
from controller.compression.errors import CalibrationError, CompressionError, UnsupportedTechniqueError
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

    def progress(self, fraction: float, message: str) -> None:
        """Report handler progress (mapped to 0-80 % of the whole job; evaluation takes the rest)."""
        if self.progress_cb:
            self.progress_cb(0.8 * max(0.0, min(1.0, fraction)), message)

    def warn(self, message: str) -> None:
        """Record a warning that ends up in the result and the JSON report."""
        log.warning("%s: %s", self.config.technique, message)
        self.warnings.append(message)

    def calibration(self, n: int | None = None) -> list[Inputs]:
        """Calibration samples: the user's ``.npz`` / list if given, else the zoo model's real data."""
        n = n or default_calibration_samples()
        if self.calibration_source is not None:
            return load_calibration(self.calibration_source, self.source.specs, limit=n)
        if self.source.zoo is not None:
            return self.source.zoo.calibration_inputs(n)
        names = ", ".join(f"{s.name} {np.dtype(s.dtype).name}{list(s.shape)}" for s in self.source.specs)
        raise CalibrationError(f"technique {self.config.technique!r} needs calibration data for this model: pass "
                               f"an .npz whose keys are the input names ({names}), samples stacked on axis 0")

    def eval_data(self) -> tuple[list[Inputs], np.ndarray | None, str]:
        """(inputs, labels, where they came from) for judging the output."""
        zoo = self.source.zoo
        if zoo is not None:
            n = EVAL_SAMPLES.get(zoo.name, 200)
            return zoo.eval_inputs(n), zoo.eval_labels(n), "zoo held-out split"
        if self.calibration_source is not None:
            samples = load_calibration(self.calibration_source, self.source.specs)
            return samples, None, "calibration data (no held-out set)"
        return synthetic_inputs(self.source.specs, 16), None, "random inputs (no data given: quality not meaningful)"


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
    progress: Progress | None = None,
    evaluate: bool = True,
    threads: Sequence[int] = (1,),
    batches: Sequence[int] = (1,),
    memory: bool = True,
) -> CompressionResult:
    """Compress ``model`` with ``config``; see the package docstring for the full contract."""
    from controller.evaluation import evaluate as run_evaluation

    if not isinstance(config, CompressionConfig):
        raise UnsupportedTechniqueError(f"config must be a CompressionConfig, got {type(config).__name__}")
    handler = handler_for(config)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="edgefleet-compress-") as tmp:
        workdir = Path(tmp)
        source = resolve_model(model, workdir)
        input_hash = sha256_file(source.onnx_path)
        ctx = Context(source, config, workdir, workdir / "output.onnx", calibration, progress)
        ctx.progress(0.0, f"{config.technique}: starting on {source.name}")
        report = handler(source, config, ctx) or {}
        if not ctx.output.exists():
            raise CompressionError(f"{config.technique} produced no model")
        try:
            check_onnx(ctx.output)
        except CompressionError as exc:
            raise CompressionError(f"{config.technique} produced an invalid model (not written): {exc}") from None
        if sha256_file(source.onnx_path) != input_hash:
            raise CompressionError(f"{config.technique} modified its input model {source.onnx_path}")
        shutil.move(str(ctx.output), out)
        metrics: dict[str, Any] = {"compress_s": time.perf_counter() - started}
        if evaluate:  # inside the work dir: a torch-module source's FP32 export lives there
            if progress:
                progress(0.85, "evaluating against FP32")
            inputs, labels, origin = ctx.eval_data()
            metrics.update(run_evaluation(source.onnx_path, out, inputs, source.quality_metric, labels=labels,
                                          threads=threads, batches=batches, memory=memory))
            metrics["eval_data"] = origin
            if metrics.get("quality_score", 1.0) < COLLAPSE_BELOW:
                ctx.warn(f"quality collapsed: {source.quality_metric} {metrics['quality_score']:.3f} vs FP32 — this "
                         "model is not usable as is (more fine-tuning data, a lower ratio or another technique)")
            if source.zoo is not None:
                ref_task, cand_task = source.zoo.task_score(source.onnx_path), source.zoo.task_score(out)
                metrics["task"] = {k: {"reference": ref_task[k], "candidate": cand_task[k]} for k in cand_task}
    result = CompressionResult(out, config, _jsonable(metrics), _jsonable(report), ctx.warnings)
    result.report_path = out.with_suffix(".json")
    result.report_path.write_text(json.dumps({"model": source.name, "source": str(source.onnx_path),
                                              **result.to_dict()}, indent=2))
    if progress:
        progress(1.0, f"wrote {out}")
    return result
