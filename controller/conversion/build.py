"""``build(model, profile)``: the profile's recipe end to end — compress, convert, check, record.

Why here and not in the CLI: the REST job runner and the benchmark call the
same function. Steps, all decided up front by :func:`recipes.plan_build`:

1. resolve the model (zoo name, ``.onnx``/``.pt2`` path) with its golden and calibration data;
2. compress with ``controller.compression`` when the recipe says so (ONNX targets: INT8 QDQ),
   then check the compressed model against the FP32 reference (same golden inputs);
3. ``convert`` to the profile's target, which checks the artifact against its source;
4. record the lineage in the registry when one is given: FP32 source → compressed → converted,
   each a version whose config holds the options and the check report.
"""

from __future__ import annotations

import json
import logging
import shutil
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from common.profiles import DeviceProfile, load_profile
from controller.conversion.recipes import BuildPlan, fallback_options, plan_build

log = logging.getLogger(__name__)


@dataclass
class BuildInputs:
    """The model in the forms the converters need, plus its real golden and calibration data."""

    name: str
    onnx_path: Path | None
    torch_module: Any
    example_inputs: tuple[Any, ...] | None
    input_names: list[str]
    output_names: list[str]
    golden: dict[str, np.ndarray]
    calibration: list[dict[str, np.ndarray]]
    quality_metric: str
    data: dict[str, Any] = field(default_factory=dict)  # where golden / calibration came from (real or synthetic)


@dataclass
class BuildReport:
    """What ``build`` did, for the CLI, the job log and the results table."""

    model: str
    profile: str
    plan: dict[str, Any]
    artifact: Path | None = None
    compression: dict[str, Any] | None = None
    conversion: dict[str, Any] | None = None
    versions: list[str] = field(default_factory=list)
    attempts: list[dict[str, Any]] = field(default_factory=list)
    ok: bool = False
    error: str | None = None
    data: dict[str, Any] = field(default_factory=dict)
    host_latency_ratio: float | None = None  # artifact / FP32 p50 on this host (ONNX artifacts), profile tuning

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return json.loads(json.dumps(asdict(self), default=str))


def zoo_inputs(name: str, golden_samples: int = 32, calibration_samples: int = 64) -> BuildInputs:
    """A zoo model with its held-out golden inputs and its calibration split (both real data)."""
    from controller import zoo

    entry = zoo.load(name)
    ev = entry.eval_inputs(golden_samples)
    golden = {k: np.concatenate([s[k] for s in ev], axis=0) for k in entry.input_names}
    return BuildInputs(name, entry.onnx_path, entry.torch_model(), entry.example_inputs(), list(entry.input_names),
                       list(entry.output_names), golden, entry.calibration_inputs(calibration_samples),
                       entry.quality_metric)


def file_inputs(path: Path, golden_samples: int = 16, quality_metric: str = "cosine", *,
                calibration: Path | None = None, eval_data: Path | None = None, allow_synthetic: bool = False,
                calibration_samples: int = 64, needs_calibration: bool = True) -> BuildInputs:
    """A user's ``.onnx``/``.pt2`` file with its real data (``--calibration`` / ``--eval``).

    Random inputs only with ``allow_synthetic`` (see :mod:`controller.conversion.build_data`).
    """
    from controller.conversion.build_data import user_data
    from controller.conversion.source import load_source, synth_golden

    src = load_source(path)
    golden, calib, data = user_data(path, needs_calibration=needs_calibration, calibration=calibration,
                                    eval_data=eval_data, allow_synthetic=allow_synthetic,
                                    golden_samples=golden_samples, calibration_samples=calibration_samples,
                                    synth=lambda: synth_golden(src.inputs, golden_samples))
    return BuildInputs(path.stem, src.path if src.kind == "onnx" else None, src.module,
                       src.example_inputs or None, src.input_names, src.output_names, golden, calib, quality_metric,
                       data)


def compression_ladder(plan: BuildPlan, profile: DeviceProfile, quality_metric: str) -> list[tuple[str, dict]]:
    """The recipe's compression, then ``mixed`` (per-layer INT8 fallback aiming at the profile's
    tolerance) when the recipe is static INT8. If both miss the tolerance, the FP32 model is shipped."""
    if not plan.compression:
        return []
    ladder = [plan.compression]
    if plan.compression[0] == "int8-static":
        from controller.compression import techniques

        if "mixed" in techniques():
            target = profile.tolerance.min_top1_agreement if quality_metric == "top1" else profile.tolerance.min_cosine
            ladder.append(("mixed", {"quality_target": target}))
    return ladder


