"""``edgefleet compress``: any technique on a zoo model or a user's ONNX, with progress and a JSON report.

    edgefleet compress --model mobilenetv2 --technique int8-static --out build/mnv2-int8.onnx
    edgefleet compress --model user.onnx --technique int8-static --calibration calib.npz \\
        --param calibration_method=entropy --param calibration_samples=64 --out user-int8.onnx
    edgefleet compress --list                     # techniques and their parameters

Importing this module is cheap (no torch / onnx): the engine is imported inside the handler.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

USAGE = """Compress a model (zoo name or your ONNX) with one technique and measure it against FP32.

    edgefleet compress --model mobilenetv2 --technique int8-static --out build/mnv2-int8.onnx
    edgefleet compress --model user.onnx --technique int8-static --calibration calib.npz \\
        --param calibration_method=entropy --param calibration_samples=64 --out user-int8.onnx
    edgefleet compress --list                     # techniques and their parameters
"""
TECHNIQUE_NAMES = ("int8-static", "int8-dynamic", "int4-weight", "fp16", "mixed", "qat", "prune-unstructured",
                   "prune-structured", "distill", "svd", "tucker")


def register(sub: Any) -> None:
    """Add the ``compress`` subcommand to the ``edgefleet`` parser."""
    p = sub.add_parser("compress", help="compress a model with one technique and measure it against FP32",
                       description=USAGE, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", help="zoo name (minilm, mobilenetv2, mnist-cnn) or path to an .onnx file")
    p.add_argument("--technique", help=f"one of: {', '.join(TECHNIQUE_NAMES)}")
    p.add_argument("--param", action="append", default=[], metavar="K=V", help="technique parameter (repeatable)")
    p.add_argument("--config", help="technique config as JSON (instead of --technique/--param)")
    p.add_argument("--calibration", help=".npz whose keys are the model's input names (samples on axis 0)")
    p.add_argument("--out", help="output .onnx path (a .json report is written beside it)")
    p.add_argument("--threads", default="1", help="latency threads, comma-separated (default 1)")
    p.add_argument("--batches", default="1", help="latency batch sizes, comma-separated (default 1)")
    p.add_argument("--no-eval", action="store_true", help="skip measuring against FP32")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-RSS subprocesses")
    p.add_argument("--list", action="store_true", help="list techniques and their parameters, then exit")
    p.set_defaults(func=run)


def _params(pairs: list[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        if "=" not in pair:
            raise ValueError(f"--param {pair!r}: expected KEY=VALUE")
        key, value = pair.split("=", 1)
        out[key.strip()] = value
    return out


def _progress_printer() -> Any:
    last = {"pct": -1}

    def show(fraction: float, message: str) -> None:
        pct = int(fraction * 100)
        if pct != last["pct"] or fraction >= 1.0:
            last["pct"] = pct
            bar = "#" * (pct // 5)
            print(f"\r[{bar:<20}] {pct:3d}% {message[:70]:<70}", end="" if fraction < 1.0 else "\n",
                  file=sys.stderr, flush=True)

    return show


def _summary(result: Any) -> str:
    m = result.metrics
    lines = [f"wrote {result.output} (report {result.report_path})"]
    if "size_ratio" in m:
        lines.append(f"  size      {m['size_bytes']['candidate'] / 1e6:.2f} MB ({m['size_ratio']:.3f}x FP32)")
        lines.append(f"  quality   {m['metric']} {m['quality_score']:.4f} vs FP32 ({m['eval_data']})")
        for key, lat in m.get("latency", {}).items():
            if "ratio_p50" in lat:
                lines.append(f"  latency   {key}: p50 {lat['candidate']['p50_ms']:.2f} ms "
                             f"({lat['ratio_p50']:.2f}x FP32), p95 {lat['candidate']['p95_ms']:.2f} ms")
        if m.get("memory_ratio") is not None:
            lines.append(f"  memory    {m['memory']['candidate']['peak_rss_delta_mb']:.1f} MB peak-RSS increase "
                         f"({m['memory_ratio']:.2f}x FP32)")
        for name, acc in (m.get("task") or {}).items():
            lines.append(f"  task      {name}: {acc['candidate']:.4f} (FP32 {acc['reference']:.4f})")
    for warning in result.warnings:
        lines.append(f"  warning   {warning}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Handler of ``edgefleet compress``; returns 0, or 2 with a one-line error on bad input."""
    from pathlib import Path

    from controller.compression import (
        CompressionError,
        compress,
        config_from_json,
        make_config,
        techniques,
    )

    if args.list:
        for name, cls in techniques().items():
            params = ", ".join(f"{k}: {v}" for k, v in cls.params().items())
            print(f"{name:20s} {params}")
        return 0
    missing = [flag for flag, value in (("--model", args.model), ("--out", args.out)) if not value]
    if missing or not (args.technique or args.config):
        print(f"edgefleet compress: missing {', '.join(missing) or '--technique'} (see --help)", file=sys.stderr)
        return 2
    try:
        if args.config:
            config = config_from_json(Path(args.config).read_text() if Path(args.config).exists() else args.config)
        else:
            config = make_config(args.technique, _params(args.param))
        model = args.model if not args.model.endswith((".onnx", ".pt", ".pth")) else Path(args.model)
        result = compress(model, config, out=Path(args.out),
                          calibration=Path(args.calibration) if args.calibration else None,
                          progress=_progress_printer(), evaluate=not args.no_eval,
                          threads=tuple(int(t) for t in args.threads.split(",")),
                          batches=tuple(int(b) for b in args.batches.split(",")), memory=not args.no_memory)
    except (CompressionError, ValueError, json.JSONDecodeError) as exc:
        print(f"\nedgefleet compress: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    print(_summary(result))
    return 0
