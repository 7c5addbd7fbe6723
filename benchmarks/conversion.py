"""Conversion benchmark: MiniLM-L6-v2 and MobileNetV2 built for every shipped profile.

Run (needs the ``convert`` extra for TFLite/Core ML; ONNX/TensorRT rows work without it):

    python benchmarks/conversion.py [--models mobilenetv2 minilm] [--profiles all] [--golden 100]

Writes ``benchmarks/results/conversion.json`` and ``conversion.md`` after every row, so a long run
that is cut short still leaves its table. Per row: the recipe's target and precision, artifact size,
build time, agreement of the artifact with its source (conversion fidelity) and with the FP32
reference (what the device will deliver), and batch-1 latency where the artifact runs here
(ONNX Runtime CPU for ONNX/TensorRT-fallback, ai-edge-litert for TFLite; Core ML only on macOS).
The TFLite INT8 vs FP32 latency ratio is measured in the same process, interleaved.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "benchmarks" / "results"


def _latency(runners: dict, feeds: dict, runs: int = 40, warmup: int = 5) -> dict[str, float]:
    """p50 ms per runner, runners interleaved so machine load hits them alike."""
    for run in runners.values():
        for _ in range(warmup):
            run(feeds)
    times: dict[str, list[float]] = {k: [] for k in runners}
    for _ in range(runs):
        for k, run in runners.items():
            t = time.perf_counter()
            run(feeds)
            times[k].append(time.perf_counter() - t)
    return {k: round(float(np.median(v)) * 1000, 3) for k, v in times.items()}


def _vs_fp32(ref: np.ndarray, out: np.ndarray, metric: str) -> dict[str, float]:
    from common.profiles import Tolerance
    from controller.conversion.check import compare_output

    c = compare_output("y", ref, out, Tolerance(), quality_metric=metric)
    return {"cosine": round(c.cosine, 5), "top1": None if c.top1_agreement is None else round(c.top1_agreement, 4)}


def _runner(res, names: list[str]):
    from controller.conversion.check import onnx_runner
    from controller.conversion.to_tflite import tflite_runner

    if res.format == "onnx":
        return onnx_runner(res.path)
    if res.format == "tflite":
        return tflite_runner(res.path, 1, names)
    return None


def bench_row(model: str, profile: str, out_dir: Path, golden: int, calib: int, ladder: bool = False) -> dict:
    from controller.conversion.build import build, zoo_inputs
    from controller.conversion.check import run_batched

    t0 = time.perf_counter()
    row: dict = {"model": model, "profile": profile}
    try:
        report = build(model, profile, out_dir=out_dir, golden_samples=golden, calibration_samples=calib,
                       check=ladder)
    except Exception as exc:  # noqa: BLE001 - a benchmark row records the failure and goes on
        row.update(ok=False, error=f"{type(exc).__name__}: {str(exc)[:400]}")
        return row
    conv = report.conversion
    row.update(target=report.plan["target"], precision=conv["precision"], size_mb=round(conv["size_bytes"] / 2**20, 2),
               build_s=round(time.perf_counter() - t0, 1), convert_s=conv["seconds"], ok=report.ok,
               vs_source=conv["check"], artifact=str(report.artifact))
    if ladder and report.attempts and len(report.attempts) > 1:
        row["attempts"] = [{"precision": a["precision"], "ok": a["ok"]} for a in report.attempts]
    if report.compression:
        row["vs_fp32"] = {o["name"]: {"cosine": round(o["cosine"], 5), "top1": o["top1_agreement"]}
                          for o in report.compression["check"]["outputs"]}
    else:
        row["vs_fp32"] = {o["name"]: {"cosine": round(o["cosine"], 5), "top1": o["top1_agreement"]}
                          for o in conv["check"]["outputs"]}
    inputs = zoo_inputs(model, 1, 1)
    from controller.conversion.api import ConversionResult

    res = ConversionResult.model_validate(conv)
    run = _runner(res, inputs.input_names)
    if run is not None:
        feeds = {k: v[:1] for k, v in inputs.golden.items()}
        row["latency_p50_ms"] = _latency({"a": run}, feeds)["a"]
    _ = run_batched  # imported for symmetry with the check
    return row


def _confident_agreement(inp, path: Path, min_prob: float = 0.5) -> dict:
    """Top-1 agreement on the golden inputs where FP32 torch is confident (max softmax ≥ ``min_prob``).

    The eval photos (textures, documents, microscopy) give many near-tie predictions that any
    INT8 rounding flips; this subset shows how the artifact does where FP32 has a clear answer.
    """
    import torch

    from controller.conversion.to_tflite import tflite_runner

    name = inp.input_names[0]
    x = inp.golden[name]
    with torch.no_grad():
        ref = inp.torch_module.eval()(torch.from_numpy(x)).numpy()
    prob = np.exp(ref - ref.max(1, keepdims=True))
    confident = (prob / prob.sum(1, keepdims=True)).max(1) >= min_prob
    run = tflite_runner(path, 1, inp.input_names)
    out = np.concatenate([run({name: x[i:i + 1]})[0] for i in range(len(x))])
    agree = out.argmax(1) == ref.argmax(1)
    return {"min_prob": min_prob, "samples": int(confident.sum()), "of": len(x),
            "top1": round(float(agree[confident].mean()), 4) if confident.any() else None}


def _invoke_latency(paths: dict[str, Path], runs: int) -> dict[str, float]:
    """p50 ms of ``Interpreter.invoke`` alone (inputs set once), interleaved: the kernels without Python I/O."""
    from ai_edge_litert.interpreter import Interpreter

    invokes = {}
    for key, path in paths.items():
        interp = Interpreter(model_path=str(path), num_threads=1)
        interp.allocate_tensors()
        for d in interp.get_input_details():
            interp.set_tensor(d["index"], np.zeros(d["shape"], d["dtype"]))
        invokes[key] = (lambda it: lambda _feeds: it.invoke())(interp)
    return _latency(invokes, {}, runs=runs)


def tflite_targets(out_dir: Path, golden: int, calib: int) -> dict:
    """The issue's TFLite targets, measured in one process: INT8 vs FP32 torch and vs FP32 TFLite.

    Latency is measured twice, both interleaved at 1 thread: through ``tflite_runner`` (what a
    caller pays, Python I/O included) and ``invoke()`` alone (XNNPACK's kernels only).
    """
    from controller.conversion import convert
    from controller.conversion.build import zoo_inputs
    from controller.conversion.to_tflite import TfliteOptions, tflite_runner

    out: dict = {}
    for model, metric in (("mobilenetv2", "top1"), ("minilm", "cosine")):
        inp = zoo_inputs(model, golden, calib)
        arts = {}
        for prec in ("fp32", "int8"):
            t = time.perf_counter()
            res = convert(inp.torch_module, "tflite", "android-arm64", out=out_dir / f"{model}.{prec}.tflite",
                          options=TfliteOptions(precision=prec), golden=inp.golden, calibration=inp.calibration,
                          example_inputs=inp.example_inputs, input_names=inp.input_names,
                          output_names=inp.output_names, quality_metric=metric, check=False)
            o = res.check["outputs"][0]
            arts[prec] = res
            st = res.check["structural"]
            out[f"{model}_{prec}"] = {"size_mb": round(res.size_mb, 2), "convert_s": round(time.perf_counter() - t, 1),
                                      "cosine_vs_torch_fp32": round(o["cosine"], 5),
                                      "top1_vs_torch_fp32": o["top1_agreement"],
                                      "float_ops": sum(st.get("float_ops", {}).values()),
                                      "xnnpack_partitions": st.get("delegate_partitions"),
                                      "fully_delegated": st.get("fully_delegated")}
            if metric == "top1":
                out[f"{model}_{prec}"]["top1_vs_torch_fp32_confident"] = _confident_agreement(inp, res.path)
        feeds = {k: v[:1] for k, v in inp.golden.items()}
        lat = _latency({p: tflite_runner(a.path, 1, inp.input_names) for p, a in arts.items()}, feeds, runs=60)
        raw = _invoke_latency({p: a.path for p, a in arts.items()}, runs=60)
        out[f"{model}_latency_ms"] = lat
        out[f"{model}_int8_over_fp32_latency"] = round(lat["int8"] / lat["fp32"], 3)
        out[f"{model}_invoke_latency_ms"] = raw
        out[f"{model}_int8_over_fp32_invoke_latency"] = round(raw["int8"] / raw["fp32"], 3)
    return out


def _merged(rows: list[dict], extra: dict) -> tuple[list[dict], dict]:
    """Rows of this run replace same (model, profile) rows of the previous results; others are kept."""
    path = RESULTS / "conversion.json"
    if not path.exists():
        return rows, extra
    old = json.loads(path.read_text())
    mine = {(r["model"], r["profile"]) for r in rows}
    kept = [r for r in old.get("rows", []) if (r["model"], r["profile"]) not in mine]
    for r in kept:  # a kept row says which run measured it
        r.setdefault("measured", old.get("meta", {}).get("date", "earlier run"))
    order = {(m, p): i for i, (m, p) in enumerate(sorted({(r["model"], r["profile"]) for r in kept + rows}))}
    return sorted(kept + rows, key=lambda r: order[(r["model"], r["profile"])]), extra or old.get("tflite", {})


def _verdict(r: dict) -> str:
    text = "pass" if r["ok"] else "outside tolerance"
    if r.get("attempts"):
        text += " (tried " + ", ".join(f"{a['precision']}{'' if a['ok'] else ' ✗'}" for a in r["attempts"]) + ")"
    return text


def write(rows: list[dict], extra: dict, meta: dict) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    rows, extra = _merged(rows, extra)
    earlier = sorted({r["measured"] for r in rows if r.get("measured")})
    (RESULTS / "conversion.json").write_text(json.dumps({"meta": meta, "rows": rows, "tflite": extra}, indent=2))
    lines = [f"# Conversion results ({meta['date']}, {meta['machine']})", "",
             "Artifact per (model, profile) from the profile's recipe. *vs source*: artifact vs the model it was "
             "converted from (conversion fidelity). *vs FP32*: what the device delivers vs the FP32 reference "
             "(golden = held-out real inputs). Latency: batch 1, 1 thread, on this x86 host (ORT CPU / "
             "ai-edge-litert), not on the device. Rows whose check says *tried ...* were built with the tolerance "
             "enforced (`--ladder`: what `edgefleet build` ships); the others show the recipe as written. "
             "Core ML rows are structural (spec, I/O names/shapes, compressed-weight ops): no Core ML runtime "
             "on Linux. *top1* of an embedding model (minilm) is the argmax of embedding dimensions: reported, "
             "not enforced (its gate is cosine)."
             + "".join(f" [{i}]: row kept from the run of {d}." for i, d in enumerate(earlier, 1)), "",
             "| model | profile | target | precision | size MB | build s | vs source cos | vs FP32 cos | vs FP32 top1 "
             "| p50 ms | check |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['model']} | {r['profile']} | | | | | | | | | ERROR {r['error'][:80]} |")
            continue
        vs = r["vs_source"]["outputs"]
        src_cos = f"{vs[0]['cosine']:.5f}" if vs else "structural " + ("ok" if r["vs_source"]["ok"] else "FAIL")
        fp = next(iter(r["vs_fp32"].values()), {})
        mark = f" [{earlier.index(r['measured']) + 1}]" if r.get("measured") else ""
        lines.append(f"| {r['model']} | {r['profile']}{mark} | {r['target']} | {r['precision']} | {r['size_mb']} | "
                     f"{r['build_s']} | {src_cos} | {fp.get('cosine', '-')} | {fp.get('top1', '-')} | "
                     f"{r.get('latency_p50_ms', '-')} | {_verdict(r)} |")
    if extra:
        lines += ["", "## TFLite targets (same process, interleaved latency)", "", "```", json.dumps(extra, indent=2),
                  "```"]
    (RESULTS / "conversion.md").write_text("\n".join(lines) + "\n")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", nargs="+", default=["mobilenetv2", "minilm"])
    ap.add_argument("--profiles", nargs="+", default=["all"])
    ap.add_argument("--golden", type=int, default=64)
    ap.add_argument("--calibration", type=int, default=32)
    ap.add_argument("--out", type=Path, default=Path("/tmp/edgefleet-conversion-bench"))
    ap.add_argument("--skip-tflite-targets", action="store_true")
    ap.add_argument("--ladder", action="store_true",
                    help="enforce the tolerance with the precision ladder (what `edgefleet build` ships)")
    args = ap.parse_args()
    from common.profiles import list_profiles

    profiles = [p.id for p in list_profiles()] if "all" in args.profiles else args.profiles
    meta = {"date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"), "machine": f"{platform.machine()}, "
            f"{__import__('os').cpu_count()} cores (shared)", "golden": args.golden, "calibration": args.calibration}
    rows: list[dict] = []
    extra: dict = {}
    if not args.skip_tflite_targets:
        try:
            extra = tflite_targets(args.out, args.golden, args.calibration)
        except Exception as exc:  # noqa: BLE001
            extra = {"error": f"{type(exc).__name__}: {str(exc)[:300]}"}
        write(rows, extra, meta)
    for model in args.models:
        for pid in profiles:
            rows.append(bench_row(model, pid, args.out, args.golden, args.calibration, args.ladder))
            print(json.dumps({k: v for k, v in rows[-1].items() if k != "vs_source"}), flush=True)
            write(rows, extra, meta)
    return 0


if __name__ == "__main__":
    sys.exit(main())
