"""Never slower than FP32: measure what a speed technique produced and fall back when it lost.

Why: a MobileNetV2 that ``mixed`` delivered at 1.91× FP32 latency, and a CTC recogniser whose
INT8 ran 1.6× slower, were shipped without a word. Quantisation is a speed technique on CPUs; a
result slower than the model it replaces is a regression, whatever its size. After the handler
of a speed-guarded technique (``int8-static``, ``mixed``) the engine times the output against
the FP32 source on this host, with the profile's ORT tuning (``controller.ort_tuning``) and
interleaved runs. When it is slower, FP16 and INT4 weight-only are tried and timed too, and the
smallest one that is not slower and whose quality is at least the rejected model's is delivered
— FP32 itself when none is — with the measured reason in the report and a warning.
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path
from typing import Any

from controller.compression.errors import CompressionError

# A candidate is "not slower" when its p50 latency ratio to FP32 is at most this. Ratios within a few
# percent of 1.0 are re-measured with a longer budget before deciding.
NOT_SLOWER = 1.0
RECHECK_BAND = (0.93, 1.07)


def latency_ratio(reference: Path, candidate: Path, samples: list[dict[str, Any]]) -> float:
    """p50 candidate / reference at 1 thread, batch 1, interleaved; re-measured when close to 1.0."""
    from controller.evaluation.latency import compare_latency

    feeds = samples[:8]
    ratio = compare_latency(reference, candidate, feeds, threads=1, batch=1, budget_s=1.5, min_runs=8,
                            max_runs=80)["ratio_p50"]
    if RECHECK_BAND[0] <= ratio <= RECHECK_BAND[1]:
        ratio = compare_latency(reference, candidate, feeds, threads=1, batch=1, budget_s=4.0, min_runs=20,
                                max_runs=400)["ratio_p50"]
    return float(ratio)


def _quality(reference: Path, candidate: Path, samples: list[dict[str, Any]], metric: str) -> float:
    from controller.evaluation import agreement, quality_score, run_all, session

    return quality_score(agreement(run_all(session(reference, 2), samples), run_all(session(candidate, 2), samples),
                                   metric), metric)


def _alternatives(source: Any, ctx: Any) -> list[tuple[str, Path | None, str]]:
    """(name, path or None, note) for FP16 and INT4 weight-only versions of the source, built in the work dir."""
    from controller.compression.config import handler_for
    from controller.compression.fp16 import Fp16Config
    from controller.compression.int4_weight import Int4WeightConfig

    out = []
    for name, config in (("fp16", Fp16Config()), ("int4-weight", Int4WeightConfig())):
        path = ctx.workdir / f"guard-{name}.onnx"
        sub = dataclasses.replace(ctx, config=config, output=path, warnings=[], progress_cb=None)
        try:
            handler_for(config)(source, config, sub)
            out.append((name, path, ""))
        except CompressionError as exc:  # e.g. INT4 on a model without MatMul weights
            out.append((name, None, str(exc).split(";")[0][:160]))
    return out


def _copy_model(src: Path, dst: Path) -> None:
    """Copy a model to one file (folding external weights in, so the delivered file is complete)."""
    from controller.onnx_files import external_data_files, single_file_copy

    if external_data_files(src):
        single_file_copy(src, dst)
    else:
        shutil.copy(src, dst)


def guard(source: Any, ctx: Any, samples: list[dict[str, Any]], metric: str) -> dict[str, Any]:
    """Time ``ctx.output`` against FP32; replace it by the best non-slower option when it is slower.

    Returns the report section (``speed_guard``): every measured option and what was delivered.
    """
    from controller.evaluation.metrics import higher_is_better
    from controller.onnx_files import model_bytes

    technique = ctx.config.technique
    ratio = latency_ratio(source.onnx_path, ctx.output, samples)
    measured = [{"option": technique, "latency_ratio": round(ratio, 3), "size_bytes": model_bytes(ctx.output)}]
    report: dict[str, Any] = {"host_tuning": "controller.ort_tuning.host_tuning()", "threads": 1, "batch": 1,
                              "measured": measured, "delivered": technique}
    if ratio <= NOT_SLOWER:
        return report
    ctx.progress(0.97, f"{technique} is {ratio:.2f}x FP32 latency here: trying FP16, INT4 weight-only, FP32")
    quality = _quality(source.onnx_path, ctx.output, samples, metric)
    measured[0]["quality"] = quality
    better = higher_is_better(metric)
    choices = []
    for name, path, note in _alternatives(source, ctx):
        if path is None:
            measured.append({"option": name, "skipped": note})
            continue
        alt_ratio = latency_ratio(source.onnx_path, path, samples)
        alt_quality = _quality(source.onnx_path, path, samples, metric)
        row = {"option": name, "latency_ratio": round(alt_ratio, 3), "size_bytes": model_bytes(path),
               "quality": alt_quality}
        measured.append(row)
        quality_ok = alt_quality >= quality if better else alt_quality <= quality
        if alt_ratio <= NOT_SLOWER and quality_ok:
            choices.append((row["size_bytes"], name, path, alt_ratio))
    if choices:
        _size, name, path, alt_ratio = min(choices)
        shutil.copy(path, ctx.output)
        reason = (f"{technique} ran {ratio:.2f}x FP32 latency on this host; {name} is not slower "
                  f"({alt_ratio:.2f}x) and is the smallest option that is not")
    else:
        name = "fp32"
        _copy_model(source.onnx_path, ctx.output)
        reason = (f"no quantized variant is faster than FP32 on this host ({technique} {ratio:.2f}x; "
                  + ", ".join(f"{m['option']} " + (f"{m['latency_ratio']:.2f}x" if "latency_ratio" in m else "n/a")
                              for m in measured[1:]) + "): delivering the FP32 model unchanged")
        measured.append({"option": "fp32", "latency_ratio": 1.0, "size_bytes": model_bytes(source.onnx_path)})
    report.update(delivered=name, reason=reason)
    ctx.warn(reason)
    return report
