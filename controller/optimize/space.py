"""The search space: which compositions of existing techniques a model + profile allow.

A :class:`Candidate` is one point: an optional *architecture* stage (a sub-network of the
pretrained model recovered by distillation / fine-tuning: width via structured pruning, depth via
removal of transformer blocks, a narrow distilled student, low-rank factorisation) followed by a
*precision* stage (FP32, FP16, static INT8 with its calibration method and per-layer fall-backs,
dynamic INT8, INT4 weight-only). Each stage is an existing technique config run through
``controller.compression.compress``, so a candidate's lineage is a chain of ordinary configs.

:func:`build_space` reads the profile (formats, fast dtypes, INT8 dot-product support) and the
model (torch module available? transformer encoder? MatMul layers?) so that the search never
spends trials on compositions the device or the model cannot take.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from typing import Any

from common.profiles import DeviceProfile
from controller.optimize.errors import InvalidSearchError, UnsupportedProfileError

PRECISIONS = ("fp32", "fp16", "int8", "int8-dynamic", "int4")
LAYER_CHOICES = ("int8", "weight-only", "fp32")  # per-layer decisions under static INT8


@dataclasses.dataclass(frozen=True)
class Candidate:
    """One composition: ``arch`` (``none`` or ``kind:ratio``) then ``precision`` with its options.

    Attributes:
        arch: ``none``, ``width:R`` (structured pruning of R of the channels / FFN neurons),
            ``depth:R`` (R of the transformer blocks removed), ``student:W`` (narrow student of
            width W distilled from the model), ``svd:R`` / ``tucker:R`` (low-rank, rank ratio R).
        precision: one of :data:`PRECISIONS`.
        calibration: INT8 static range method (``minmax`` / ``percentile`` / ``entropy``).
        fallback_layers: INT8 static: the N most INT8-sensitive layers (measured SQNR) leave INT8.
        fallback: what those layers become: ``weight-only`` INT8 or ``fp32``.
        layers: explicit per-layer decisions (node → ``int8`` / ``weight-only`` / ``fp32``), as
            the RL controller chooses them; overrides ``fallback_layers``.
    """

    arch: str = "none"
    precision: str = "fp32"
    calibration: str = "minmax"
    fallback_layers: int = 0
    fallback: str = "weight-only"
    layers: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise InvalidSearchError(f"precision {self.precision!r}: choose one of {', '.join(PRECISIONS)}")
        arch_kind(self.arch)  # validates
        bad = sorted({c for _, c in self.layers} - set(LAYER_CHOICES))
        if bad:
            raise InvalidSearchError(f"per-layer choice(s) {bad}: choose from {', '.join(LAYER_CHOICES)}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (per-layer decisions as an object)."""
        body = dataclasses.asdict(self)
        body["layers"] = dict(self.layers)
        return body

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Candidate:
        """Inverse of :meth:`to_dict`; unknown keys are refused by name."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise InvalidSearchError(f"unknown candidate field(s) {unknown}; valid: {sorted(known)}")
        body = dict(data)
        body["layers"] = tuple(sorted((body.get("layers") or {}).items()))
        return cls(**body)

    def key(self) -> str:
        """Canonical JSON: equal candidates share one measurement."""
        return json.dumps(self.to_dict(), sort_keys=True)

    def describe(self) -> str:
        """Short human label, e.g. ``depth:0.33 + int8(percentile, 2 weight-only)``."""
        prec = self.precision
        if prec == "int8":
            n = sum(1 for _, c in self.layers if c != "int8") if self.layers else self.fallback_layers
            extra = f", {n} {self.fallback if not self.layers else 'mixed'}" if n else ""
            prec = f"int8({self.calibration}{extra})"
        return prec if self.arch == "none" else f"{self.arch} + {prec}"


def arch_kind(arch: str) -> tuple[str, float]:
    """``(kind, ratio)`` of an arch string; InvalidSearchError for a malformed one."""
    if arch == "none":
        return "none", 0.0
    kind, _, value = arch.partition(":")
    try:
        ratio = float(value)
    except ValueError:
        ratio = -1.0
    if kind not in ("width", "depth", "student", "svd", "tucker") or not 0.0 < ratio < 1.0:
        raise InvalidSearchError(f"arch {arch!r}: use 'none' or KIND:RATIO with KIND in width, depth, student, svd, "
                                 "tucker and 0 < RATIO < 1")
    return kind, ratio


@dataclasses.dataclass(frozen=True)
class SearchSpace:
    """The dimensions a strategy samples; built by :func:`build_space` for one model and profile."""

    archs: tuple[str, ...] = ("none",)
    precisions: tuple[str, ...] = ("fp32", "int8")
    calibrations: tuple[str, ...] = ("minmax", "percentile")
    fallback_layers: tuple[int, ...] = (0, 1, 2, 4, 8)
    fallbacks: tuple[str, ...] = ("weight-only", "fp32")
    notes: tuple[str, ...] = ()

    def suggest(self, trial: Any) -> Candidate:
        """Sample a candidate with an optuna ``trial`` (INT8 options only when INT8 static is chosen)."""
        arch = trial.suggest_categorical("arch", list(self.archs))
        precision = trial.suggest_categorical("precision", list(self.precisions))
        if precision != "int8":
            return Candidate(arch=arch, precision=precision)
        return Candidate(arch=arch, precision=precision,
                         calibration=trial.suggest_categorical("calibration", list(self.calibrations)),
                         fallback_layers=trial.suggest_categorical("fallback_layers", list(self.fallback_layers)),
                         fallback=trial.suggest_categorical("fallback", list(self.fallbacks)))

    def size(self) -> int:
        """Number of distinct candidates (per-layer decisions aside)."""
        int8 = len(self.calibrations) * len(self.fallback_layers) * len(self.fallbacks) if "int8" in self.precisions \
            else 0
        return len(self.archs) * (len([p for p in self.precisions if p != "int8"]) + int8)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready description (written into ``search.json`` and the report)."""
        return {**{k: list(v) for k, v in dataclasses.asdict(self).items()}, "size": self.size()}


