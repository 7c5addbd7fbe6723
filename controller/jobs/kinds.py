"""The job kinds the controller runs: compression, pipeline, conversion, zoo import.

Each kind validates its request at submit time (so a bad technique or parameter is a 422
from the API, not a failed job minutes later) and, when run, copies its input version out
of the registry, calls the one door of the owning package (``controller.compression.compress``,
``controller.conversion.convert``), and records the output as a new immutable version whose
parent is the input and whose config is the technique's JSON config: the same object the
request carried, so lineage, job and request agree.

A REST family (``quantize``, ``prune``, ``distill``, ``decompose``) accepts the techniques whose
config declares that family (``CompressionConfig.family``); nothing is guessed from a name. Without
an explicit technique the family default follows the settings (``DEFAULT_QUANTIZATION_BITS``,
``ENABLE_DYNAMIC_QUANTIZATION``). Where a version's calibration and check data come from is
:class:`controller.version_data.VersionData`'s decision.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from controller.jobs.context import JobContext, JobKind, JobServices, JobSpec
from controller.jobs.models import InvalidJobSpecError
from controller.version_data import VersionData

if TYPE_CHECKING:
    from controller.compression import CompressionConfig
    from controller.conversion import ConversionResult
    from controller.registry import VersionRecord
    from controller.settings import Settings

_FAMILY_DEFAULTS = {"prune": ("prune-unstructured", "prune-structured"), "distill": ("distill",),
                    "decompose": ("svd", "tucker", "lowrank")}


def _family(technique: str) -> str | None:
    """The family a registered technique declares (None for a name that is not registered)."""
    from controller.compression import techniques

    cls = techniques().get(technique)
    return cls.family.value if cls is not None else None


def default_technique(family: str, available: list[str], settings: Settings | None = None) -> str:
    """The technique a family runs when the request names none."""
    if family == "quantize":
        if settings is None:
            from controller.settings import Settings

            settings = Settings()
        bits = settings.default_quantization_bits
        wanted = {4: ["int4-weight"], 16: ["fp16"]}.get(bits) or (
            ["int8-dynamic", "int8-static"] if settings.enable_dynamic_quantization else ["int8-static"])
    else:
        wanted = list(_FAMILY_DEFAULTS.get(family, ()))
    for name in wanted + [t for t in available if _family(t) == family]:
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
def build_config(family: str | None, technique: str | None, params: dict[str, Any],
                 settings: Settings | None = None) -> CompressionConfig:
    """The compression config for a request, or :class:`InvalidJobSpecError` naming what is accepted."""
    from controller.compression import CompressionError, make_config, techniques, techniques_of

    available = sorted(techniques())
    if technique is None:
        if family is None:
            raise InvalidJobSpecError("a pipeline step needs a technique name")
        technique = default_technique(family, available, settings)
    if technique not in available:
        raise InvalidJobSpecError(f"unknown technique {technique!r}; available: {', '.join(available)}")
    if family is not None and _family(technique) != family:
        same = techniques_of(family)
        raise InvalidJobSpecError(f"technique {technique!r} is not a {family} technique; {family} techniques: "
                                  f"{', '.join(same) or 'none installed'}")
    try:
        return make_config(technique, params)
    except CompressionError as exc:
        raise InvalidJobSpecError(str(exc)) from exc


def _check_version(services: JobServices, version_id: str) -> VersionRecord:
    from controller.registry import NotFoundError

    try:
        return services.registry.get_version(version_id=version_id)
    except NotFoundError as exc:
        raise InvalidJobSpecError(f"input version {version_id!r} does not exist") from exc


def check_torch_start(data: VersionData, version: VersionRecord) -> None:
    """Refuse a technique that retrains the torch module unless it starts from a zoo-imported FP32 version.

    Only the zoo import has a torch module, and it does not carry the changes of an
    ONNX-level parent, so a derived version cannot be retrained either.
    """
    zoo_name, root = data.zoo_name(version), data.root(version)
    if zoo_name is None:
        raise InvalidJobSpecError(
            "this technique needs a torch module; uploaded ONNX files have none (import a zoo model instead)")
    if version.id != root.id:
        raise InvalidJobSpecError(
            "this technique retrains or restructures the torch module, which only the zoo-imported FP32 version "
            f"has; start from version {root.id}")


def _validate_compression(spec: JobSpec, services: JobServices) -> JobSpec:
    config = build_config(spec.get("family") or spec.get("technique_family"), spec.get("technique"),
                          spec.get("config") or {}, services.settings)
    version = _check_version(services, spec["version_id"])
    if config.needs_torch:
        check_torch_start(VersionData(services.registry), version)
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
    data = VersionData(registry)
    if config.needs_torch:
        check_torch_start(data, version)
    model, calibration = data.compression_input(version, src)
    held_out = data.eval_samples_path(version) if isinstance(model, Path) else None
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


def _run_compression(ctx: JobContext) -> dict[str, Any]:
    spec = ctx.job.spec
    out = run_compression_step(ctx, spec["version_id"], spec["config"], profile=spec.get("profile"),
                               evaluate=spec.get("evaluate", True), memory=spec.get("measure_memory", False),
                               lo=2, hi=99, label=spec["technique"], metric=spec.get("metric"),
                               allow_slower=spec.get("allow_slower", False))
    ctx.progress(100, "recorded version " + out["version_id"])
    return out


# ---------------------------------------------------------------- pipeline
def _validate_pipeline(spec: JobSpec, services: JobServices) -> JobSpec:
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
        if config.needs_torch and i > 0:
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


def _check_convert_available() -> Callable[..., ConversionResult]:
    try:
        module = importlib.import_module("controller.conversion")
    except ImportError as exc:
        raise InvalidJobSpecError("conversion is not available in this install (controller.conversion is "
                                  "missing)") from exc
    return module.convert


def conversion_options(target: str, options: dict[str, Any]) -> object | None:
    """The target's options dataclass parsed by conversion itself, its errors as a 422 job-spec error."""
    from controller.conversion import ConversionError, options_from_json

    try:
        return options_from_json(target, options)
    except ConversionError as exc:
        raise InvalidJobSpecError(str(exc)) from exc


def _validate_conversion(spec: JobSpec, services: JobServices) -> JobSpec:
    _check_convert_available()
    version = _check_version(services, spec["version_id"])
    _check_profile(spec["profile"])
    from common.profiles import load_profile

    target = spec.get("target_format") or load_profile(spec["profile"]).recipe.format
    conversion_options(target, dict(spec.get("config") or {}))
    return {"version_id": version.id, "profile": spec["profile"], "target_format": target,
            "config": dict(spec.get("config") or {})}


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
    data = VersionData(registry)
    result = convert(src, target, prof, out=step_dir / f"model{_EXTENSIONS.get(target, '.bin')}", options=opts,
                     golden=data.check_inputs(version), quality_metric=data.quality_metric(version))
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
def _validate_zoo(spec: JobSpec, services: JobServices) -> JobSpec:
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
    from controller.optimize.job import JOB_KINDS as OPTIMIZE_KINDS

    return OPTIMIZE_KINDS | {
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
