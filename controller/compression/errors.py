"""Typed compression errors: each message names the problem and what would be accepted instead.

HTTP statuses (read by the REST layer's one handler): a bad technique name or parameter is 422
``invalid_input``; a model or calibration set the technique cannot use is 400 ``bad_request``.
"""

from __future__ import annotations

from common.errors import DomainError, InvalidInputError


class CompressionError(DomainError):
    """Base class of every error ``compress`` raises on bad input."""

    code = "bad_request"
    http_status = 400


class UnsupportedTechniqueError(CompressionError, InvalidInputError):
    """A technique name or config type that has no registered handler."""

    code = "invalid_input"
    http_status = 422


class InvalidConfigError(CompressionError, InvalidInputError):
    """A config parameter that is unknown, of the wrong type or out of range."""

    code = "invalid_input"
    http_status = 422


class InvalidModelError(CompressionError):
    """The model is not a loadable ONNX / zoo model, or fails ``onnx.checker``."""


class UnsupportedModelError(CompressionError):
    """The model is valid but this technique cannot handle it (ops, missing torch module, ...)."""


class CalibrationError(CompressionError):
    """Calibration data whose names, shapes or dtypes do not match the model's graph inputs."""
