"""Converter registry: one decorator keyed by target, checked at the one door.

Why a registry rather than an ``if target == ...`` chain: each converter lives
in its own module with its own options type and heavy imports, and a new
target is one new module, not an edit of ``convert``. An unknown target or a
wrong options type fails loudly, naming what is supported (as torchao does for
configs).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from controller.conversion.errors import UnknownTargetError

if TYPE_CHECKING:
    import numpy as np


Runner = Callable[["dict[str, np.ndarray]"], "list[np.ndarray]"]


@dataclass
class Artifact:
    """What a converter hands back to :func:`controller.conversion.convert`.

    ``runner`` executes one batch of named inputs on the artifact (None where the
    runtime cannot run on this host, e.g. Core ML off macOS); ``structural`` lists
    the checks done instead of running it.
    """

    path: Path
    format: str
    precision: str
    inputs: list[dict[str, Any]]
    outputs: list[dict[str, Any]]
    runner: Runner | None = None
    extra_files: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    structural: dict[str, Any] = field(default_factory=dict)


@dataclass
class ConversionContext:
    """Per-call inputs that are data, not options: scratch dir, calibration and golden samples.

    Kept out of the options dataclasses so options stay small, hashable and
    JSON-serialisable (they are recorded in the model version's lineage).
    """

    workdir: Path
    golden: dict[str, np.ndarray]
    calibration: list[dict[str, np.ndarray]] | None = None


Handler = Callable[..., Artifact]


@dataclass(frozen=True)
class ConverterSpec:
    """A registered converter: its target key, options type and handler."""

    target: str
    options_type: type
    handler: Handler
    needs: tuple[str, ...] = ()  # importable modules it requires, for a clear error


_CONVERTERS: dict[str, ConverterSpec] = {}


def register_converter(target: str, *, options: type, needs: tuple[str, ...] = ()) -> Callable[[Handler], Handler]:
    """Register ``handler(source, profile, options, out, ctx: ConversionContext) -> Artifact`` for ``target``.

    Example:
        >>> @register_converter("onnx", options=OnnxOptions)  # doctest: +SKIP
        ... def _convert_onnx(source, profile, options, out, ctx): ...
    """
    if not dataclasses.is_dataclass(options):
        raise TypeError(f"options for {target!r} must be a dataclass, got {options!r}")

    def deco(fn: Handler) -> Handler:
        if target in _CONVERTERS and _CONVERTERS[target].handler is not fn:
            raise ValueError(f"converter for {target!r} already registered by {_CONVERTERS[target].handler}")
        _CONVERTERS[target] = ConverterSpec(target, options, fn, needs)
        return fn

    return deco


def get_converter(target: str) -> ConverterSpec:
    """The spec for ``target``; raises :class:`UnknownTargetError` listing the known ones."""
    try:
        return _CONVERTERS[target]
    except KeyError:
        raise UnknownTargetError(
            f"no converter for target {target!r}; registered targets: {', '.join(sorted(_CONVERTERS))}"
        ) from None


def registered_targets() -> list[str]:
    """Every target a converter is registered for."""
    return sorted(_CONVERTERS)


def options_to_json(options: object) -> dict[str, Any]:
    """Options as a JSON-able dict carrying their type name, so lineage records exactly what ran."""
    data = dataclasses.asdict(options)  # type: ignore[call-overload]
    data["type"] = type(options).__name__
    return data
