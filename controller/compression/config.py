"""Versioned, JSON-serialisable technique configs and the handler registry.

Each technique is a frozen dataclass subclassing :class:`CompressionConfig` with a class-level
``technique`` name and a ``version`` field; its handler registers itself with
``@register_handler(ConfigType)`` beside its own code (torchao's pattern). Configs round-trip
through JSON (``to_json`` / ``config_from_json``) so a job, a REST request and a model version's
lineage record are the same object.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from collections.abc import Callable, Mapping
from enum import StrEnum
from typing import Any, ClassVar, TypeVar

from controller.compression.errors import InvalidConfigError, UnsupportedTechniqueError

_CONFIGS: dict[str, type[CompressionConfig]] = {}
_HANDLERS: dict[type[CompressionConfig], Callable[..., Any]] = {}

C = TypeVar("C", bound="CompressionConfig")


class TechniqueFamily(StrEnum):
    """The REST families (``POST /compression/<family>``); each config declares the one it belongs to."""

    QUANTIZE = "quantize"
    PRUNE = "prune"
    DISTILL = "distill"
    DECOMPOSE = "decompose"


@dataclasses.dataclass(frozen=True)
class CompressionConfig:
    """Base of every technique config. Subclasses set ``technique`` and validate in ``_validate``."""

    technique: ClassVar[str] = ""
    #: the REST family the technique is offered under; declared by every registered config
    family: ClassVar[TechniqueFamily]
    # Techniques that need a torch module (and so a zoo model or an nn.Module), not just an ONNX file.
    needs_torch: ClassVar[bool] = False
    # Speed techniques: the engine times the output against FP32 and never delivers it slower
    # (``controller.compression.speed_guard``).
    speed_guarded: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.technique:
            if not isinstance(getattr(cls, "family", None), TechniqueFamily):
                raise TypeError(f"{cls.__name__} must declare its family (a TechniqueFamily), e.g. "
                                "family = TechniqueFamily.QUANTIZE")
            _CONFIGS[cls.technique] = cls

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, list):  # JSON gives lists; keep configs hashable and frozen
                object.__setattr__(self, f.name, tuple(value))
        self._validate()

    def _validate(self) -> None:
        """Raise :class:`InvalidConfigError` for out-of-range values (overridden per technique)."""

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON dict with ``technique`` first."""
        body = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        body = {k: list(v) if isinstance(v, tuple) else v for k, v in body.items()}
        return {"technique": self.technique, **body}

    def to_json(self) -> str:
        """Canonical JSON (sorted keys) — stable enough to hash into a lineage record."""
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def params(cls) -> dict[str, str]:
        """Parameter name → type, for error messages and ``--help``."""
        hints = typing.get_type_hints(cls)
        return {f.name: _type_name(hints[f.name]) for f in dataclasses.fields(cls)}


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is typing.Literal:
        return "|".join(repr(a) for a in typing.get_args(tp))
    if origin in (types.UnionType, typing.Union):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    return getattr(tp, "__name__", str(tp))


def default_calibration_samples() -> int:
    """``CALIBRATION_SAMPLES`` as :class:`controller.settings.Settings` reads and validates it (default 128).

    Read when a config or a calibration is made, not at import, so a job process and a test
    see the environment they run in.
    """
    from controller.settings import Settings

    return Settings().calibration_samples


def check_choice(name: str, value: Any, choices: tuple[Any, ...]) -> None:
    """Raise InvalidConfigError unless ``value`` is one of ``choices``."""
    if value not in choices:
        raise InvalidConfigError(f"{name}={value!r} is not supported; choose one of {', '.join(map(repr, choices))}")


def check_range(name: str, value: float, lo: float, hi: float) -> None:
    """Raise InvalidConfigError unless ``lo <= value <= hi``."""
    if not isinstance(value, int | float) or isinstance(value, bool) or not lo <= value <= hi:
        raise InvalidConfigError(f"{name}={value!r} must be a number in [{lo}, {hi}]")


