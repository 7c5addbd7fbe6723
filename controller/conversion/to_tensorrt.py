"""TensorRT target (Jetson): ship ONNX plus a build recipe; the device builds and caches the engine.

Why not build the engine here: a TensorRT engine is specific to the exact
TensorRT version, JetPack/CUDA and GPU (compute capability, SM count) it was
built on, and TensorRT does not install on the controller at all. So the
controller ships a portable ONNX (FP16 weights, or INT8 as explicit QDQ from
the compression step, the only INT8 form TensorRT 10 builds) and a JSON recipe:
the ``trtexec`` command line and the equivalent ONNX Runtime TensorRT-EP
options, plus the fields the agent fingerprints the engine cache with. The
agent builds once per fingerprint and reuses the cached engine; where TensorRT
is absent it runs the same ONNX on the best ORT execution provider it has
(``common.profiles.select_execution_providers``: TensorRT → CUDA → CPU).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from common.manifest import sha256_file
from common.tensorrt_recipe import (
    ENGINE_CACHE_KEY_FORMULA,
    FINGERPRINT_FIELDS,
    RECIPE_SCHEMA_VERSION,
    TensorrtRecipe,
)
from common.tensorrt_recipe import engine_cache_key as _engine_cache_key
from controller.conversion.errors import ConversionError
from controller.conversion.registry import Artifact, ConversionContext, register_converter

if TYPE_CHECKING:
    from common.profiles import DeviceProfile
    from controller.conversion.source import SourceModel

__all__ = ["FINGERPRINT_FIELDS", "RECIPE_SCHEMA_VERSION", "TensorrtOptions", "build_recipe", "engine_cache_key"]


@dataclass(frozen=True)
class TensorrtOptions:
    """How the shipped ONNX and the on-device engine build are set up.

    Attributes:
        precision: ``fp16`` (weights stored half, I/O kept float32), ``int8``
            (source must already be QDQ: run compression ``int8-static`` first) or ``fp32``.
        workspace_mb: builder workspace memory pool (the Orin Nano shares 8 GB with the CPU).
        opt_batch / max_batch: optimisation profile for a dynamic batch dimension.
        builder_optimization_level: trtexec ``--builderOptimizationLevel`` (0-5; 3 is TensorRT's default).
    """

    version: int = 1
    precision: Literal["fp16", "int8", "fp32"] = "fp16"
    workspace_mb: int = 1024
    opt_batch: int = 1
    max_batch: int = 4
    builder_optimization_level: int = 3


def _dims(shape: list[Any], batch: int) -> list[int]:
    """Concrete dims for a profile: the batch for a dynamic first axis, 128 for any other dynamic axis."""
    return [batch if i == 0 and not isinstance(d, int) else (d if isinstance(d, int) and d > 0 else 128)
            for i, d in enumerate(shape)]


def _shape_arg(name: str, shape: list[Any], batch: int) -> str:
    return f"{name}:{'x'.join(str(d) for d in _dims(shape, batch))}"


def build_recipe(onnx_file: Path, inputs: list[dict[str, Any]], options: TensorrtOptions,
                 profile: DeviceProfile) -> dict[str, Any]:
    """The JSON the agent follows to build the engine (trtexec and ORT TensorRT-EP forms).

    Validated by :class:`common.tensorrt_recipe.TensorrtRecipe` before it is returned, so a recipe
    the agent would refuse never leaves the controller.
    """
    sha = sha256_file(onnx_file)
    engine = onnx_file.with_suffix(".engine").name
    cmd = ["trtexec", f"--onnx={onnx_file.name}", f"--saveEngine={engine}",
           f"--memPoolSize=workspace:{options.workspace_mb}M",
           f"--builderOptimizationLevel={options.builder_optimization_level}", "--timingCacheFile=timing.cache"]
    if options.precision in ("fp16", "int8"):
        cmd.append("--fp16")  # INT8 QDQ models still want FP16 for the layers left unquantized
    if options.precision == "int8":
        cmd.append("--int8")
    dynamic = [i for i in inputs if any(not isinstance(d, int) or d <= 0 for d in i["shape"])]
    if dynamic:
        cmd += ["--minShapes=" + ",".join(_shape_arg(i["name"], i["shape"], 1) for i in dynamic),
                "--optShapes=" + ",".join(_shape_arg(i["name"], i["shape"], options.opt_batch) for i in dynamic),
                "--maxShapes=" + ",".join(_shape_arg(i["name"], i["shape"], options.max_batch) for i in dynamic)]
    recipe = {
        "schema_version": RECIPE_SCHEMA_VERSION,
        "kind": "tensorrt-build-recipe",
        "onnx": onnx_file.name,
        "onnx_sha256": sha,
        "precision": options.precision,
        "engine": engine,
        "workspace_mb": options.workspace_mb,
        "builder_optimization_level": options.builder_optimization_level,
        "shapes": [{"name": i["name"], "min": _dims(i["shape"], 1), "opt": _dims(i["shape"], options.opt_batch),
                    "max": _dims(i["shape"], options.max_batch)} for i in dynamic],
        "trtexec": cmd,
        "ort_tensorrt_options": {
            "trt_fp16_enable": options.precision in ("fp16", "int8"),
            "trt_int8_enable": options.precision == "int8",
            "trt_engine_cache_enable": True,
            "trt_engine_cache_path": "engines/",
            "trt_timing_cache_enable": True,
            "trt_max_workspace_size": options.workspace_mb * 2**20,
            "trt_builder_optimization_level": options.builder_optimization_level,
        },
        "fingerprint_fields": list(FINGERPRINT_FIELDS),
        "engine_cache_key": ENGINE_CACHE_KEY_FORMULA,
        "fallback_providers": [ep for ep in profile.execution_providers if ep != "TensorrtExecutionProvider"],
        "inputs": inputs,
    }
    return TensorrtRecipe.model_validate(recipe).model_dump(mode="json")


def engine_cache_key(recipe: dict[str, Any] | TensorrtRecipe, fingerprint: dict[str, str]) -> str:
    """Key an engine by the ONNX, the build settings and the device's TensorRT/JetPack/CUDA/GPU fingerprint.

    The one implementation is :func:`common.tensorrt_recipe.engine_cache_key`, which the agent
    uses too; this accepts the recipe as the JSON dict ``build_recipe`` returns.
    """
    model = recipe if isinstance(recipe, TensorrtRecipe) else TensorrtRecipe.model_validate(recipe)
    return _engine_cache_key(model, fingerprint)


def _to_fp16(model: Any) -> Any:
    from onnxruntime.transformers.float16 import convert_float_to_float16

    # keep_io_types: the golden set, the agent and the CPU fallback all feed float32.
    return convert_float_to_float16(model, keep_io_types=True)


@register_converter("tensorrt", options=TensorrtOptions, needs=("onnx", "onnxruntime"))
def convert_tensorrt(source: SourceModel, profile: DeviceProfile, options: TensorrtOptions, out: Path,
                     ctx: ConversionContext) -> Artifact:
    """Write ``out`` (.onnx for TensorRT) and ``out.with_suffix('.trt.json')`` (the build recipe)."""
    import onnx
    import onnxruntime as ort

    from common.profiles import select_execution_providers
    from controller.conversion.check import onnx_runner
    from controller.conversion.source import onnx_specs
    from controller.conversion.to_onnx import OnnxOptions, check_onnx_ops, detect_precision, prepare_onnx

    # No ORT fusions here: TensorRT parses standard ONNX only, contrib ops would be unsupported.
    model, _ = prepare_onnx(source, ctx.workdir, OnnxOptions(optimization="none"), "tensorrt")
    check_onnx_ops(model, "tensorrt", allowed_domains={"", "ai.onnx"})
    have = detect_precision(model)
    if options.precision == "int8" and have != "int8":
        raise ConversionError("tensorrt: precision int8 needs an explicitly quantized (QDQ) ONNX; run the "
                              "int8-static compression first (TensorRT 10 deprecated implicit calibration)")
    if options.precision == "fp16" and have == "fp32":
        model = _to_fp16(model)
    out.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(out))
    ins, outs = onnx_specs(out)
    inputs = [t.to_dict() for t in ins]
    recipe = build_recipe(out, inputs, options, profile)
    recipe_path = out.with_suffix(".trt.json")
    recipe_path.write_text(json.dumps(recipe, indent=2))
    providers = select_execution_providers(profile.execution_providers, ort.get_available_providers())
    note = f"engine built on device from {recipe_path.name}; this host runs the ONNX on {providers}"
    return Artifact(out, "onnx", options.precision, inputs, [t.to_dict() for t in outs],
                    runner=onnx_runner(out, providers=providers), extra_files=[recipe_path], notes=[note],
                    structural={"providers": providers, "tensorrt_recipe": recipe_path.name})
