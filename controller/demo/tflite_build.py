"""The demo's TFLite builds: FP32 → dynamic-range INT8 → a degraded INT8, made in the convert venv.

Why a module run as a subprocess: the TFLite converter (litert-torch, ai-edge-quantizer)
needs pins that clash with the main venv (see the Makefile), so the demo, which runs in
the main venv, runs ``python -m controller.demo.tflite_build`` with ``.venv-convert``'s
interpreter and reads back ``tflite.json`` (:mod:`controller.demo.tflite` does that and
caches the result). Only this module imports the converter.

Why dynamic-range INT8: MiniLM's LayerNorm, GELU and softmax do not survive full-integer
INT8 (cosine 0.955 against FP32, see docs/conversion.md); dynamic-range INT8 keeps INT8
weights and quantizes activations on the fly (cosine 0.998). The degraded build is the
same conversion of a *damaged* torch model (Gaussian noise on every Linear/Conv weight,
just enough to fall under :data:`DEGRADE_TARGET`): same graph, size and speed as the good
INT8 build, so only the on-device golden-set check can tell it apart, as with the ONNX
degraded build.

Example:
    $ .venv-convert/bin/python -m controller.demo.tflite_build --model minilm --profile android-arm64 --out DIR
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

BUILDS: tuple[tuple[str, str], ...] = (("fp32", "fp32"), ("int8", "int8-dynamic"), ("degraded", "int8-dynamic"))
"""(build name, TFLite precision) in the order the demo deploys them."""

DEGRADE_STEPS = (0.06, 0.12, 0.25, 0.5, 1.0, 2.0)
"""Noise levels tried, as a fraction of each weight's standard deviation, until the damage shows."""

DEGRADE_TARGET = {"cosine": 0.95, "top1": 0.90}
"""Quality vs FP32 (torch, golden inputs) the damaged model must fall to: well under the agents' gate
(``min_quality`` 0.98, ``max_quality_drop`` 0.02). MiniLM gets there at 0.12 × std; a CNN needs more."""

REPORT = "tflite.json"


def perturb_weights(module: Any, *, noise: float, seed: int = 7) -> int:
    """Add Gaussian noise (``noise`` × the tensor's std) to every Linear and Conv weight, in place.

    Why these: they hold nearly all of a model's weights, and the damage then looks like a
    bad fine-tune or a corrupted checkpoint rather than a broken graph (same ops, same size).
    Returns how many tensors were changed.

    Raises:
        ValueError: the model has no Linear or Conv layer to damage.
    """
    import torch

    gen = torch.Generator().manual_seed(seed)
    changed = 0
    with torch.no_grad():
        for layer in module.modules():
            if isinstance(layer, torch.nn.Linear | torch.nn.Conv1d | torch.nn.Conv2d):
                w = layer.weight
                w.add_(torch.randn(w.shape, generator=gen, dtype=w.dtype) * w.std() * noise)
                changed += 1
    if not changed:
        raise ValueError(f"{type(module).__name__} has no Linear or Conv weights to perturb")
    return changed


def _quality(reference: Any, candidate: Any, metric: str) -> float:
    """Mean per-sample cosine, or top-1 agreement over the last axis, as the agents score it."""
    import numpy as np

    ref, cand = np.asarray(reference, np.float64), np.asarray(candidate, np.float64)
    if metric == "top1":
        return float((ref.argmax(-1) == cand.argmax(-1)).mean())
    a, b = ref.reshape(len(ref), -1), cand.reshape(len(cand), -1)
    cos = (a * b).sum(1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12)
    return float(cos.mean())


def damaged_copy(module: Any, inputs: Any, *, seed: int = 7) -> tuple[Any, dict[str, Any]]:
    """A copy of ``module`` with its weights damaged just enough to fall under :data:`DEGRADE_TARGET`.

    Why calibrated: one fixed noise level is either invisible on a robust CNN or destroys a
    transformer; the demo wants a build that looks healthy (same graph, size, speed) and
    that only the quality check catches. Returns the copy and what was done to it.
    """
    import copy

    import numpy as np
    import torch

    target = DEGRADE_TARGET[inputs.quality_metric]
    args = [torch.from_numpy(np.ascontiguousarray(inputs.golden[n])) for n in inputs.input_names]

    def run(m: Any) -> Any:
        with torch.no_grad():
            out = m(*args)
        return (out[0] if isinstance(out, tuple | list) else out).numpy()

    reference = run(module)
    for noise in DEGRADE_STEPS:
        damaged = copy.deepcopy(module)
        changed = perturb_weights(damaged, noise=noise, seed=seed)
        quality = _quality(reference, run(damaged), inputs.quality_metric)
        if quality <= target:
            break
    info = {"perturbation": "gaussian", "relative_to_weight_std": noise, "seed": seed, "weight_tensors": changed,
            "torch_quality_vs_fp32": round(quality, 5), "target": target, "metric": inputs.quality_metric}
    return damaged, info


