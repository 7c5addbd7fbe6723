"""The aarch64 agent's stack under qemu-user: same answers as x86? how slow is emulation?

For each zoo model (FP32 export and its INT8 static QDQ build, the demo's recipe for a profile with
dot-product, i.e. rpi5) the same held-out inputs run through onnxruntime on this x86-64 host and
through the aarch64 onnxruntime (:data:`controller.demo.aarch64.ORT_VERSION`) in Debian's arm64
Python under ``qemu-aarch64-static`` (``controller.demo.aarch64``). Reported per build: agreement of
the two (top-1 agreement for classifiers, mean cosine for embeddings), each one's quality against
the x86 FP32 reference, and the per-inference time of both (the emulated one means nothing about a
Raspberry Pi: it sizes the test and the demo).

Also checks that newer onnxruntime releases really fail to import under this qemu (the reason for the
pin): ``--probe-ort 1.27.0 1.28.0``.

    nice -n 10 python benchmarks/aarch64_emulated.py --models mnist-cnn,mobilenetv2,minilm --samples 24
Writes benchmarks/results/aarch64_emulated.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

CHILD = r"""
import sys, time, json, numpy as np, onnxruntime as ort
model, inputs, out = sys.argv[1:4]
opts = ort.SessionOptions(); opts.intra_op_num_threads = 1; opts.inter_op_num_threads = 1
opts.add_session_config_entry("session.set_denormal_as_zero", "1")
sess = ort.InferenceSession(model, sess_options=opts, providers=["CPUExecutionProvider"])
data = np.load(inputs); names = [i.name for i in sess.get_inputs()]
n = len(data[names[0]]); outs = []; times = []
sess.run(None, {k: data[k][0:1] for k in names})
for i in range(n):
    t0 = time.perf_counter(); outs.append(sess.run(None, {k: data[k][i:i+1] for k in names})[0])
    times.append(time.perf_counter() - t0)
