"""Device profiles: data files in ``profiles/`` validated by one pydantic model.

A profile tells the controller which artifact to build (format, precision,
recipe) and tells the agent its budgets (threads, memory, storage). Users add
their own TOML file; a bad one fails with the field that is wrong.
"""

from __future__ import annotations

import os
import sys
import tomllib
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from common.errors import InvalidInputError

Arch = Literal["aarch64", "armv7", "x86_64", "riscv64"]
Format = Literal["onnx", "tflite", "coreml", "tensorrt"]
_REPO_PROFILES = Path(__file__).resolve().parent.parent / "profiles"


class ProfileError(InvalidInputError):
    """A profile file is missing or invalid; the message names the file and the field."""


class Slo(BaseModel):
    """Service-level budget on the device."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    latency_p95_ms: float = Field(gt=0)
    memory_mb: float = Field(gt=0)


class Recipe(BaseModel):
    """Default compression + conversion for the profile."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    technique: str
    format: Format
    params: dict[str, str | int | float | bool] = {}


class Tolerance(BaseModel):
    """How far an artifact's outputs may drift from the reference on the golden inputs.

    Checked after every conversion (``controller.conversion.check``): an artifact
    outside these bounds is never shipped. ``max_abs_error`` is off by default
    because INT8 logits legitimately move by more than FP32 rounding; cosine and
    top-1 agreement are the scale-free guards.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    min_cosine: float = Field(default=0.99, ge=0, le=1)
    min_top1_agreement: float = Field(default=0.98, ge=0, le=1)
    max_abs_error: float | None = Field(default=None, gt=0)


class OrtTuning(BaseModel):
    """ONNX Runtime session settings measured to matter on a device class.

    Why a profile field and not code: kernel speed differs per CPU. On the x86 VNNI box the fused
    ``SkipLayerNormalization`` kernel measured 2-3× slower than the plain Add + LayerNormalization
    it replaces (MiniLM INT8 0.43× → 0.38× FP32 latency without it), while other CPUs may gain from
    it. Flushing denormals to zero is on everywhere: attention masks built from ``finfo.min``
    push Softmax into denormal arithmetic (MiniLM FP32 Softmax 8 ms → 0.7 ms per inference with it).
    The controller's evaluation and the agent apply the same tuning, so the figures the
    controller reports are the ones the device sees.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    session_config: dict[str, str] = {"session.set_denormal_as_zero": "1"}
    disabled_optimizers: list[str] = []

    def apply(self, options: object) -> list[str] | None:
        """Put the session config entries on an ``ort.SessionOptions``; returns ``disabled_optimizers``.

        The return value goes to ``ort.InferenceSession(..., disabled_optimizers=...)``, the only
        place ORT accepts it.
        """
        for key, value in self.session_config.items():
            options.add_session_config_entry(key, value)  # type: ignore[attr-defined]
        return list(self.disabled_optimizers) or None


class DeviceProfile(BaseModel):
    """One device class."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    id: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")]
    name: str
    arch: Arch
    cpu: str
    isa_features: list[str] = []
    cores: int = Field(ge=1, le=256)
    ram_mb: int = Field(ge=64)
    storage_mb: int = Field(ge=16)
    accelerator: str | None = None
    runtimes: list[str] = Field(min_length=1)
    formats: list[Format] = Field(min_length=1)
    execution_providers: list[str] = ["CPUExecutionProvider"]
    fast_dtypes: list[Literal["fp32", "fp16", "bf16", "int8", "int4"]] = ["fp32"]
    slo: Slo
    recipe: Recipe
    max_artifact_mb: float = Field(default=256, gt=0)
    tolerance: Tolerance = Tolerance()
    onnxruntime: OrtTuning = OrtTuning()

    @field_validator("recipe")
    @classmethod
    def _recipe_format_is_supported(cls, recipe: Recipe, info: ValidationInfo) -> Recipe:
        # A recipe whose format the device cannot run would build an artifact nobody can load.
        formats = info.data.get("formats")
        if formats and recipe.format not in formats:
            raise ValueError(f"recipe.format {recipe.format!r} is not one of the profile's formats {formats}")
        return recipe

    @property
    def has_int8_dot(self) -> bool:
        """True where INT8 dot-product instructions exist; without them ORT needs reduce_range."""
        return bool({"vnni", "avx512_vnni", "avx_vnni", "asimddp", "dotprod"} & set(self.isa_features))


def select_execution_providers(preferred: list[str], available: list[str]) -> list[str]:
    """The profile's providers that this runtime build has, in the profile's order, CPU last.

    Why: a Jetson profile prefers TensorRT, but a device without TensorRT (or an
    ORT build without the TensorRT EP) must still run the same ONNX artifact on
    the best provider it does have instead of failing. CPU is always appended as
    the floor, since every ONNX Runtime build has it.

    Example:
        >>> select_execution_providers(["TensorrtExecutionProvider", "CUDAExecutionProvider"],
        ...                            ["CUDAExecutionProvider", "CPUExecutionProvider"])
        ['CUDAExecutionProvider', 'CPUExecutionProvider']
    """
    chosen = [ep for ep in preferred if ep in available and ep != "CPUExecutionProvider"]
    return [*chosen, "CPUExecutionProvider"]


def profiles_dir() -> Path:
    """Where profiles live: ``EDGEFLEET_PROFILES_DIR``, the checkout's ``profiles/``, or the installed copy.

    A device installs the agent from a wheel, where the profiles are data files under
    ``<prefix>/share/edgefleet/profiles``; a developer runs from the checkout.
    """
    if "EDGEFLEET_PROFILES_DIR" in os.environ:
        return Path(os.environ["EDGEFLEET_PROFILES_DIR"])
    if _REPO_PROFILES.is_dir():
        return _REPO_PROFILES
    return Path(sys.prefix) / "share" / "edgefleet" / "profiles"


def load_profile_file(path: Path) -> DeviceProfile:
    """Parse and validate one file; errors name the file and the failing field."""
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError as exc:
        raise ProfileError(f"profile file {path} does not exist") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ProfileError(f"{path}: not valid TOML: {exc}") from exc
    try:
        return DeviceProfile.model_validate(data)
    except ValidationError as exc:
        msgs = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        raise ProfileError(f"{path}: invalid profile: {msgs}") from exc


def load_profile(name_or_path: str) -> DeviceProfile:
    """A profile by id (file ``<id>.toml`` in :func:`profiles_dir`) or by path."""
    path = Path(name_or_path)
    if path.suffix == ".toml" or os.sep in name_or_path:
        return load_profile_file(path)
    candidate = profiles_dir() / f"{name_or_path}.toml"
    if not candidate.exists():
        known = ", ".join(sorted(p.id for p in list_profiles()))
        raise ProfileError(f"unknown profile {name_or_path!r}; known profiles: {known}")
    return load_profile_file(candidate)


def list_profiles() -> list[DeviceProfile]:
    """Every valid profile in the profiles directory, sorted by id."""
    return sorted((load_profile_file(p) for p in profiles_dir().glob("*.toml")), key=lambda p: p.id)