def _vs_fp32(reference_onnx: Path, artifact: Path, inputs: Any, profile: Any) -> dict[str, Any]:
    """The artifact against the FP32 ONNX reference on the golden inputs: what the device will measure."""
    from controller.conversion.check import cross_runtime_check, onnx_runner
    from controller.conversion.to_tflite import tflite_runner

    report = cross_runtime_check(
        onnx_runner(reference_onnx, optimize=False), tflite_runner(artifact, 1, inputs.input_names), inputs.golden,
        profile.tolerance, target="tflite", profile=profile.id, output_names=inputs.output_names,
        quality_metric=inputs.quality_metric,
    ).to_dict()
    out = report["outputs"][0]
    return {"ok": report["ok"], "cosine": out["cosine"], "min_cosine": out["min_cosine"],
            "top1_agreement": out["top1_agreement"], "max_abs_error": out["max_abs_error"]}


def build_tflite_set(model: str, profile: str, out_dir: Path, *, golden_samples: int = 24) -> dict[str, Any]:
    """Convert the zoo model three times (FP32, INT8, degraded INT8) and write ``tflite.json``.

    FP32 and INT8 are converted with the profile's tolerance enforced (a miss raises
    ``CrossRuntimeMismatchError``); the degraded build is expected to miss it, so it is
    only measured. Every build also carries its cosine against the FP32 ONNX reference,
    the same reference the agents' golden set holds.
    """
    from common.profiles import load_profile
    from controller.conversion import convert
    from controller.conversion.build import zoo_inputs
    from controller.conversion.to_tflite import TfliteOptions

    prof = load_profile(profile)
    inputs = zoo_inputs(model, golden_samples, calibration_samples=4)
    assert inputs.onnx_path is not None  # zoo models always have their FP32 ONNX export
    out_dir.mkdir(parents=True, exist_ok=True)
    builds: dict[str, Any] = {}
    degradation: dict[str, Any] = {}
    for name, precision in BUILDS:
        t0 = time.monotonic()
        module = inputs.torch_module
        if name == "degraded":
            module, degradation = damaged_copy(inputs.torch_module, inputs)
        out = out_dir / f"{model}-{name}.tflite"
        res = convert(
            module, "tflite", prof, out=out, options=TfliteOptions(precision=precision), golden=inputs.golden,
            example_inputs=inputs.example_inputs, input_names=inputs.input_names, output_names=inputs.output_names,
            quality_metric=inputs.quality_metric, check=name != "degraded",
        )
        builds[name] = {
            "file": out.name,
            "precision": res.precision,
            "size_bytes": res.size_bytes,
            "sha256": res.sha256,
            "notes": list(res.notes),
            "vs_fp32": _vs_fp32(inputs.onnx_path, out, inputs, prof),
            "seconds": round(time.monotonic() - t0, 1),
        }
        print(f"{name}: {precision} {res.size_mb:.1f} MB, cosine vs FP32 "
              f"{builds[name]['vs_fp32']['cosine']:.4f} ({builds[name]['seconds']} s)", flush=True)
    report = {
        "schema_version": 1,
        "model": model,
        "profile": profile,
        "golden_samples": golden_samples,
        "degradation": degradation,
        "tool_versions": _tool_versions(),
        "builds": builds,
    }
    (out_dir / REPORT).write_text(json.dumps(report, indent=2))
    return report


def _tool_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("torch", "litert-torch", "ai-edge-litert", "ai-edge-quantizer"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "missing"
    return out


def main(argv: list[str] | None = None) -> int:
    """CLI for the demo's subprocess: exit 0 with ``tflite.json`` written, else 1 with the error on stderr."""
    p = argparse.ArgumentParser(prog="python -m controller.demo.tflite_build", description=__doc__.splitlines()[0])
    p.add_argument("--model", default="minilm")
    p.add_argument("--profile", default="android-arm64")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--golden-samples", type=int, default=24)
    args = p.parse_args(argv)
    try:
        build_tflite_set(args.model, args.profile, args.out, golden_samples=args.golden_samples)
    except Exception as exc:  # noqa: BLE001 - the parent reads the message from the log
        print(f"tflite build failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
