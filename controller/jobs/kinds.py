"""The job kinds the controller runs: compression, pipeline, conversion, zoo import.

Each kind validates its request at submit time (so a bad technique or parameter is a 422
from the API, not a failed job minutes later) and, when run, copies its input version out
of the registry, calls the one door of the owning package (``controller.compression.compress``,
``controller.conversion.convert``), and records the output as a new immutable version whose
parent is the input and whose config is the technique's JSON config: the same object the
request carried, so lineage, job and request agree.

REST families map onto the compression package's technique names: ``quantize`` accepts
``int8-static``, ``int8-dynamic``, ``int4-weight``, ``fp16``, ``mixed``, ``qat...``; ``prune``
accepts techniques whose name contains ``prune``; ``distill`` those containing ``distill``;
``decompose`` ``svd``/``tucker``/``cp``/``lowrank``. Without an explicit technique the family
default follows the settings (``DEFAULT_QUANTIZATION_BITS``, ``ENABLE_DYNAMIC_QUANTIZATION``).
"""

from __future__ import annotations

import importlib
import math
from pathlib import Path
from typing import Any

from controller.jobs.models import InvalidJobSpecError
from controller.jobs.runner import JobContext, JobKind

FAMILIES = ("quantize", "prune", "distill", "decompose")
_FAMILY_DEFAULTS = {"prune": ("prune-unstructured", "prune-structured"), "distill": ("distill",),
                    "decompose": ("svd", "tucker", "lowrank")}


def family_of(technique: str) -> str | None:
    """Which REST family a compression technique name belongs to."""
    name = technique.lower()
    if "prune" in name or "sparse" in name:
        return "prune"
    if "distill" in name:
        return "distill"
    if name in ("svd", "tucker", "cp", "lowrank", "low-rank") or "decompos" in name or "svd" in name:
        return "decompose"
    if name.startswith(("int", "fp16", "bf16", "mixed", "qat", "quant", "w4", "w8", "ptq")):
        return "quantize"
    return None


def _settings() -> Any:
    from controller.settings import Settings

    return Settings()


def default_technique(family: str, available: list[str], settings: Any = None) -> str:
    """The technique a family runs when the request names none."""
    if family == "quantize":
        settings = settings or _settings()
        bits = settings.default_quantization_bits
        wanted = {4: ["int4-weight"], 16: ["fp16"]}.get(bits) or (
            ["int8-dynamic", "int8-static"] if settings.enable_dynamic_quantization else ["int8-static"])
    else:
        wanted = list(_FAMILY_DEFAULTS.get(family, ()))
    for name in wanted + [t for t in available if family_of(t) == family]:
        if name in available:
            return name
    raise InvalidJobSpecError(f"no {family} technique is installed; available techniques: {', '.join(available)}")


