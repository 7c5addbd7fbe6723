"""Template tests: every technique is held to the same checks on tiny models built in the tests.

Each subclass names a config, the tiny model it runs on and the change it must produce; the
template checks that the output is valid ONNX, runs in ONNX Runtime with the same outputs' shape,
changes size as promised, and that quality was measured and is sane.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import onnx
import pytest

from controller.compression import CompressionConfig, Int8StaticConfig, compress
from controller.evaluation import run_all, session


class TechniqueTemplate:
    config: ClassVar[CompressionConfig]
    model: ClassVar[str] = "cnn"  # key of the tiny_models fixture
    torch_input: ClassVar[bool] = False  # pass (nn.Module, example) instead of the ONNX file
    max_size_ratio: ClassVar[float] = 1.0
    min_quality: ClassVar[float] = 0.9  # mean cosine of outputs vs FP32 on the calibration inputs

    @pytest.fixture(scope="class")
    @classmethod
    def result(cls, tiny_models, tmp_path_factory) -> Any:
        m = tiny_models[cls.model]
        model = (m["module"], m["example"]) if cls.torch_input else m["onnx"]
        out = tmp_path_factory.mktemp(cls.__name__) / "model.onnx"
        return compress(model, cls.config, out=out, calibration=m["npz"], memory=False, batches=(1,))

    def test_output_is_valid_onnx(self, result):
        onnx.checker.check_model(str(result.output))
        assert result.report_path.exists()

    def test_runs_in_ort_with_same_output_shape(self, result, tiny_models):
        m = tiny_models[self.model]
        ref = run_all(session(m["onnx"]), m["inputs"][:8])
        got = run_all(session(result.output), m["inputs"][:8])
        assert got.shape == ref.shape and np.isfinite(got).all()

    def test_size_changes_as_promised(self, result):
        assert result.metrics["size_ratio"] <= self.max_size_ratio

    def test_quality_is_measured(self, result):
        assert result.metrics["quality"]["cosine_mean"] >= self.min_quality
        assert result.metrics["latency"]["t1_b1"]["candidate"]["p50_ms"] > 0

    def test_config_is_recorded(self, result):
        assert result.to_dict()["config"]["technique"] == self.config.technique


class TestInt8StaticCnn(TechniqueTemplate):
    config = Int8StaticConfig(calibration_samples=32)
    max_size_ratio = 0.6  # tiny graphs carry proportionally more scales / zero points
    min_quality = 0.98


class TestInt8StaticMlpEntropy(TechniqueTemplate):
    config = Int8StaticConfig(calibration_samples=32, calibration_method="entropy")
    model = "mlp"
    max_size_ratio = 0.4
    min_quality = 0.98


class TestInt8StaticPercentileReduceRange(TechniqueTemplate):
    config = Int8StaticConfig(calibration_samples=32, calibration_method="percentile", reduce_range=True)
    model = "mlp"
    max_size_ratio = 0.4
    min_quality = 0.95
