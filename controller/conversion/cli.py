"""``edgefleet build`` (recipe end to end) and ``edgefleet convert`` (one converter).

Imports nothing heavy at module level: ``edgefleet --help`` must stay fast and
work on an install without torch.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``build`` and ``convert`` to the ``edgefleet`` parser."""
    b = sub.add_parser("build", help="compress + convert a model for a device profile, checked against FP32")
    b.add_argument("--model", required=True, help="zoo name (minilm, mobilenetv2, mnist-cnn) or .onnx/.pt2 path")
    b.add_argument("--profile", required=True, action="append",
                   help="profile id or .toml path (repeat, or 'all' for every shipped profile)")
    b.add_argument("--out", type=Path, default=Path("build"), help="output directory")
    b.add_argument("--golden-samples", type=int, default=32)
    b.add_argument("--calibration-samples", type=int, default=64)
    b.add_argument("--calibration", type=Path, help="your model's calibration data (.npz, keys = input names, "
                   "samples on axis 0, or a directory of per-sample .npz; see `edgefleet compress --help`)")
    b.add_argument("--eval", type=Path, help="held-out data (same layout) the artifact is checked on against FP32")
    b.add_argument("--allow-synthetic", action="store_true", help="calibrate/check a non-zoo model on random "
                   "inputs when no data is given (every report line then says SYNTHETIC)")
    b.add_argument("--allow-slower", action="store_true", help="ship a quantized model even when it is slower than "
                   "FP32 on this host")
    b.add_argument("--metric", choices=["cosine", "top1"], default="cosine",
                   help="quality metric for a non-zoo model (zoo models use their own)")
    b.add_argument("--workspace", type=Path, help="record versions + lineage in this registry workspace")
    b.add_argument("--no-check", action="store_true", help="report drift but do not fail on it")
    b.add_argument("--json", action="store_true")
    b.set_defaults(func=_cmd_build)

    c = sub.add_parser("convert", help="convert one model file for one target, checked against the source")
    c.add_argument("model", type=Path, help=".onnx or .pt2 file")
    c.add_argument("--target", required=True, help="onnx, tensorrt, tflite, coreml")
    c.add_argument("--profile", required=True)
    c.add_argument("--out", type=Path, required=True)
    c.add_argument("--metric", choices=["cosine", "top1"], default="cosine")
    c.set_defaults(func=_cmd_convert)


def _profiles(values: list[str]) -> list[str]:
    if "all" in values:
        from common.profiles import list_profiles

        return [p.id for p in list_profiles()]
    return values


def _cmd_build(args: argparse.Namespace) -> int:
    try:
        return _build_all(args)
    except ModuleNotFoundError as exc:
        print(f"edgefleet build: needs the controller's libraries ({exc.name} is not installed here); install them "
              "with: pip install 'edgefleet[controller]'", file=sys.stderr)
        return 2


def _build_all(args: argparse.Namespace) -> int:
    from controller.compression.errors import CompressionError
    from controller.conversion.build import build
    from controller.conversion.errors import ConversionError

    registry = None
    if args.workspace:
        from controller.registry import Registry

        registry = Registry(args.workspace)
    failed, summaries = 0, []
    for pid in _profiles(args.profile):
        try:
            report = build(args.model, pid, out_dir=args.out, registry=registry, golden_samples=args.golden_samples,
                           calibration_samples=args.calibration_samples, check=not args.no_check,
                           never_slower=not args.allow_slower,
                           calibration=args.calibration, eval_data=args.eval, allow_synthetic=args.allow_synthetic,
                           quality_metric=args.metric)
        except (ConversionError, CompressionError, ValueError) as exc:
            failed += 1
            print(f"FAILED {args.model} for {pid}: {exc}", file=sys.stderr)
            summaries.append(f"  {pid:18s} FAILED (see above)")
            continue
        failed += not report.ok
        summaries.append(summary_line(report))
        if args.json:
            print(json.dumps(report.to_dict(), indent=2))
            continue
        conv = report.conversion or {}
        comp = f" | vs FP32 after {report.compression['technique']}: " + _quality(
            report.compression["check"]) if report.compression else ""
        print(f"{'ok    ' if report.ok else 'DRIFT '} {report.model} -> {pid}: {report.artifact} "
              f"({conv.get('precision')}, {conv.get('size_bytes', 0) / 2**20:.2f} MB) "
              f"vs source: {_quality(conv.get('check') or {})}{comp}{_synthetic_tag(report)}")
    if not args.json:
        print("\nsummary (format, size, latency vs FP32 on this host, quality, data):")
        print("\n".join(summaries))
        print(_next_steps(args, failed))
    return 1 if failed else 0


def _synthetic_tag(report: object) -> str:
    return "  [SYNTHETIC DATA: quality figures say nothing about real inputs]" if (
        getattr(report, "data", {}) or {}).get("synthetic") else ""


def summary_line(report: object) -> str:
    """One line per profile: format, size, latency ratio on this host, quality and which data it was measured on."""
    conv = getattr(report, "conversion", None) or {}
    check = conv.get("check") or {}
    outs = check.get("outputs") or []
    quality = "structural only" if not outs else ", ".join(
        (f"top1 {o['top1_agreement']:.3f}" if o.get("top1_agreement") is not None else f"cos {o['cosine']:.4f}")
        for o in outs[:1])
    comp = getattr(report, "compression", None)
    technique = comp["technique"] if comp else conv.get("precision", "?")
    guard = (comp or {}).get("speed_guard") or {}
    if guard.get("delivered") and guard["delivered"] != technique:
        technique = f"{technique}->{guard['delivered']} (slower than FP32 here)"
    ratio = getattr(report, "host_latency_ratio", None)
    latency = f"{ratio:.2f}x FP32" if ratio is not None else "latency n/a here"
    data = (getattr(report, "data", {}) or {}).get("check", {})
    where = data.get("data", "?") + ("" if data.get("held_out") else " (not held out)")
    status = "ok" if getattr(report, "ok", False) else "DRIFT"
    return (f"  {getattr(report, 'profile', '?'):18s} {status:5s} {conv.get('format', '?')} {technique}, "
            f"{conv.get('size_bytes', 0) / 2**20:.2f} MB, {latency}, {quality} on {where}{_synthetic_tag(report)}")


def _next_steps(args: argparse.Namespace, failed: int) -> str:
    if failed:
        return ("next: fix the FAILED/DRIFT profiles above (real --calibration/--eval data, --no-check to keep a "
                "drifting artifact, or another profile), then re-run this command")
    return (f"next: upload and deploy — `edgefleet models upload NAME {args.model}` then `edgefleet deploy create "
            f"VERSION_ID DEVICE...` (the controller builds and signs each profile's artifact), or copy the artifacts "
            f"in {args.out}/ with their .build.json")


def _quality(check: dict) -> str:
    outs = check.get("outputs") or []
    if not outs:
        return "structural only" + ("" if check.get("ok", True) else " (FAILED)")
    return ", ".join(f"{o['name']} cos {o['cosine']:.4f}" + (
        f" top1 {o['top1_agreement']:.3f}" if o.get("top1_agreement") is not None else "") for o in outs)


def _cmd_convert(args: argparse.Namespace) -> int:
    from controller.conversion import ConversionError, convert

    try:
        res = convert(args.model, args.target, args.profile, out=args.out, quality_metric=args.metric)
    except ConversionError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(res.model_dump(mode="json"), indent=2))
    return 0
