"""``edgefleet compress``: any technique on a zoo model or a user's ONNX, with progress and a JSON report.

    edgefleet compress --model mobilenetv2 --technique int8-static --out build/mnv2-int8.onnx
    edgefleet compress --model user.onnx --technique int8-static --calibration calib.npz \\
        --param calibration_method=entropy --param calibration_samples=64 --out user-int8.onnx
    edgefleet compress --model model.onnx --technique int8-static --calibration calib.npz \
        --eval heldout.npz --metric top1_agreement --out model-int8.onnx
    edgefleet compress --list                     # techniques and their parameters

Data (--calibration, --eval): an .npz whose keys are the model's input names with the samples
stacked on axis 0, or a directory holding one .npz per sample. Each sample whose rank already
equals the graph input's rank is fed as is (recurrent states, e.g. `state` stored as
(N, 2, 1, 128) for a (2, batch, 128) input; scalars, e.g. `sr` stored as (N,) for a rank-0
input); otherwise a batch axis of 1 is added (an image stored as (N, 3, 224, 224)). Integer and
bool inputs pass through; float64/int32 are cast to the graph's float32/int64. Fixed and dynamic
batch axes both work. --eval must be held out (not the calibration samples): without it the
report flags quality as measured on the calibration data.

Models: a zoo name, an .onnx file (its external weight files, e.g. model.onnx.data, beside it:
all of them count in the size), or a .zip holding one .onnx and its weight files. Opsets below
what a technique needs are raised with onnx's version converter (per-channel INT8 needs 13; if
that is impossible, per-tensor weights are used) and the report says so.

Speed: int8-static and mixed are timed against FP32 on this host with the profile's ORT tuning;
a result that is slower is replaced by the best option that is not (FP16, INT4 weight-only or the
FP32 model itself), with the reason in the report. --allow-slower keeps it anyway.

Metrics (--metric): top1_agreement, cosine, mean_abs_diff, sequence_agreement (per-step argmax
of (N, steps, classes) outputs: CTC), or your own module:function(reference_outputs,
candidate_outputs) -> float (first output, samples on axis 0; higher is better).

Importing this module is cheap (no torch / onnx): the engine is imported inside the handler.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

TECHNIQUE_NAMES = ("int8-static", "int8-dynamic", "int4-weight", "fp16", "mixed", "qat", "prune-unstructured",
                   "prune-structured", "distill", "svd", "tucker")


def register(sub: Any) -> None:
    """Add the ``compress`` subcommand to the ``edgefleet`` parser."""
    p = sub.add_parser("compress", help="compress a model with one technique and measure it against FP32",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", help="zoo name (minilm, mobilenetv2, mnist-cnn), an .onnx file (external data beside "
                   "it) or a .zip of the .onnx and its weight files")
    p.add_argument("--technique", help=f"one of: {', '.join(TECHNIQUE_NAMES)}")
    p.add_argument("--param", action="append", default=[], metavar="K=V", help="technique parameter (repeatable)")
    p.add_argument("--config", help="technique config as JSON (instead of --technique/--param)")
    p.add_argument("--calibration", help="calibration data: .npz (keys = input names, samples on axis 0) or a "
                   "directory of one .npz per sample (see the data contract above)")
    p.add_argument("--eval", help="held-out data to measure quality on, same contract as --calibration")
    p.add_argument("--metric", help="top1_agreement, cosine, mean_abs_diff, sequence_agreement or module:function "
                   "(default: the model's own, cosine for ONNX files)")
    p.add_argument("--allow-slower", action="store_true", help="deliver a quantized model even when it is slower "
                   "than FP32 on this host")
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
        held = (m.get("eval") or {}).get("held_out")
        flag = "" if held else "  [NOT held out]"
        lines.append(f"  quality   {m['metric']} {m['quality_score']:.4f} vs FP32 on {m['eval_data']}"
                     f" ({(m.get('eval') or {}).get('samples', m.get('n_inputs'))} samples){flag}")
        for key, lat in m.get("latency", {}).items():
            if "ratio_p50" in lat:
                lines.append(f"  latency   {key}: p50 {lat['candidate']['p50_ms']:.2f} ms "
                             f"({lat['ratio_p50']:.2f}x FP32), p95 {lat['candidate']['p95_ms']:.2f} ms")
        if m.get("memory_ratio") is not None:
            lines.append(f"  memory    {m['memory']['candidate']['peak_rss_delta_mb']:.1f} MB peak-RSS increase "
                         f"({m['memory_ratio']:.2f}x FP32)")
        for name, acc in (m.get("task") or {}).items():
            lines.append(f"  task      {name}: {acc['candidate']:.4f} (FP32 {acc['reference']:.4f})")
    opset = result.report.get("opset") or {}
    if opset.get("converted"):
        lines.append(f"  opset     raised {opset['from']} -> {opset['to']} ({opset['method']})")
    elif opset.get("fallback"):
        lines.append(f"  opset     {opset['from']} kept ({opset.get('error')}): {opset['fallback']}")
    guard = result.report.get("speed_guard") or {}
    if guard:
        lines.append(f"  delivered {guard['delivered']}" + (" (see the warning below)" if guard.get("reason") else
                                                           f" ({guard['measured'][0]['latency_ratio']:.2f}x FP32 "
                                                           "latency in the speed check)"))
    for warning in result.warnings:
        lines.append(f"  warning   {warning}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Handler of ``edgefleet compress``; returns 0, or 2 with a one-line error on bad input (no traceback)."""
    try:
        return _run(args)
    except ModuleNotFoundError as exc:
        print(f"edgefleet compress: needs the controller's libraries ({exc.name} is not installed here; this looks "
              "like an agent-only install). Install them with: pip install 'edgefleet[controller]'", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\nedgefleet compress: interrupted; nothing written", file=sys.stderr)
        return 130


def _run(args: argparse.Namespace) -> int:
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
    out = Path(args.out)
    try:
        if args.config:
            config = config_from_json(Path(args.config).read_text() if Path(args.config).exists() else args.config)
        else:
            config = make_config(args.technique, _params(args.param))
        model = args.model if not args.model.endswith((".onnx", ".pt", ".pth", ".zip")) else Path(args.model)
        result = compress(model, config, out=out,
                          calibration=Path(args.calibration) if args.calibration else None,
                          eval_data=Path(args.eval) if args.eval else None, metric=args.metric,
                          never_slower=not args.allow_slower,
                          progress=_progress_printer(), evaluate=not args.no_eval,
                          threads=_ints("--threads", args.threads), batches=_ints("--batches", args.batches),
                          memory=not args.no_memory)
    except (CompressionError, ValueError, json.JSONDecodeError) as exc:
        print(f"\nedgefleet compress: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    except ModuleNotFoundError:
        raise  # an install without the controller extra: ``run`` says what to install
    except Exception as exc:  # noqa: BLE001 - a library failure on an unusual model: one line, not a traceback
        print(f"\nedgefleet compress: {args.technique or 'compression'} failed on {args.model}: {type(exc).__name__}: "
              f"{str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ''} (nothing written to {out}); "
              "try another technique or report the model", file=sys.stderr)
        return 1
    print(_summary(result))
    return 0


def _ints(flag: str, text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(t) for t in text.split(","))
    except ValueError:
        raise ValueError(f"{flag} {text!r}: expected comma-separated integers, e.g. 1,2") from None
    if not values or min(values) < 1:
        raise ValueError(f"{flag} {text!r}: every value must be >= 1")
    return values
