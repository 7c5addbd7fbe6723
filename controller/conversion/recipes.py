"""Recipes: a device profile → which compression technique, which converter, which options.

Why a table driven by ``profile.recipe``: the choice is device knowledge, not
model knowledge. A Pi 4 (Cortex-A72, no dot-product) gets INT8 QDQ with
``reduce_range`` (7-bit weights avoid int16 accumulation overflow in ORT's
non-VNNI kernels); a Jetson gets FP16 ONNX for TensorRT; an Android phone gets
full-integer INT8 TFLite for XNNPACK; an iPhone gets Core ML with INT8
weights; a RISC-V board without RVV gets INT8 ONNX for ORT's CPU provider.
Profiles carry this as data, so a user's own profile picks its own recipe.

Where the quantization happens depends on the format: ONNX targets get it
from the compression engine (``controller.compression``, QDQ ONNX) before the
converter runs; TFLite and Core ML quantize inside their converters (PT2E and
coremltools), because their runtimes need their own quantized op forms.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from common.profiles import DeviceProfile, load_profile

# Recipe params that configure a converter rather than the compression engine.
_CONVERTER_PARAMS = {"tensorrt", "full_integer", "float_io", "palettize", "nbits", "optimization", "opset", "slim"}


@dataclass(frozen=True)
class BuildPlan:
    """Everything ``edgefleet build`` does for one profile, decided before any work starts.

    ``compression`` is ``(technique, params)`` for ``controller.compression.make_config``
    or None when the converter quantizes itself (TFLite, Core ML) or nothing is compressed.
    """

    profile: str
    technique: str
    compression: tuple[str, dict[str, Any]] | None
    target: str
    format: str
    options: Any
    artifact_suffix: str
    notes: list[str] = field(default_factory=list)


def target_for(profile: DeviceProfile) -> str:
    """The converter key the profile's recipe needs (``tensorrt`` for ONNX built into TensorRT)."""
    if profile.recipe.format == "onnx" and profile.recipe.params.get("tensorrt"):
        return "tensorrt"
    return profile.recipe.format


def options_for(target: str, profile: DeviceProfile) -> Any:
    """The converter options that realise the profile's recipe for ``target``."""
    technique, params = profile.recipe.technique, profile.recipe.params
    if target == "onnx":
        from controller.conversion.to_onnx import OnnxOptions

        return OnnxOptions(optimization=str(params.get("optimization", "extended")),  # type: ignore[arg-type]
                           opset=int(params["opset"]) if "opset" in params else None,
                           slim=bool(params.get("slim", False)))
    if target == "tensorrt":
        from controller.conversion.to_tensorrt import TensorrtOptions

        precision = "int8" if technique.startswith("int8") else ("fp32" if technique == "fp32" else "fp16")
        return TensorrtOptions(precision=precision)  # type: ignore[arg-type]
    if target == "tflite":
        from controller.conversion.to_tflite import TfliteOptions

        precision = {"int8-static": "int8", "fp16": "fp16"}.get(technique, "fp32")
        # float_io = false: INT8 graph I/O for runtimes that feed quantized tensors themselves
        return TfliteOptions(precision=precision, per_channel=bool(params.get("per_channel", True)),  # type: ignore[arg-type]
                             float_io=bool(params.get("float_io", True)))
    if target == "coreml":
        from controller.conversion.to_coreml import CoremlOptions

        if params.get("palettize"):
            return CoremlOptions(weights="palettize", nbits=int(params.get("nbits", 6)))
        return CoremlOptions(weights="int8" if technique.startswith("int8") else "fp16")
    from controller.conversion.registry import get_converter

    return get_converter(target).options_type()


# Precisions tried in order when an artifact misses the profile's tolerance ("measure, don't
# assume": full-integer INT8 suits CNNs, transformers usually need dynamic-range INT8).
_LADDERS = {"tflite": ("int8", "int8-dynamic", "fp16", "fp32"), "tensorrt": ("int8", "fp16", "fp32")}


def fallback_options(target: str, options: Any) -> list[Any]:
    """``options`` then the less aggressive precisions to try if it fails the cross-runtime check."""
    import dataclasses

    ladder = _LADDERS.get(target)
    current = getattr(options, "precision", None)
    if not ladder or current not in ladder:
        return [options]
    return [dataclasses.replace(options, precision=p) for p in ladder[ladder.index(current):]]


_SUFFIX = {"onnx": ".onnx", "tensorrt": ".onnx", "tflite": ".tflite", "coreml": ".mlpackage"}


def plan_build(profile: DeviceProfile | str) -> BuildPlan:
    """Decide compression + conversion for ``profile``.

    Example:
        >>> plan = plan_build("rpi4")
        >>> plan.compression, plan.target
        (('int8-static', {'reduce_range': True, 'per_channel': True}), 'onnx')
    """
    prof = profile if isinstance(profile, DeviceProfile) else load_profile(profile)
    target = target_for(prof)
    technique = prof.recipe.technique
    comp_params = {k: v for k, v in prof.recipe.params.items() if k not in _CONVERTER_PARAMS}
    notes: list[str] = []
    compression: tuple[str, dict[str, Any]] | None = None
    if target in ("onnx", "tensorrt") and technique not in ("fp32", "fp16"):
        compression = (technique, comp_params)
        if technique == "int8-static" and not prof.has_int8_dot and not comp_params.get("reduce_range"):
            notes.append(f"{prof.id} has no INT8 dot-product: consider reduce_range=true")
    elif target in ("tflite", "coreml") and technique not in ("fp32", "fp16", "int8-static", "int8-weight"):
        notes.append(f"technique {technique!r} has no {target} form; converting FP32")
    return BuildPlan(prof.id, technique, compression, target, "onnx" if target == "tensorrt" else target,
                     options_for(target, prof), _SUFFIX.get(target, "." + target), notes)
