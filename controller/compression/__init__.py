"""The compression engine's one door: ``compress(model, config, out=...)``.

Usage (copy me)::

    from pathlib import Path
    from controller.compression import compress, Int8StaticConfig, config_from_json, recommended_int8

    result = compress("mobilenetv2", Int8StaticConfig(calibration_samples=128), out=Path("build/mnv2-int8.onnx"))
    # MiniLM: keep the 6 FFN output projections' activations in float (cosine 0.946 -> 0.992):
    result = compress("minilm", recommended_int8("minilm"), out=Path("build/minilm-int8.onnx"))
    result.output                      # Path of the INT8 QDQ ONNX (a JSON report is written beside it)
    result.metrics["size_ratio"]       # candidate / FP32 file size
    result.metrics["quality_score"]    # mean cosine (minilm) or top-1 agreement (classifiers) vs FP32
    result.metrics["latency_ratio"]    # p50 candidate / FP32, ORT 1 thread batch 1 (interleaved runs)
    result.metrics["memory_ratio"]     # peak-RSS increase, fresh process per model
    same = config_from_json(result.config.to_json())   # configs round-trip through JSON

    # any ONNX a user brings, calibrated from an .npz whose keys are the graph input names, judged on
    # held-out data with the task's metric, never delivered slower than FP32 on this host:
    compress(Path("user.onnx"), Int8StaticConfig(), out=Path("user-int8.onnx"), calibration=Path("calib.npz"),
             eval_data=Path("eval.npz"), metric="sequence_agreement")

``model`` is a zoo name (``minilm``, ``mobilenetv2``, ``mnist-cnn``), a ``controller.zoo.ZooModel``, a
path to an ONNX file, or ``(nn.Module, example_inputs)``. ``calibration`` is a ``.npz`` path or a
list of per-sample input dicts (contract: ``controller.compression.inputs``); without it zoo models use
their own real calibration split. ``eval_data`` (same contract) is held-out data quality is measured on,
with ``metric`` (``top1_agreement``, ``cosine``, ``mean_abs_diff``, ``sequence_agreement`` or
``module:function``); ``never_slower`` (default) times ``int8-static`` / ``mixed`` against FP32 and
delivers FP16, INT4 weight-only or FP32 instead when they lost (``report["speed_guard"]``).
``progress(fraction, message)`` is called as the job advances. ``evaluate=False`` skips measuring;
``threads`` / ``batches`` set the latency grid; ``memory=False`` skips the RSS subprocesses.

Errors are typed (``controller.compression.errors``): ``UnsupportedTechniqueError`` and
``InvalidConfigError`` list what is supported; ``InvalidModelError``, ``UnsupportedModelError`` and
``CalibrationError`` name the problem. The input model file is never modified; an output that
fails ``onnx.checker`` is never written.

Each technique is a frozen dataclass config (``version`` field, ``to_json``) whose handler lives in
its own module and registers itself with ``@register_handler``; heavy imports stay inside handlers.
"""

from __future__ import annotations

from controller.compression.config import (
    CompressionConfig,
    TechniqueFamily,
    config_class,
    config_from_json,
    make_config,
    register_handler,
    techniques,
    techniques_of,
)
from controller.compression.distill import DistillConfig
from controller.compression.engine import CompressionResult, Context, compress
from controller.compression.errors import (
    CalibrationError,
    CompressionError,
    InvalidConfigError,
    InvalidModelError,
    UnsupportedModelError,
    UnsupportedTechniqueError,
)
from controller.compression.fp16 import Fp16Config
from controller.compression.int4_weight import Int4WeightConfig
from controller.compression.int8_dynamic import Int8DynamicConfig, SlowerThanBaselineError
from controller.compression.int8_static import Int8StaticConfig
from controller.compression.lowrank import SvdConfig, TuckerConfig
from controller.compression.mixed import MixedPrecisionConfig
from controller.compression.prune_structured import PruneStructuredConfig
from controller.compression.prune_unstructured import PruneUnstructuredConfig
from controller.compression.qat import QatConfig
from controller.compression.recipes import recommended_int8
from controller.compression.source import CalibrationSource, ModelSource

__all__ = [
    "CalibrationError", "CalibrationSource", "CompressionConfig", "CompressionError", "CompressionResult",
    "Context", "Fp16Config", "Int4WeightConfig", "Int8DynamicConfig", "Int8StaticConfig", "MixedPrecisionConfig",
    "DistillConfig", "PruneStructuredConfig", "PruneUnstructuredConfig", "QatConfig", "SlowerThanBaselineError",
    "SvdConfig", "TechniqueFamily", "TuckerConfig", "InvalidConfigError", "InvalidModelError", "ModelSource",
    "UnsupportedModelError", "UnsupportedTechniqueError", "compress", "config_class", "config_from_json",
    "make_config", "recommended_int8", "register_handler", "techniques", "techniques_of",
]
