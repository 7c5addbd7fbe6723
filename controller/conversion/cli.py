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
    b.add_argument("--workspace", type=Path, help="record versions + lineage in this registry workspace")
    b.add_argument("--no-check", action="store_true", help="report drift but do not fail on it")
    b.add_argument("--json", action="store_true")
    b.set_defaults(func=_cmd_build)

    c = sub.add_parser("convert", help="convert one model file for one target, checked against the source")
    c.add_argument("--model", type=Path, required=True, help=".onnx or .pt2 file (like compress and build)")
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
    from controller.conversion.build import build
    from controller.conversion.errors import ConversionError

    registry = None
    if args.workspace:
        from controller.registry import Registry

        registry = Registry(args.workspace)
    failed = 0
    for pid in _profiles(args.profile):
        try:
            report = build(args.model, pid, out_dir=args.out, registry=registry, golden_samples=args.golden_samples,
                           calibration_samples=args.calibration_samples, check=not args.no_check)
        except ConversionError as exc:
            failed += 1
            print(f"FAILED {args.model} for {pid}:\n{exc}", file=sys.stderr)
            continue
        failed += not report.ok
        if args.json:
            print(json.dumps(report.to_dict(), indent=2))
            continue
        conv = report.conversion or {}
        comp = f" | vs FP32 after {report.compression['technique']}: " + _quality(
            report.compression["check"]) if report.compression else ""
        print(f"{'ok    ' if report.ok else 'DRIFT '} {report.model} -> {pid}: {report.artifact} "
              f"({conv.get('precision')}, {conv.get('size_bytes', 0) / 2**20:.2f} MB) "
              f"vs source: {_quality(conv.get('check') or {})}{comp}")
    return 1 if failed else 0


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
