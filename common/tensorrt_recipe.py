"""The TensorRT build recipe a Jetson artifact carries inside its signed manifest.

Why a recipe and not an engine: a TensorRT engine only loads on the exact
TensorRT version, JetPack/CUDA stack and GPU it was built on, and TensorRT does
not install on the controller. So the controller ships portable ONNX plus this
recipe, and the agent builds the engine on the device (or, without TensorRT,
runs the same ONNX on the best ONNX Runtime execution provider it has).

Why typed and inside the manifest (not a free-form JSON blob): the recipe is
covered by the manifest's Ed25519 signature, so a tampered recipe is refused as
``signature_invalid`` before a byte is downloaded, and an inconsistent one
(precision flags that contradict each other, an ONNX hash that is not the
shipped model's) is refused as ``malformed_payload`` at decode time, like every
other bad field. Only pydantic and the stdlib: this module is imported by the agent.

Example:
    >>> recipe = TensorrtRecipe.model_validate(json.loads(Path("m.trt.json").read_text()))  # doctest: +SKIP
    >>> engine_cache_key(recipe, device_fingerprint())  # doctest: +SKIP
    '3f9c...'
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

RECIPE_SCHEMA_VERSION = 1
RECIPE_KIND = "tensorrt-build-recipe"
FINGERPRINT_FIELDS = ("tensorrt_version", "jetpack_version", "cuda_version", "gpu_name", "compute_capability")
"""What an engine is tied to; a change in any of them means a new engine (the cache key includes them)."""

FingerprintField = Literal["tensorrt_version", "jetpack_version", "cuda_version", "gpu_name", "compute_capability"]
Sha256 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
FileName = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")]
ProviderName = Annotated[str, Field(pattern=r"^[A-Za-z0-9]{1,64}ExecutionProvider$")]
_SHAPE_ARG = re.compile(r"^--(min|opt|max)Shapes=(.+)$")


class OrtTensorrtOptions(BaseModel):
    """ONNX Runtime TensorRT execution-provider options (``providers=[("TensorrtExecutionProvider", {...})]``).

    ``trt_engine_cache_path`` is what the controller suggests; the agent always replaces it
    with a folder under its own data dir (a path from the network is never written to).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    trt_fp16_enable: bool = False
    trt_int8_enable: bool = False
    trt_engine_cache_enable: bool = True
    trt_engine_cache_path: str = "engines/"
    trt_timing_cache_enable: bool = True
    trt_max_workspace_size: int = Field(gt=0)
    trt_builder_optimization_level: int = Field(default=3, ge=0, le=5)


class ShapeProfile(BaseModel):
    """TensorRT optimisation profile of one dynamic input: the shapes the engine is tuned for and accepts."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str = Field(min_length=1, max_length=256)
    min: list[Annotated[int, Field(ge=1)]]
    opt: list[Annotated[int, Field(ge=1)]]
    max: list[Annotated[int, Field(ge=1)]]

    @model_validator(mode="after")
    def _ordered(self) -> ShapeProfile:
        if not len(self.min) == len(self.opt) == len(self.max):
            raise ValueError(f"shape profile of {self.name!r}: min/opt/max have different ranks")
        if any(not lo <= mid <= hi for lo, mid, hi in zip(self.min, self.opt, self.max)):
            raise ValueError(f"shape profile of {self.name!r}: needs min <= opt <= max in every dimension")
        return self


class RecipeTensor(BaseModel):
    """Name, shape (ints, or a string for a dynamic dimension) and dtype of one graph input."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str = Field(min_length=1, max_length=256)
    shape: list[int | str]
    dtype: str = Field(max_length=32)


def _parse_shapes(value: str) -> dict[str, list[int]]:
    """``input:1x3x224x224,mask:1x128`` (trtexec syntax) → {name: dims}."""
    out: dict[str, list[int]] = {}
    for item in value.split(","):
        name, _, dims = item.rpartition(":")
        out[name] = [int(d) for d in dims.split("x")]
    return out


def shapes_from_trtexec(args: list[str]) -> list[dict[str, Any]]:
    """Shape profiles written as trtexec ``--minShapes/--optShapes/--maxShapes`` arguments.

    Recipes written before the ``shapes`` field existed carry the profile only there.
    """
    found: dict[str, dict[str, list[int]]] = {}
    for arg in args:
        match = _SHAPE_ARG.match(arg)
        if match:
            found[match.group(1)] = _parse_shapes(match.group(2))
    names = found.get("min", {})
    return [{"name": n, "min": names[n], "opt": found.get("opt", {}).get(n, names[n]),
             "max": found.get("max", {}).get(n, names[n])} for n in names]