def _compress(inputs: BuildInputs, compression: tuple[str, dict], workdir: Path,
              profile: DeviceProfile, never_slower: bool = True) -> tuple[Path, dict]:
    from controller.compression import compress, make_config
    from controller.conversion.check import cross_runtime_check, onnx_runner

    technique, params = compression
    config = make_config(technique, params)
    if technique == "int8-static" and _is_zoo(inputs.name):
        import dataclasses

        from controller.compression.recipes import recommended_int8

        # The compression engine's measured per-model settings (e.g. MiniLM's FFN output projections
        # keep float activations), with the profile's device params (reduce_range, per_channel) on top.
        config = dataclasses.replace(recommended_int8(inputs.name), **params)
    out = workdir / f"{inputs.name}.{profile.id}.{technique}.onnx"  # per profile: another profile's build of the
    # same technique (reduce_range differs) must not overwrite the file this profile's report points at
    model: Any = inputs.name if inputs.onnx_path is None or _is_zoo(inputs.name) else inputs.onnx_path
    result = compress(model, config, out=out, calibration=inputs.calibration, evaluate=False,
                      metric=None if _is_zoo(inputs.name) else inputs.quality_metric, never_slower=never_slower)
    report = cross_runtime_check(onnx_runner(inputs.onnx_path, optimize=False), onnx_runner(out), inputs.golden,
                                 profile.tolerance, target=f"compression:{technique}", profile=profile.id,
                                 output_names=inputs.output_names, quality_metric=inputs.quality_metric)
    guard = result.report.get("speed_guard") or {}
    if guard.get("delivered", technique) != technique:  # slower than FP32 here: label what really ships
        technique = guard["delivered"]
    return result.output, {"technique": technique, "config": json.loads(config.to_json()),
                           "path": str(result.output), "check": report.to_dict(),
                           "speed_guard": result.report.get("speed_guard"), "warnings": result.warnings}


def _is_zoo(name: str) -> bool:
    from controller import zoo

    return name in zoo.ZOO_NAMES


def build(
    model: str | Path,
    profile: DeviceProfile | str,
    *,
    out_dir: Path,
    registry: Any = None,
    golden_samples: int = 32,
    calibration_samples: int = 64,
    check: bool = True,
    never_slower: bool = True,
    calibration: Path | None = None,
    eval_data: Path | None = None,
    allow_synthetic: bool = False,
    quality_metric: str = "cosine",
) -> BuildReport:
    """Build ``model`` for ``profile`` per its recipe.

    ``check=True`` (the CLI default) also applies the never-slower rule (``never_slower``): a
    quantized model slower than FP32 on this host is replaced as ``compress`` does, and when FP32
    itself is the answer the FP32 source is converted. It enforces the profile's tolerance: a compression or
    precision that misses it is replaced by the next rung of its ladder (INT8 → mixed → FP32;
    TFLite int8 → int8-dynamic → fp16 → fp32), every attempt recorded in ``attempts``, and a
    final miss raises :class:`CrossRuntimeMismatchError`. ``check=False`` builds the recipe as
    written and only reports the drift (what the benchmark measures).

    Example:
        >>> report = build("mobilenetv2", "rpi4", out_dir=Path("build"))  # doctest: +SKIP
        >>> report.artifact, report.conversion["check"]["ok"]
    """
    from controller.conversion import convert

    prof = profile if isinstance(profile, DeviceProfile) else load_profile(profile)
    plan = plan_build(prof)
    inputs = (zoo_inputs(str(model), golden_samples, calibration_samples) if _is_zoo(str(model))
              else file_inputs(Path(model), golden_samples, quality_metric, calibration=calibration,
                               eval_data=eval_data, allow_synthetic=allow_synthetic,
                               calibration_samples=calibration_samples, needs_calibration=bool(plan.compression)))
    plan_dict = {"technique": plan.technique, "compression": plan.compression, "target": plan.target,
                 "format": plan.format, "options": asdict(plan.options), "notes": plan.notes}
    report = BuildReport(inputs.name, prof.id, plan_dict, data=inputs.data or {
        "calibration": {"data": f"zoo {inputs.name} calibration split"},
        "check": {"data": f"zoo {inputs.name} held-out split", "held_out": True}, "synthetic": False})
    out_dir.mkdir(parents=True, exist_ok=True)
    source: Any = inputs.onnx_path
    # check=False measures the recipe as written; check=True enforces the tolerance with fallbacks.
    comp_ladder = compression_ladder(plan, prof, inputs.quality_metric) if check else (
        [plan.compression] if plan.compression else [])
    for compression in comp_ladder:
        candidate, info = _compress(inputs, compression, out_dir, prof, never_slower=check and never_slower)
        if info["technique"] == "fp32":  # no quantized variant was faster on this host: ship the FP32 source
            report.attempts.append({"stage": "compression", "precision": compression[0], "ok": False,
                                    "reason": (info.get("speed_guard") or {}).get("reason"), "outputs": []})
            candidate.unlink(missing_ok=True)
            break
        report.attempts.append({"stage": "compression", "precision": compression[0], "ok": info["check"]["ok"],
                                "outputs": [
            {k: o[k] for k in ("name", "cosine", "top1_agreement")} for o in info["check"]["outputs"]]})
        if info["check"]["ok"] or not check:
            source, report.compression = candidate, info
            if info["check"]["ok"]:
                break
        log.warning("%s on %s: %s outside tolerance vs FP32", inputs.name, prof.id, compression[0])
    if report.attempts and not report.compression and check:
        log.warning("%s on %s: no compression met the tolerance; shipping FP32", inputs.name, prof.id)
    torch_target = plan.target in ("tflite", "coreml")
    if torch_target and inputs.torch_module is None:
        raise ValueError(f"{plan.target} needs a torch model; {model} is ONNX only")
    artifact = out_dir / f"{inputs.name}.{prof.id}{plan.artifact_suffix}"
    ladder = fallback_options(plan.target, plan.options) if check and not plan.compression else [plan.options]
    for i, options in enumerate(ladder):
        last = i == len(ladder) - 1
        res = convert(
            inputs.torch_module if torch_target else source, plan.target, prof, out=artifact, options=options,
            golden=inputs.golden, calibration=inputs.calibration, quality_metric=inputs.quality_metric,
            example_inputs=inputs.example_inputs if torch_target else None,
            input_names=inputs.input_names if torch_target else None,
            output_names=inputs.output_names if torch_target else None, check=check and last)
        report.attempts.append({"stage": "conversion", "precision": res.precision,
                                "ok": bool(res.check and res.check["ok"]),
                                "outputs": [{k: o[k] for k in ("name", "cosine", "top1_agreement")}
                                            for o in (res.check or {}).get("outputs", [])]})
        if report.attempts[-1]["ok"]:
            break
        if not last:
            log.warning("%s on %s: %s outside tolerance, trying the next precision", inputs.name, prof.id,
                        res.precision)
    report.artifact, report.conversion = res.path, res.model_dump(mode="json")
    comp_ok = report.compression is None or report.compression["check"]["ok"]
    report.ok = bool(res.check and res.check["ok"]) and comp_ok
    report.host_latency_ratio = _host_latency_ratio(inputs, Path(res.path))
    if registry is not None:
        report.versions = record_lineage(registry, inputs, report, res)
    (out_dir / f"{inputs.name}.{prof.id}.build.json").write_text(json.dumps(report.to_dict(), indent=2))
    return report


