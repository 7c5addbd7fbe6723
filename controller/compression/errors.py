"""Typed compression errors: each message names the problem and what would be accepted instead."""

from __future__ import annotations


class CompressionError(Exception):
    """Base class of every error ``compress`` raises on bad input."""


class UnsupportedTechniqueError(CompressionError):
    """A technique name or config type that has no registered handler."""


class InvalidConfigError(CompressionError, ValueError):
    """A config parameter that is unknown, of the wrong type or out of range."""


class InvalidModelError(CompressionError):
    """The model is not a loadable ONNX / zoo model, or fails ``onnx.checker``."""


class UnsupportedModelError(CompressionError):
    """The model is valid but this technique cannot handle it (ops, missing torch module, ...)."""


class CalibrationError(CompressionError):
    """Calibration data whose names, shapes or dtypes do not match the model's graph inputs."""
