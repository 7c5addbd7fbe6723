"""The model versions the demo deploys, all recorded in the registry with lineage.

ONNX profiles: FP32 (zoo export) → INT8 static QDQ per profile family (``reduce_range``
where the profile has no INT8 dot-product instructions) → a degraded child of the INT8 build.
TFLite profiles (``android-arm64``): FP32 ``.tflite`` → dynamic-range INT8 → degraded INT8,
built in the convert venv (:mod:`controller.demo.tflite`), all children of the same FP32
ONNX root, so every device is judged against the same golden set.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from common.profiles import load_profile
from controller.demo.degrade import perturb_int8_weights

if TYPE_CHECKING:
    from controller.demo.tflite import TfliteSet

Progress = Callable[[str], None]


def build_versions(
    registry: Any, *, model: str, profiles: tuple[str, ...], out_dir: Path, calibration_samples: int,
    say: Progress, tflite: TfliteSet | None = None, tflite_profiles: tuple[str, ...] = (),
) -> dict[str, Any]:
    """Register FP32, compress INT8 per reduce_range family, derive the degraded build; return their ids.

    ``profiles`` are the ONNX devices' profiles; ``tflite_profiles`` get the versions of the
    ``tflite`` set instead (registered by :func:`register_tflite`). The result maps each
    stage to a version per profile: ``fp32`` (the ONNX root, the default target),
    ``fp32_per_profile``, ``int8`` and ``degraded``.
    """
    import dataclasses

    from controller import zoo
    from controller.compression import compress
    from controller.compression.recipes import recommended_int8

    out_dir.mkdir(parents=True, exist_ok=True)
    entry = zoo.load(model)
    say(f"exporting {model} to ONNX (FP32)")
    fp32_path = entry.onnx_path
    model_rec = registry.ensure_model(name=model, description=f"zoo model {model}", actor="demo")
    fp32 = registry.add_version(
        model_id=model_rec.id, path=fp32_path, technique="fp32", config={"zoo": model}, actor="demo"
    )
    families = {p: not load_profile(p).has_int8_dot for p in profiles}
    int8_by_rr: dict[bool, Any] = {}
    compress_metrics: dict[str, Any] = {}
    for reduce_range in sorted(set(families.values())):
        say(f"INT8 static quantization (reduce_range={reduce_range}) calibrated on real inputs")
        # the engine's measured recipe per zoo model (e.g. MiniLM keeps its FFN output activations in float)
        cfg = dataclasses.replace(
            recommended_int8(model), calibration_samples=calibration_samples, reduce_range=reduce_range
        )
        result = compress(entry, cfg, out=out_dir / f"{model}-int8{'-rr' if reduce_range else ''}.onnx",
                          memory=False)
        metrics = {k: v for k, v in result.metrics.items() if isinstance(v, int | float | str | bool)}
        compress_metrics[f"reduce_range={reduce_range}"] = metrics
        int8_by_rr[reduce_range] = registry.add_version(
            model_id=model_rec.id, path=result.output, technique=cfg.technique,
            config=json.loads(cfg.to_json()), parent_id=fp32.id, metrics=metrics, actor="demo",
        )
    say("deriving a deliberately degraded build (INT8 weights scrambled)")
    degraded: dict[bool, Any] = {}
    for reduce_range, version in int8_by_rr.items():
        src = registry.blob_path(sha256=version.sha256)
        dst = out_dir / f"{model}-degraded{'-rr' if reduce_range else ''}.onnx"
        changed = perturb_int8_weights(src, dst)
        degraded[reduce_range] = registry.add_version(
            model_id=model_rec.id, path=dst, technique="int8-static-degraded",
            config={"perturbation": "gaussian", "sigma_int8_steps": 48, "tensors": changed},
            parent_id=version.id, actor="demo",
        )
    out = {
        "fp32": fp32,
        "fp32_per_profile": {},
        "int8": {p: int8_by_rr[rr] for p, rr in families.items()},
        "degraded": {p: degraded[rr] for p, rr in families.items()},
        "compress_metrics": compress_metrics,
    }
    if tflite is not None and tflite_profiles:
        say("registering the TFLite builds (FP32, dynamic-range INT8, degraded INT8)")
        tfl = register_tflite(registry, model_id=model_rec.id, root_id=fp32.id, tflite=tflite)
        for stage, key in (("fp32_per_profile", "fp32"), ("int8", "int8"), ("degraded", "degraded")):
            out[stage].update(dict.fromkeys(tflite_profiles, tfl[key]))
    return out


TFLITE_TECHNIQUES = {"fp32": "fp32", "int8": "int8-dynamic", "degraded": "int8-dynamic-degraded"}


def register_tflite(registry: Any, *, model_id: str, root_id: str, tflite: TfliteSet) -> dict[str, Any]:
    """Record the TFLite builds as a lineage under the FP32 ONNX root: FP32 → INT8 → degraded.

    The versions carry no profile: a dynamic-range INT8 ``.tflite`` runs on any XNNPACK CPU,
    so every TFLite profile of the demo gets the same versions (the manifest names the profile).
    Their config holds the conversion (precision, tools) and their metrics the cosine to FP32
    measured at build time, next to what each device then measures itself.
    """
    report = tflite.report
    versions: dict[str, Any] = {}
    parent = root_id
    for name, technique in TFLITE_TECHNIQUES.items():
        info = report["builds"][name]
        config: dict[str, Any] = {"zoo": report["model"], "conversion": {"target": "tflite",
                                  "precision": info["precision"], "notes": info["notes"]},
                                  "tool_versions": report["tool_versions"], "checked_for": report["profile"]}
        if name == "degraded":
            config["perturbation"] = report["degradation"]
        versions[name] = registry.add_version(
            model_id=model_id, path=tflite.path(name), technique=technique, format="tflite", config=config,
            parent_id=parent, metrics={"vs_fp32": info["vs_fp32"], "size_bytes": info["size_bytes"]}, actor="demo",
        )
        parent = versions[name].id
    return versions