def _host_latency_ratio(inputs: BuildInputs, artifact: Path) -> float | None:
    """p50 artifact / FP32 on this host (1 thread, profile tuning), for ONNX artifacts of ONNX sources."""
    if inputs.onnx_path is None or artifact.suffix != ".onnx" or not inputs.calibration:
        return None
    from controller.compression.speed_guard import latency_ratio

    try:
        return round(latency_ratio(inputs.onnx_path, artifact, inputs.calibration), 3)
    except Exception as exc:  # noqa: BLE001 - e.g. an artifact this host's ORT cannot run: say n/a
        log.info("latency of %s not measurable here: %s", artifact, exc)
        return None


def record_lineage(registry: Any, inputs: BuildInputs, report: BuildReport, res: Any) -> list[str]:
    """Store source → compressed → converted as registry versions linked by parent id."""
    model = registry.ensure_model(name=inputs.name)
    root = None
    if inputs.onnx_path is not None:
        root = registry.add_version(model_id=model.id, path=inputs.onnx_path, technique="fp32",
                                    config={"zoo": inputs.name} if _is_zoo(inputs.name) else {}, format="onnx")
    ids = [root.id] if root else []
    parent = root.id if root else None
    if report.compression:
        comp = registry.add_version(model_id=model.id, path=Path(report.compression["path"]),
                                    technique=report.compression["technique"], config=report.compression["config"],
                                    format="onnx", parent_id=parent,
                                    metrics={"check": report.compression["check"]})
        ids.append(comp.id)
        parent = comp.id
    path = Path(res.path)
    if path.is_dir():  # .mlpackage is a directory: store it as one zip blob
        zipped = path.with_suffix(".mlpackage.zip")
        with zipfile.ZipFile(zipped, "w", zipfile.ZIP_DEFLATED) as zf:
            for f in sorted(p for p in path.rglob("*") if p.is_file()):
                zf.write(f, f.relative_to(path.parent))
        path = zipped
    technique = report.compression["technique"] if report.compression else res.precision
    config: dict[str, Any] = {"conversion": res.options, "target": res.target}
    for extra in res.extra_files:  # the TensorRT build recipe travels with the version it builds
        if str(extra).endswith(".trt.json"):
            config["tensorrt_recipe"] = json.loads(Path(extra).read_text())
    conv = registry.add_version(model_id=model.id, path=path, technique=technique.replace("_", "-"),
                                config=config,
                                format=res.format, profile=res.profile, parent_id=parent,
                                metrics={"check": res.check, "size_bytes": res.size_bytes})
    ids.append(conv.id)
    return ids


def clean(out_dir: Path) -> None:
    """Remove a build directory (used by tests and the benchmark)."""
    shutil.rmtree(out_dir, ignore_errors=True)