def _finite_json(value: Any) -> Any:
    """Metrics as strict JSON (NaN/inf → None) so the registry accepts them."""
    if isinstance(value, dict):
        return {str(k): _finite_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite_json(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return str(value)


# ---------------------------------------------------------------- compression
def build_config(family: str | None, technique: str | None, params: dict[str, Any]) -> Any:
    """The compression config for a request, or :class:`InvalidJobSpecError` naming what is accepted."""
    from controller.compression import CompressionError, make_config, techniques

    available = sorted(techniques())
    if technique is None:
        if family is None:
            raise InvalidJobSpecError("a pipeline step needs a technique name")
        technique = default_technique(family, available)
    if technique not in available:
        raise InvalidJobSpecError(f"unknown technique {technique!r}; available: {', '.join(available)}")
    if family is not None and family_of(technique) != family:
        same = [t for t in available if family_of(t) == family]
        raise InvalidJobSpecError(f"technique {technique!r} is not a {family} technique; {family} techniques: "
                                  f"{', '.join(same) or 'none installed'}")
    try:
        return make_config(technique, params)
    except CompressionError as exc:
        raise InvalidJobSpecError(str(exc)) from exc


def _check_version(services: Any, version_id: str) -> Any:
    from controller.registry import NotFoundError

    try:
        return services.registry.get_version(version_id=version_id)
    except NotFoundError as exc:
        raise InvalidJobSpecError(f"input version {version_id!r} does not exist") from exc


def _zoo_root(registry: Any, version: Any) -> tuple[str | None, Any]:
    """(zoo name, root version) when the version descends from a zoo import, else (None, root)."""
    from controller.zoo import ZOO_NAMES

    root = registry.lineage(version_id=version.id)[0]
    name = root.config.get("zoo") if root.config.get("source") == "zoo" else None
    return (name if name in ZOO_NAMES else None), root


def model_argument(registry: Any, version: Any, path: Path, needs_torch: bool) -> Any:
    """What to hand ``compress``: the zoo entry (real data, torch module) for zoo lineages, else the ONNX file.

    A derived version of a zoo model keeps the zoo's calibration/eval data but its own ONNX
    file. Techniques that retrain the torch module can only start from the zoo's FP32
    version: the torch module does not carry the changes of an ONNX-level parent.
    """
    zoo_name, root = _zoo_root(registry, version)
    if needs_torch and (zoo_name is None or version.id != root.id):
        raise InvalidJobSpecError(
            "this technique retrains or restructures the torch module, which only the zoo-imported FP32 version "
            f"has; start from version {root.id}" if zoo_name else
            "this technique needs a torch module; uploaded ONNX files have none (import a zoo model instead)")
    if zoo_name is None:
        return path
    from controller import zoo

    entry = zoo.load(zoo_name)
    if version.id == root.id:
        return entry
    derived = type(f"{type(entry).__name__}Version", (type(entry),), {"onnx_path": property(lambda self: path)})
    clone = derived.__new__(derived)
    clone.__dict__.update(entry.__dict__)
    return clone


def _validate_compression(spec: dict[str, Any], services: Any) -> dict[str, Any]:
    config = build_config(spec.get("family") or spec.get("technique_family"), spec.get("technique"),
                          spec.get("config") or {})
    version = _check_version(services, spec["version_id"])
    if getattr(config, "needs_torch", False):
        model_argument(services.registry, version, Path("unused"), True)
    if spec.get("profile"):
        _check_profile(spec["profile"])
    return {"family": spec.get("family"), "technique": config.technique, "config": config.to_dict(),
            "version_id": version.id, "profile": spec.get("profile"),
            "evaluate": bool(spec.get("evaluate", True)), "measure_memory": bool(spec.get("measure_memory", False)),
            "metric": _check_metric(spec.get("metric")), "allow_slower": bool(spec.get("allow_slower", False))}


def _check_metric(metric: str | None) -> str | None:
    from controller.evaluation.metrics import MetricError, check_metric

    if metric is None:
        return None
    try:
        return check_metric(metric)
    except MetricError as exc:
        raise InvalidJobSpecError(f"metric: {exc}") from exc


def _check_profile(profile: str) -> None:
    from common.profiles import ProfileError, load_profile

    try:
        load_profile(profile)
    except ProfileError as exc:
        raise InvalidJobSpecError(str(exc)) from exc


def run_compression_step(ctx: JobContext, version_id: str, config_dict: dict[str, Any], *, profile: str | None,
                         evaluate: bool, memory: bool, lo: float, hi: float, label: str,
                         metric: str | None = None, allow_slower: bool = False) -> dict[str, Any]:
    """Compress one version and store the output as its child version; returns the new version summary."""
    from controller.compression import compress as run_compress
    from controller.compression import config_from_json

    registry = ctx.services.registry
    config = config_from_json(config_dict)
    version = registry.get_version(version_id=version_id)
    step_dir = ctx.workdir / f"{label}-{config.technique}"
    step_dir.mkdir(parents=True, exist_ok=True)
    src = step_dir / "input.onnx"
    src.write_bytes(registry.blob_path(sha256=version.sha256).read_bytes())
    model = model_argument(registry, version, src, getattr(config, "needs_torch", False))
    calibration = None if not isinstance(model, Path) else _uploaded_samples(registry, version)
    held_out = None if not isinstance(model, Path) else _uploaded_samples(registry, version, "eval_samples_sha256")
    report = ctx.scaled(lo, hi, label)
    report(0, f"{config.technique}: loading")
    result = run_compress(model, config, out=step_dir / "output.onnx", evaluate=evaluate, memory=memory,
                          calibration=calibration, eval_data=held_out, metric=metric, never_slower=not allow_slower,
                          progress=lambda f, msg: report(100 * f, msg))
    metrics = _finite_json(result.metrics)
    if result.warnings:
        metrics["warnings"] = list(result.warnings)
    new = registry.add_version(model_id=version.model_id, path=result.output, technique=config.technique,
                               config=config.to_dict(), format="onnx", profile=profile or version.profile,
                               parent_id=version.id, metrics=metrics, actor=ctx.job.actor)
    return {"version_id": new.id, "model_id": new.model_id, "parent_id": version.id, "technique": config.technique,
            "sha256": new.sha256, "size": new.size, "metrics": metrics}


def _uploaded_samples(registry: Any, version: Any, key: str = "samples_sha256") -> Path | None:
    """The ``.npz`` uploaded with the lineage root: calibration ``samples`` (default) or held-out ``eval_samples``."""
    root = registry.lineage(version_id=version.id)[0]
    sha = root.config.get(key)
    return registry.blob_path(sha256=sha) if sha else None


def _run_compression(ctx: JobContext) -> dict[str, Any]:
    spec = ctx.job.spec
    out = run_compression_step(ctx, spec["version_id"], spec["config"], profile=spec.get("profile"),
                               evaluate=spec.get("evaluate", True), memory=spec.get("measure_memory", False),
                               lo=2, hi=99, label=spec["technique"], metric=spec.get("metric"),
                               allow_slower=spec.get("allow_slower", False))
    ctx.progress(100, "recorded version " + out["version_id"])
    return out


# ---------------------------------------------------------------- pipeline
def _validate_pipeline(spec: dict[str, Any], services: Any) -> dict[str, Any]:
    version = _check_version(services, spec["version_id"])
    steps = []
    for i, step in enumerate(spec.get("steps") or []):
        if step["technique"] == "convert":
            _check_convert_available()
            cfg = dict(step.get("config") or {})
            if not (cfg.get("format") or spec.get("profile")):
                raise InvalidJobSpecError(f"step {i + 1}: convert needs config.format or the pipeline's profile")
            if cfg.get("format"):
                conversion_options(cfg["format"], cfg)
            steps.append({"technique": "convert", "config": cfg})
            continue
        try:
            config = build_config(None, step["technique"], step.get("config") or {})
        except InvalidJobSpecError as exc:
            raise InvalidJobSpecError(f"step {i + 1}: {exc.message}") from exc
        if getattr(config, "needs_torch", False) and i > 0:
            raise InvalidJobSpecError(f"step {i + 1}: {config.technique} retrains the torch module and must be the "
                                      "first step")
        steps.append({"technique": config.technique, "config": config.to_dict()})
    if not steps:
        raise InvalidJobSpecError("a pipeline needs at least one step")
    if spec.get("profile"):
        _check_profile(spec["profile"])
    return {"version_id": version.id, "steps": steps, "profile": spec.get("profile"),
            "evaluate": bool(spec.get("evaluate", True))}


def _run_pipeline(ctx: JobContext) -> dict[str, Any]:
    spec = ctx.job.spec
    current = spec["version_id"]
    outputs = []
    n = len(spec["steps"])
    for i, step in enumerate(spec["steps"]):
        lo, hi = 100 * i / n, 100 * (i + 1) / n
        label = f"step {i + 1}/{n}"
        if step["technique"] == "convert":
            out = run_conversion_step(ctx, current, profile=spec.get("profile"), target=step["config"].get("format"),
                                      options=step["config"], lo=lo, hi=hi, label=label)
        else:
            out = run_compression_step(ctx, current, step["config"], profile=spec.get("profile"),
                                       evaluate=spec.get("evaluate", True) and i == n - 1, memory=False,
                                       lo=lo, hi=hi, label=label)
        outputs.append(out)
        current = out["version_id"]
    return {"version_id": current, "steps": outputs, "metrics": outputs[-1].get("metrics", {})}


# ---------------------------------------------------------------- conversion
_EXTENSIONS = {"onnx": ".onnx", "tflite": ".tflite", "coreml": ".mlpackage", "tensorrt": ".onnx"}


def _check_convert_available() -> Any:
    try:
        module = importlib.import_module("controller.conversion")
    except ImportError as exc:
        raise InvalidJobSpecError("conversion is not available in this install (controller.conversion is "
                                  "missing)") from exc
    return module.convert


def conversion_options(target: str, options: dict[str, Any]) -> Any:
    """The target's options dataclass from a JSON dict (None = the profile recipe's defaults)."""
    import dataclasses

    from controller.conversion import ConversionError
    from controller.conversion.api import _load_converters
    from controller.conversion.registry import get_converter

    _load_converters()
    try:
        spec = get_converter(target)
    except ConversionError as exc:
        raise InvalidJobSpecError(str(exc)) from exc
    body = {k: v for k, v in options.items() if k not in ("format", "type")}
    if not body:
        return None
    known = {f.name for f in dataclasses.fields(spec.options_type)}
    unknown = sorted(set(body) - known)
    if unknown:
        raise InvalidJobSpecError(f"unknown {target} option(s) {', '.join(unknown)}; valid: {', '.join(sorted(known))}")
    try:
        return spec.options_type(**{k: tuple(v) if isinstance(v, list) else v for k, v in body.items()})
    except (TypeError, ValueError) as exc:
        raise InvalidJobSpecError(f"{target} options: {exc}") from exc


def _validate_conversion(spec: dict[str, Any], services: Any) -> dict[str, Any]:
    _check_convert_available()
    version = _check_version(services, spec["version_id"])
    _check_profile(spec["profile"])
    from common.profiles import load_profile

    target = spec.get("target_format") or load_profile(spec["profile"]).recipe.format
    conversion_options(target, dict(spec.get("config") or {}))
    return {"version_id": version.id, "profile": spec["profile"], "target_format": target,
            "config": dict(spec.get("config") or {})}


def _golden(registry: Any, version: Any) -> dict[str, Any] | None:
    """Uploaded sample inputs (stacked on axis 0) for the conversion's cross-runtime check, if any."""
    import numpy as np

    path = _uploaded_samples(registry, version)
    if path is None:
        return None
    with np.load(path, allow_pickle=False) as npz:
        return {k: npz[k][:32] for k in npz.files}


def run_conversion_step(ctx: JobContext, version_id: str, *, profile: str | None, target: str | None,
                        options: dict[str, Any], lo: float, hi: float, label: str) -> dict[str, Any]:
    """Convert one version with ``controller.conversion.convert`` and store the artifact as a child version."""
    import shutil

    from common.profiles import load_profile

    convert = _check_convert_available()
    registry = ctx.services.registry
    version = registry.get_version(version_id=version_id)
    prof = load_profile(profile or ctx.services.settings.edge_device_profile)
    target = target or prof.recipe.format
    opts = conversion_options(target, options)
    step_dir = ctx.workdir / f"{label.replace('/', '-').replace(' ', '-')}-convert"
    step_dir.mkdir(parents=True, exist_ok=True)
    src = step_dir / "input.onnx"
    src.write_bytes(registry.blob_path(sha256=version.sha256).read_bytes())
    report = ctx.scaled(lo, hi, label)
    report(5, f"converting to {target} for {prof.id}")
    zoo_name, _ = _zoo_root(registry, version)
    metric = "cosine"
    if zoo_name:
        from controller import zoo

        metric = zoo.load(zoo_name).quality_metric
    result = convert(src, target, prof, out=step_dir / f"model{_EXTENSIONS.get(target, '.bin')}", options=opts,
                     golden=_golden(registry, version), quality_metric=metric)
    report(90, "storing the artifact")
    path = Path(result.path)
    if path.is_dir():  # e.g. a Core ML .mlpackage: stored as one zip blob
        path = Path(shutil.make_archive(str(path), "zip", root_dir=path))
    metrics = _finite_json({"size_bytes": result.size_bytes, "precision": result.precision, "seconds": result.seconds,
                            "check": result.check, "notes": list(result.notes)})
    new = registry.add_version(model_id=version.model_id, path=path, technique=f"convert-{result.format}",
                               config={"target": target, "profile": prof.id, "options": result.options},
                               format=result.format, profile=prof.id, parent_id=version.id, metrics=metrics,
                               actor=ctx.job.actor)
    report(100, f"recorded version {new.id}")
    return {"version_id": new.id, "model_id": new.model_id, "parent_id": version.id, "format": result.format,
            "sha256": new.sha256, "size": new.size, "metrics": metrics}


def _run_conversion(ctx: JobContext) -> dict[str, Any]:
    spec = ctx.job.spec
    return run_conversion_step(ctx, spec["version_id"], profile=spec["profile"], target=spec.get("target_format"),
                               options=spec.get("config") or {}, lo=2, hi=100, label="convert")


# ---------------------------------------------------------------- zoo import
def _validate_zoo(spec: dict[str, Any], services: Any) -> dict[str, Any]:
    from controller.registry import validate_name
    from controller.zoo import ZOO_NAMES

    validate_name(spec["name"])
    if spec["zoo"] not in ZOO_NAMES:
        raise InvalidJobSpecError(f"unknown zoo model {spec['zoo']!r}; available: {', '.join(ZOO_NAMES)}")
    return {"name": spec["name"], "zoo": spec["zoo"]}


def _run_zoo(ctx: JobContext) -> dict[str, Any]:
    from controller import zoo

    registry = ctx.services.registry
    ctx.progress(5, f"exporting {ctx.job.spec['zoo']} to ONNX (cached after the first time)")
    entry = zoo.load(ctx.job.spec["zoo"])
    path = entry.onnx_path
    ctx.progress(80, "storing")
    model = registry.ensure_model(name=ctx.job.spec["name"], description=f"zoo model {entry.name}",
                                  actor=ctx.job.actor)
    version = registry.add_version(model_id=model.id, path=path, technique="fp32",
                                   config={"source": "zoo", "zoo": entry.name}, format="onnx",
                                   metrics={"size_bytes": path.stat().st_size, "quality_metric": entry.quality_metric},
                                   actor=ctx.job.actor)
    return {"version_id": version.id, "model_id": model.id, "sha256": version.sha256, "size": version.size}


# ---------------------------------------------------------------- registry of kinds
def default_kinds() -> dict[str, JobKind]:
    """The built-in job kinds."""
    return {
        "compression": JobKind("compression", _run_compression, _validate_compression),
        "pipeline": JobKind("pipeline", _run_pipeline, _validate_pipeline),
        "conversion": JobKind("conversion", _run_conversion, _validate_conversion),
        "zoo_import": JobKind("zoo_import", _run_zoo, _validate_zoo),
    }


def plugin_kinds(modules: str) -> dict[str, JobKind]:
    """Extra kinds from ``EDGEFLEET_JOB_PLUGINS`` (modules exposing ``JOB_KINDS: dict[str, JobKind]``)."""
    kinds: dict[str, JobKind] = {}
    for name in (m.strip() for m in modules.split(",")):
        if name:
            kinds.update(importlib.import_module(name).JOB_KINDS)
    return kinds