def register_handler(config_type: type[C]) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator registering the function that applies ``config_type`` (one handler per config)."""

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        _HANDLERS[config_type] = fn
        return fn

    return decorate


def techniques() -> dict[str, type[CompressionConfig]]:
    """Technique name → config type, for every registered technique."""
    return dict(sorted(_CONFIGS.items()))


def handler_for(config: CompressionConfig) -> Callable[..., Any]:
    """The registered handler, or UnsupportedTechniqueError naming the supported configs."""
    try:
        return _HANDLERS[type(config)]
    except KeyError:
        names = ", ".join(t.__name__ for t in _HANDLERS)
        raise UnsupportedTechniqueError(
            f"no handler registered for {type(config).__name__}; supported configs: {names}") from None


def techniques_of(family: TechniqueFamily | str) -> list[str]:
    """Registered technique names of one family, sorted."""
    return [name for name, cls in sorted(_CONFIGS.items()) if cls.family == family]


def config_class(technique: str) -> type[CompressionConfig]:
    """Config type for a technique name, or UnsupportedTechniqueError listing the names."""
    try:
        return _CONFIGS[technique]
    except KeyError:
        raise UnsupportedTechniqueError(
            f"unknown technique {technique!r}; supported: {', '.join(sorted(_CONFIGS))}") from None


def make_config(technique: str, params: Mapping[str, Any]) -> CompressionConfig:
    """Build a config from a technique name and parameters, naming unknown / mistyped ones."""
    cls = config_class(technique)
    known = cls.params()
    unknown = sorted(set(params) - set(known))
    if unknown:
        listing = ", ".join(f"{k}: {v}" for k, v in known.items())
        raise InvalidConfigError(f"unknown parameter(s) {', '.join(unknown)} for {technique}; valid: {listing}")
    hints = typing.get_type_hints(cls)
    coerced = {k: _coerce(k, v, hints[k]) for k, v in params.items()}
    try:
        return cls(**coerced)
    except TypeError as exc:
        raise InvalidConfigError(f"{technique}: {exc}") from None


def config_from_json(data: str | Mapping[str, Any]) -> CompressionConfig:
    """Inverse of :meth:`CompressionConfig.to_json`."""
    body = dict(json.loads(data) if isinstance(data, str) else data)
    technique = body.pop("technique", None)
    if not isinstance(technique, str):
        raise InvalidConfigError("config JSON needs a 'technique' string")
    return make_config(technique, body)


def _coerce(name: str, value: Any, tp: Any) -> Any:  # noqa: C901 - one branch per JSON/CLI type
    """Convert CLI strings / JSON values to the field's declared type, or raise InvalidConfigError."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    try:
        if origin in (types.UnionType, typing.Union):
            if value is None or (isinstance(value, str) and value.lower() in ("none", "null", "")):
                if type(None) in args:
                    return None
            errors = []
            for arg in args:
                if arg is type(None):
                    continue
                try:
                    return _coerce(name, value, arg)
                except InvalidConfigError as exc:
                    errors.append(str(exc))
            raise InvalidConfigError("; ".join(errors))
        if origin is typing.Literal:
            for choice in args:
                if value == choice or (isinstance(value, str) and str(choice) == value):
                    return choice
            raise InvalidConfigError(f"{name}={value!r}: choose one of {', '.join(map(repr, args))}")
        if origin is tuple:
            items = value.split(",") if isinstance(value, str) else list(value)
            items = [i.strip() for i in items if not (isinstance(i, str) and not i.strip())]
            inner = args[0] if args else str
            return tuple(_coerce(name, i, inner) for i in items)
        if tp is bool:
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in ("1", "true", "yes", "on", "0", "false", "no", "off"):
                return value.lower() in ("1", "true", "yes", "on")
            raise ValueError("expected true/false")
        if tp is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError("expected an integer")
            return int(value)
        if tp is float:
            if isinstance(value, bool):
                raise ValueError("expected a number")
            return float(value)
        if tp is str:
            if not isinstance(value, str):
                raise ValueError("expected a string")
            return value
    except (ValueError, TypeError) as exc:
        raise InvalidConfigError(f"{name}={value!r}: {exc} ({_type_name(tp)})") from None
    return value
