"""Typed conversion errors whose messages say what to change.

Why: converter failures are usually discovered late and reported as a stack
trace from deep inside a third-party lowering. Every converter translates its
backend's failure into one of these, naming the target, the operator and the
layer (graph node / module path) so the user knows which part of the model to
rewrite or which target to drop.
"""

from __future__ import annotations

from common.errors import DomainError, InvalidInputError, NotFoundError


class ConversionError(DomainError, RuntimeError):
    """Base class: a model could not be converted for a target (HTTP 400 ``bad_request``)."""

    code = "bad_request"
    http_status = 400


class UnknownTargetError(ConversionError, NotFoundError, KeyError):
    """No converter is registered for the requested target."""

    code = "not_found"
    http_status = 404

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0])


class InvalidOptionsError(ConversionError, InvalidInputError):
    """Converter options that name an unknown field or a value the target's options type refuses."""

    code = "invalid_input"
    http_status = 422


class UnsupportedSourceError(ConversionError):
    """The source model's format cannot feed this target (e.g. ONNX into the TFLite converter)."""


class MissingDependencyError(ConversionError):
    """The converter's optional package is not installed; the message names the extra to install."""


class UnsupportedOpError(ConversionError):
    """An operator in the model has no lowering for the target.

    Attributes:
        target: converter key (``tflite``, ``coreml``, ...).
        op: operator name as the backend knows it (``aten.special_bessel_j0``, ``MyOp``).
        layer: graph node name, with the module path when known (``blocks.2.act``).
    """

    def __init__(self, target: str, op: str, layer: str, detail: str = "") -> None:
        self.target, self.op, self.layer, self.detail = target, op, layer, detail
        msg = f"{target}: operator {op!r} in layer {layer!r} is not supported by the {target} converter"
        if detail:
            msg += f" ({detail.strip().splitlines()[0][:300]})"
        msg += "; replace that op in the model, or build for another target"
        super().__init__(msg)


class CrossRuntimeMismatchError(ConversionError):
    """The artifact's outputs drift from the reference beyond the profile's tolerance.

    Carries the full :class:`~controller.conversion.check.CheckReport` (and, for
    ONNX artifacts, the per-layer drift table) so a build log shows which output
    and which layer went wrong.
    """

    def __init__(self, report: object) -> None:
        self.report = report
        super().__init__(str(getattr(report, "render", lambda: report)()))