@dataclasses.dataclass(frozen=True)
class ModelTraits:
    """What the space depends on in the model: set by :func:`model_traits`."""

    has_torch: bool
    transformer: bool
    has_conv: bool
    has_matmul: bool
    narrow_student: bool  # the zoo's narrow-student architecture exists (mnist-cnn)


def model_traits(source: Any) -> ModelTraits:
    """Inspect the resolved model (``controller.compression.ModelSource``)."""
    import onnx

    ops = {n.op_type for n in onnx.load(str(source.onnx_path), load_external_data=False).graph.node}
    module = None
    if source.zoo is not None:
        module = source.zoo.torch_model()
    elif source.torch_module is not None:
        module = source.torch_module
    transformer = False
    if module is not None:
        from controller.compression.errors import UnsupportedModelError
        from controller.compression.prune_structured import encoder_blocks

        try:
            encoder_blocks(module)
            transformer = True
        except UnsupportedModelError:
            transformer = False
    return ModelTraits(has_torch=module is not None, transformer=transformer, has_conv="Conv" in ops,
                       has_matmul=bool({"MatMul", "Gemm"} & ops),
                       narrow_student=getattr(source.zoo, "name", None) == "mnist-cnn")


def build_space(traits: ModelTraits, profile: DeviceProfile, *, dimensions: Sequence[str] = ("arch", "precision"),
                archs: Sequence[str] | None = None, precisions: Sequence[str] | None = None) -> SearchSpace:
    """The space for one model on one profile.

    ``dimensions`` selects what is searched: ``arch`` (sub-networks: the NAS part) and/or
    ``precision``. ``archs`` / ``precisions`` narrow the defaults further (e.g. a benchmark that
    wants a short budget); a choice the model or profile cannot take is refused by name.
    """
    if "onnx" not in profile.formats:
        raise UnsupportedProfileError(
            f"profile {profile.id!r} runs {', '.join(profile.formats)} only; the optimiser measures ONNX Runtime "
            "candidates (convert the recommended ONNX build afterwards with `edgefleet convert`)")
    unknown = sorted(set(dimensions) - {"arch", "precision"})
    if unknown or not dimensions:
        raise InvalidSearchError(f"search dimensions {list(dimensions)}: use 'arch' and/or 'precision'")
    notes: list[str] = []
    allowed_prec = ["fp32", "int8", "int8-dynamic"]
    if "fp16" in profile.fast_dtypes:
        allowed_prec.append("fp16")
    else:
        notes.append(f"fp16 left out: {profile.id} lists no fast fp16 ({', '.join(profile.fast_dtypes)})")
    if traits.has_matmul:
        allowed_prec.append("int4")
    else:
        notes.append("int4 weight-only left out: the model has no MatMul/Gemm (ORT packs only those)")
    allowed_arch = ["none"]
    if traits.has_torch:
        if traits.transformer:
            allowed_arch += ["depth:0.17", "depth:0.33", "depth:0.5", "width:0.25", "width:0.5"]
        else:
            allowed_arch += ["width:0.25", "width:0.5", "width:0.75"]
            if traits.has_conv:
                allowed_arch += ["tucker:0.5"]
            if traits.has_matmul:
                allowed_arch += ["svd:0.5"]
        if traits.narrow_student:
            allowed_arch += ["student:0.5", "student:0.25"]
    else:
        notes.append("architecture stage left out: an ONNX file has no torch module to prune or distil")
    chosen_arch = _narrow("arch", allowed_arch, archs) if "arch" in dimensions else ["none"]
    chosen_prec = _narrow("precision", allowed_prec, precisions) if "precision" in dimensions else ["fp32"]
    return SearchSpace(archs=tuple(chosen_arch), precisions=tuple(chosen_prec), notes=tuple(notes))


def _narrow(what: str, allowed: list[str], wanted: Sequence[str] | None) -> list[str]:
    if wanted is None:
        return allowed
    bad = [w for w in wanted if w not in allowed]
    if bad:
        raise InvalidSearchError(f"{what} choice(s) {bad} not available for this model and profile; available: "
                                 f"{', '.join(allowed)}")
    return list(wanted)