np.save(out, np.concatenate(outs))
print(json.dumps({"ort": ort.__version__, "ms": [t * 1000 for t in times]}))
"""


def run_child(python: list[str], env: dict[str, str], model: Path, inputs: Path, out: Path) -> dict:
    proc = subprocess.run([*python, "-c", CHILD, str(model), str(inputs), str(out)], env=env, capture_output=True,
                          text=True, timeout=3600)
    if proc.returncode != 0:
        raise RuntimeError(f"child failed ({proc.returncode}): {proc.stderr[-800:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def compare(metric: str, a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.reshape(len(a), -1), b.reshape(len(b), -1)
    if metric == "top1":
        return float(np.mean(a.argmax(1) == b.argmax(1)))
    cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-12)
    return float(cos.mean())


def builds(name: str, workdir: Path, calibration: int) -> dict[str, Path]:
    import dataclasses

    from controller import zoo
    from controller.compression import compress
    from controller.compression.recipes import recommended_int8

    entry = zoo.load(name)
    cfg = dataclasses.replace(recommended_int8(name), calibration_samples=calibration, reduce_range=False)
    int8 = compress(entry, cfg, out=workdir / f"{name}-int8.onnx", memory=False).output
    return {"fp32": Path(entry.onnx_path), "int8": Path(int8)}


def probe(env, versions: list[str], cpu: str) -> dict[str, str]:
    """Install each onnxruntime release beside the tree and import it under qemu."""
    from controller.demo.aarch64 import PLATFORMS

    result = {}
    for version in versions:
        with tempfile.TemporaryDirectory() as tmp:
            plats = [a for p in PLATFORMS for a in ("--platform", p)]
            subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-warn-conflicts",
                            "--target", tmp, *plats, "--only-binary=:all:", "--python-version", "3.11",
                            f"onnxruntime=={version}"], check=True, capture_output=True)
            child_env = env.environ(cpu=cpu)
            child_env["PYTHONPATH"] = os.pathsep.join([tmp, child_env["PYTHONPATH"]])
            proc = subprocess.run([str(env.python), "-c", "import onnxruntime; print(onnxruntime.__version__)"],
                                  env=child_env, capture_output=True, text=True, timeout=300)
            result[version] = "imports" if proc.returncode == 0 else f"exit {proc.returncode} (signal)" \
                if proc.returncode > 128 or proc.returncode < 0 else f"exit {proc.returncode}"
    return result


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", default="mnist-cnn,mobilenetv2,minilm")
    parser.add_argument("--samples", type=int, default=24)
    parser.add_argument("--calibration", type=int, default=32)
    parser.add_argument("--probe-ort", nargs="*", default=["1.27.0", "1.28.0"])
    parser.add_argument("--cpu", default="cortex-a76", help="qemu -cpu model (rpi5's core; the demo's emulated device)")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "aarch64_emulated")
    args = parser.parse_args()

    from controller import zoo
    from controller.demo.aarch64 import ORT_VERSION, ensure_aarch64_env

    t0 = time.monotonic()
    env = ensure_aarch64_env(say=print)
    setup_s = round(time.monotonic() - t0, 1)
    rows = []
    with tempfile.TemporaryDirectory() as tmpdir:
        work = Path(tmpdir)
        for name in args.models.split(","):
            entry = zoo.load(name)
            samples = entry.eval_inputs(args.samples)
            inputs = work / f"{name}-in.npz"
            np.savez(inputs, **{k: np.concatenate([s[k] for s in samples]) for k in samples[0]})
            paths = builds(name, work, args.calibration)
            ref = None
            for build, path in paths.items():
                x86 = run_child([sys.executable], dict(os.environ), path, inputs, work / "x86.npy")
                arm = run_child([str(env.python)], env.environ(cpu=args.cpu), path, inputs, work / "arm.npy")
                xo, ao = np.load(work / "x86.npy"), np.load(work / "arm.npy")
                ref = xo if ref is None else ref
                rows.append({
                    "model": name, "build": build, "metric": entry.quality_metric, "samples": len(samples),
                    "arm_vs_x86_same_build": round(compare(entry.quality_metric, ao, xo), 5),
                    "x86_quality_vs_fp32": round(compare(entry.quality_metric, xo, ref), 5),
                    "arm_quality_vs_fp32_x86": round(compare(entry.quality_metric, ao, ref), 5),
                    "x86_ms_median": round(float(np.median(x86["ms"])), 2),
                    "arm_emulated_ms_median": round(float(np.median(arm["ms"])), 1),
                    "ort_x86": x86["ort"], "ort_arm": arm["ort"],
                })
                print(json.dumps(rows[-1]), flush=True)
    probes = probe(env, args.probe_ort, args.cpu) if args.probe_ort else {}
    result = {
        "host": platform.processor() or platform.machine(), "cores": os.cpu_count(),
        "qemu_cpu": args.cpu,
        "qemu": subprocess.run([env.qemu, "--version"], capture_output=True, text=True).stdout.splitlines()[0],
        "ort_aarch64": ORT_VERSION, "tree_setup_s": setup_s, "rows": rows, "ort_import_probe": probes,
        "budget": "1 intra-op thread per run, nice -n 10, shared 2-core host with other sessions running",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=2))
    lines = [
        "# aarch64 agent stack under qemu-user vs x86-64", "",
        f"{result['qemu']} (-cpu {args.cpu}); aarch64 onnxruntime {ORT_VERSION} (Debian 12 arm64 python3.11) "
        "vs x86 onnxruntime "
        f"{rows[0]['ort_x86'] if rows else '?'}; {result['budget']}.", "",
        "| model | build | metric | n | ARM vs x86 (same build) | x86 quality vs FP32 | ARM quality vs FP32 (x86) "
        "| x86 ms | emulated ARM ms |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        lines.append(f"| {r['model']} | {r['build']} | {r['metric']} | {r['samples']} | {r['arm_vs_x86_same_build']} "
                     f"| {r['x86_quality_vs_fp32']} | {r['arm_quality_vs_fp32_x86']} | {r['x86_ms_median']} "
                     f"| {r['arm_emulated_ms_median']} |")
    if probes:
        lines += ["", "onnxruntime import under this qemu: " + ", ".join(f"{v}: {s}" for v, s in probes.items())]
    lines += ["", "Emulated milliseconds describe qemu's translation of the ARM kernels, not any ARM CPU."]
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