class TensorrtRecipe(BaseModel):
    """How the device builds (and caches) the TensorRT engine of the artifact's ONNX model.

    Attributes:
        onnx_sha256: the ONNX the recipe was written for; must be the manifest's model blob.
        precision: ``fp16``, ``int8`` (explicit QDQ in the ONNX, FP16 for the rest) or ``fp32``.
        workspace_mb / builder_optimization_level: TensorRT builder settings.
        shapes: optimisation profile per dynamic input (required by TensorRT for dynamic dims).
        trtexec: the same build as a ``trtexec`` command line, for an operator on the device; the
            agent never executes it.
        ort_tensorrt_options: the same build for ONNX Runtime's TensorRT execution provider.
        fallback_providers: what runs the ONNX where TensorRT is missing, in order.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    schema_version: Literal[1] = RECIPE_SCHEMA_VERSION
    kind: Literal["tensorrt-build-recipe"] = RECIPE_KIND
    onnx: FileName
    onnx_sha256: Sha256
    precision: Literal["fp16", "int8", "fp32"]
    engine: FileName
    workspace_mb: int = Field(ge=1, le=1 << 20)
    builder_optimization_level: int = Field(default=3, ge=0, le=5)
    shapes: list[ShapeProfile] = []
    trtexec: list[Annotated[str, Field(max_length=4096)]] = Field(default_factory=list, max_length=64)
    ort_tensorrt_options: OrtTensorrtOptions
    fingerprint_fields: list[FingerprintField] = list(FINGERPRINT_FIELDS)
    engine_cache_key: str = ""
    """Human-readable formula of the key; the agent computes it with :func:`engine_cache_key`."""
    fallback_providers: list[ProviderName] = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    inputs: list[RecipeTensor] = []

    @model_validator(mode="before")
    @classmethod
    def _fill_from_older_recipes(cls, data: Any) -> Any:
        """Recipes from before ``workspace_mb``/``shapes`` existed still validate: take them from the
        ORT options and the trtexec shape arguments, which always carried the same values."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        ort = data.get("ort_tensorrt_options")
        if isinstance(ort, dict):
            if "workspace_mb" not in data and isinstance(ort.get("trt_max_workspace_size"), int):
                data["workspace_mb"] = ort["trt_max_workspace_size"] // 2**20
            if "builder_optimization_level" not in data and "trt_builder_optimization_level" in ort:
                data["builder_optimization_level"] = ort["trt_builder_optimization_level"]
        if "shapes" not in data and isinstance(data.get("trtexec"), list):
            try:
                data["shapes"] = shapes_from_trtexec([a for a in data["trtexec"] if isinstance(a, str)])
            except ValueError as exc:
                raise ValueError(f"trtexec shape arguments are not NAME:DxDx...: {exc}") from exc
        return data

    @field_validator("trtexec")
    @classmethod
    def _trtexec_form(cls, v: list[str]) -> list[str]:
        if v and (v[0] != "trtexec" or any(not a.startswith("--") for a in v[1:])):
            raise ValueError("trtexec must be ['trtexec', '--option=value', ...]")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> TensorrtRecipe:
        """The trtexec form, the ORT form and the fields must describe one build, or the device
        would build something other than what the controller checked."""
        ort = self.ort_tensorrt_options
        if ort.trt_fp16_enable != (self.precision in ("fp16", "int8")):
            raise ValueError(f"ort_tensorrt_options.trt_fp16_enable={ort.trt_fp16_enable} contradicts "
                             f"precision {self.precision!r}")
        if ort.trt_int8_enable != (self.precision == "int8"):
            raise ValueError(f"ort_tensorrt_options.trt_int8_enable={ort.trt_int8_enable} contradicts "
                             f"precision {self.precision!r}")
        if ort.trt_max_workspace_size != self.workspace_mb * 2**20:
            raise ValueError("ort_tensorrt_options.trt_max_workspace_size differs from workspace_mb")
        if ort.trt_builder_optimization_level != self.builder_optimization_level:
            raise ValueError("ort_tensorrt_options.trt_builder_optimization_level differs from "
                             "builder_optimization_level")
        if sorted(set(self.fingerprint_fields)) != sorted(FINGERPRINT_FIELDS):
            raise ValueError(f"fingerprint_fields must be {list(FINGERPRINT_FIELDS)}")
        if len({s.name for s in self.shapes}) != len(self.shapes):
            raise ValueError("shapes lists an input twice")
        return self

    def build_settings(self) -> dict[str, Any]:
        """What, besides the ONNX and the precision, changes the engine TensorRT builds."""
        return {"workspace_mb": self.workspace_mb, "builder_optimization_level": self.builder_optimization_level,
                "shapes": [s.model_dump() for s in self.shapes]}

    def for_model_file(self, filename: str) -> TensorrtRecipe:
        """The recipe with the ONNX renamed to ``filename`` (the name it has in the artifact), so the
        trtexec line works as written inside a slot folder."""
        engine = filename.rsplit(".", 1)[0] + ".engine"
        args = [f"--onnx={filename}" if a.startswith("--onnx=") else
                f"--saveEngine={engine}" if a.startswith("--saveEngine=") else a for a in self.trtexec]
        return self.model_copy(update={"onnx": filename, "engine": engine, "trtexec": args})


ENGINE_CACHE_KEY_FORMULA = ("sha256(onnx_sha256 | precision | build settings | "
                            + " | ".join(FINGERPRINT_FIELDS) + ")")


def engine_cache_key(recipe: TensorrtRecipe, fingerprint: Mapping[str, str]) -> str:
    """Key an engine by the ONNX, the build (precision, workspace, shape profiles) and the device's
    TensorRT/JetPack/CUDA/GPU fingerprint.

    A change to any of these invalidates the cached engine: an engine from another TensorRT
    version or GPU fails to deserialize (or loads with other tactics), and one built for a
    smaller shape profile rejects larger inputs. Controller and agent share this function.

    Raises:
        ValueError: the fingerprint lacks one of :data:`FINGERPRINT_FIELDS`.
    """
    missing = [f for f in FINGERPRINT_FIELDS if f not in fingerprint]
    if missing:
        raise ValueError(f"fingerprint lacks {missing}")
    settings = json.dumps(recipe.build_settings(), sort_keys=True, separators=(",", ":"))
    parts = [recipe.onnx_sha256, recipe.precision, settings, *(str(fingerprint[f]) for f in FINGERPRINT_FIELDS)]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()
