"""``convert(model, target, profile)``: the one door to every converter.

Why one door: the build pipeline, the CLI and the REST API all need "this
model, as the artifact this device class runs, checked against the
reference". Each converter only produces an :class:`Artifact`; this function
resolves the profile and options, runs the converter, then runs the
cross-runtime check every artifact must pass before it may ship, and records
what happened as a JSON-serialisable :class:`ConversionResult` (lineage).
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import importlib.util
import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from common.manifest import sha256_file
from common.profiles import DeviceProfile, load_profile
from controller.conversion.errors import CrossRuntimeMismatchError, InvalidOptionsError, MissingDependencyError
from controller.conversion.registry import ConversionContext, get_converter, options_to_json

# Converter modules register themselves on import; they import their heavy
# dependencies only inside the handler, so importing them here is cheap.
CONVERTER_MODULES = (
    "controller.conversion.to_onnx",
    "controller.conversion.to_tensorrt",
    "controller.conversion.to_tflite",
    "controller.conversion.to_coreml",
)
RESULT_SCHEMA_VERSION = 1


class ConversionResult(BaseModel):
    """What a conversion produced and how it was checked; stored beside the artifact as JSON."""

    model_config = ConfigDict(frozen=True)
    schema_version: int = RESULT_SCHEMA_VERSION
    target: str
    format: str
    profile: str
    precision: str
    path: Path
    sha256: str
    size_bytes: int
    source_sha256: str | None
    options: dict[str, Any]
    inputs: list[dict[str, Any]]
    outputs: list[dict[str, Any]]
    extra_files: list[Path] = []
    notes: list[str] = []
    check: dict[str, Any] | None = None
    seconds: float

    @property
    def size_mb(self) -> float:
        """Artifact size in MiB (directories such as ``.mlpackage`` summed)."""
        return self.size_bytes / 2**20


def _load_converters() -> None:
    for name in CONVERTER_MODULES:
        importlib.import_module(name)


def options_from_json(target: str, options: dict[str, Any]) -> object | None:
    """The target's options dataclass from a JSON dict; None (= the profile recipe's defaults) when empty.

    The inverse of :func:`~controller.conversion.registry.options_to_json` (its ``type`` key and a
    pipeline step's ``format`` key are ignored), so a REST request, a job spec and a version's
    lineage record carry the same options. Raises :class:`UnknownTargetError` for an unregistered
    target and :class:`InvalidOptionsError` naming the valid fields.

    Example:
        >>> options_from_json("tflite", {"quantize": "int8"})  # doctest: +SKIP
        TfliteOptions(quantize='int8', ...)
    """
    _load_converters()
    spec = get_converter(target)
    body = {k: v for k, v in options.items() if k not in ("format", "type")}
    if not body:
        return None
    known = {f.name for f in dataclasses.fields(spec.options_type)}
    unknown = sorted(set(body) - known)
    if unknown:
        raise InvalidOptionsError(f"unknown {target} option(s) {', '.join(unknown)}; valid: {', '.join(sorted(known))}")
    try:
        return spec.options_type(**{k: tuple(v) if isinstance(v, list) else v for k, v in body.items()})
    except (TypeError, ValueError) as exc:
        raise InvalidOptionsError(f"{target} options: {exc}") from exc


def _digest(path: Path) -> tuple[str, int]:
    """sha256 and size of a file, or of a directory (``.mlpackage``) over sorted relative paths + bytes."""
    h = hashlib.sha256()
    if path.is_dir():
        size = 0
        for f in sorted(p for p in path.rglob("*") if p.is_file()):
            data = f.read_bytes()
            h.update(str(f.relative_to(path)).encode() + b"\0" + data)
            size += len(data)
        return h.hexdigest(), size
    return sha256_file(path), path.stat().st_size


def default_options(target: str, profile: DeviceProfile) -> object:
    """Options for ``target`` derived from the profile's recipe (see :mod:`controller.conversion.recipes`)."""
    from controller.conversion.recipes import options_for

    return options_for(target, profile)


def convert(
    model: Path | str | Any,
    target: str,
    profile: DeviceProfile | str,
    *,
    out: Path,
    options: object | None = None,
    golden: dict[str, Any] | None = None,
    calibration: list[dict[str, Any]] | None = None,
    example_inputs: tuple[Any, ...] | None = None,
    input_names: list[str] | None = None,
    output_names: list[str] | None = None,
    quality_metric: str = "cosine",
    check: bool = True,
    drift_on_failure: bool = True,
) -> ConversionResult:
    """Convert ``model`` for ``target`` on ``profile`` and check it against the source.

    Args:
        model: ``.onnx`` or ``.pt2`` path, or a torch ``nn.Module`` (then pass ``example_inputs``).
        target: a registered converter key: ``onnx``, ``tensorrt``, ``tflite``, ``coreml``.
        profile: a :class:`DeviceProfile` or a profile id / path.
        out: artifact path (``.onnx``, ``.tflite``, ``.mlpackage``).
        options: the target's options dataclass; default derived from the profile's recipe.
        golden: named golden inputs, samples stacked on axis 0; synthesized from the signature if None.
        calibration: representative samples for full-integer quantization (TFLite INT8);
            defaults to the golden inputs split into samples.
        quality_metric: ``top1`` for classifiers (enforces the profile's top-1 agreement), else ``cosine``.
        check: raise :class:`CrossRuntimeMismatchError` when outside the profile's tolerance.
        drift_on_failure: on a failed check of an ONNX artifact, attach the per-layer drift table.

    Example:
        >>> res = convert(Path("mnv2.onnx"), "onnx", "rpi5", out=Path("out/mnv2.rpi5.onnx"))  # doctest: +SKIP
        >>> res.check["ok"], res.size_mb
    """
    import numpy as np

    from controller.conversion.check import cross_runtime_check, first_divergent, layer_drift
    from controller.conversion.source import load_source, synth_golden

    _load_converters()
    spec = get_converter(target)
    missing = [m for m in spec.needs if importlib.util.find_spec(m) is None]
    if missing:
        raise MissingDependencyError(
            f"{target}: needs {', '.join(missing)}; install the conversion extra: pip install 'edgefleet[convert]'")
    prof = profile if isinstance(profile, DeviceProfile) else load_profile(profile)
    opts = options if options is not None else default_options(target, prof)
    if not isinstance(opts, spec.options_type):
        raise TypeError(f"{target}: options must be {spec.options_type.__name__}, got {type(opts).__name__}")
    source = load_source(model, example_inputs=example_inputs, input_names=input_names, output_names=output_names)
    feeds = {k: np.asarray(v) for k, v in golden.items()} if golden else synth_golden(source.inputs)
    calib = calibration or [{k: v[i:i + 1] for k, v in feeds.items()} for i in range(len(next(iter(feeds.values()))))]
    out = Path(out)
    start = time.perf_counter()
    workdir = Path(tempfile.mkdtemp(prefix=f"convert-{target}-"))
    try:
        artifact = spec.handler(source, prof, opts, out, ConversionContext(workdir, feeds, calib))
        seconds = time.perf_counter() - start
        sha, size = _digest(artifact.path)
        structural = dict(artifact.structural)
        if size > prof.max_artifact_mb * 2**20:
            structural.update(ok=False, error=f"artifact {size / 2**20:.1f} MB > profile max_artifact_mb "
                                              f"{prof.max_artifact_mb}")
        report = cross_runtime_check(
            source.run, artifact.runner, feeds, prof.tolerance, target=target, profile=prof.id,
            output_names=source.output_names, artifact_output_names=[o["name"] for o in artifact.outputs],
            quality_metric=quality_metric, structural=structural)
        if not report.ok and drift_on_failure and artifact.format == "onnx" and artifact.runner is not None:
            one = {k: v[:1] for k, v in feeds.items()}
            report.drift = layer_drift(source.onnx_path(workdir), artifact.path, one)
            report.first_divergent = first_divergent(report.drift, prof.tolerance)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    src_sha = _digest(source.path)[0] if source.path is not None and source.path.exists() else None
    result = ConversionResult(
        target=target, format=artifact.format, profile=prof.id, precision=artifact.precision, path=artifact.path,
        sha256=sha, size_bytes=size, source_sha256=src_sha, options=options_to_json(opts), inputs=artifact.inputs,
        outputs=artifact.outputs, extra_files=artifact.extra_files, notes=artifact.notes, check=report.to_dict(),
        seconds=round(seconds, 3))
    Path(str(artifact.path) + ".conversion.json").write_text(json.dumps(result.model_dump(mode="json"), indent=2))
    if check and not report.ok:
        raise CrossRuntimeMismatchError(report)
    return result
