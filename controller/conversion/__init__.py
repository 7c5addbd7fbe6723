"""Conversion: one model, the right artifact for every device class.

The only door is :func:`convert` (``convert(model, target, profile, out=...)``).
Converters register beside their code (``to_onnx``, ``to_tensorrt``,
``to_tflite``, ``to_coreml``) and import torch / onnx / litert-torch /
coremltools only inside their handlers, so importing this package is cheap.
Every artifact passes the cross-runtime check (:mod:`.check`) before it is
returned.
"""

from controller.conversion.api import ConversionResult, convert, options_from_json
from controller.conversion.errors import (
    ConversionError,
    CrossRuntimeMismatchError,
    InvalidOptionsError,
    MissingDependencyError,
    UnknownTargetError,
    UnsupportedOpError,
    UnsupportedSourceError,
)
from controller.conversion.registry import registered_targets

__all__ = [
    "ConversionError",
    "ConversionResult",
    "CrossRuntimeMismatchError",
    "InvalidOptionsError",
    "MissingDependencyError",
    "UnknownTargetError",
    "UnsupportedOpError",
    "UnsupportedSourceError",
    "convert",
    "options_from_json",
    "registered_targets",
]
