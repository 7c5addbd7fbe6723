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

from controller.compression import (
    CompressionConfig,
    CompressionError,
    DistillConfig,
    Fp16Config,
    Int4WeightConfig,
    Int8DynamicConfig,
    Int8StaticConfig,
    MixedPrecisionConfig,
    PruneStructuredConfig,
    PruneUnstructuredConfig,
    QatConfig,
    SvdConfig,
    TuckerConfig,
    compress,
)
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
        # never_slower=False: these check each technique's mechanics on models too tiny to be faster in INT8
        return compress(model, cls.config, out=out, calibration=m["npz"], memory=False, batches=(1,),
                        never_slower=False)

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


class TestInt8StaticEncoder(TechniqueTemplate):
    config = Int8StaticConfig(calibration_samples=32)
    model = "encoder"
    max_size_ratio = 0.6
    min_quality = 0.98

    def test_attention_matmuls_stay_float(self, result):
        # Q·Kᵀ and P·V have no constant input: kept float (measured faster), one pair per block.
        assert len(result.report["float_activation_matmuls"]) == 6

    def test_matmul_outputs_are_not_requantised(self, result):
        # A Q right after a weight MatMul would stop ORT fusing DQ→MatMul into MatMulIntegerToFloat.
        graph = onnx.load(str(result.output)).graph
        float_matmuls = set(result.report["float_activation_matmuls"])
        matmul_outputs = {o for n in graph.node if n.op_type == "MatMul" and n.name not in float_matmuls
                          for o in n.output}
        assert not [n.name for n in graph.node if n.op_type == "QuantizeLinear" and n.input[0] in matmul_outputs]
        assert result.report["quantized_ops"].get("MatMul", 0) >= 12  # q, k, v, o and the FFN pair per block


class TestPruneLayersEncoder(TechniqueTemplate):
    config = PruneStructuredConfig(ratio=0.34, scope="layers", finetune_epochs=1, lr=1e-4)
    model = "encoder"
    torch_input = True
    max_size_ratio = 0.75
    min_quality = 0.5

    def test_one_block_of_three_removed_after_ranking_all(self, result):
        report = result.report
        assert report["blocks_before"] == 3 and len(report["blocks_kept"]) == 2
        trial = report["greedy_trials"][0]
        assert [c["block"] for c in trial["candidates"]] == [0, 1, 2]
        assert trial["removed"] == min(trial["candidates"], key=lambda c: c["loss"])["block"]
        assert report["param_ratio"] < 0.72

    def test_fewer_matmuls_in_the_exported_graph(self, result, tiny_models):
        count = [sum(n.op_type == "MatMul" for n in onnx.load(str(p)).graph.node)
                 for p in (tiny_models["encoder"]["onnx"], result.output)]
        assert count[1] < count[0]


def test_layer_scope_on_a_model_without_encoder_blocks_says_why(tiny_models, tmp_path):
    m = tiny_models["mlp"]
    config = PruneStructuredConfig(ratio=0.5, scope="layers", finetune_epochs=0)
    with pytest.raises(CompressionError, match="encoder.layer"):
        compress((m["module"], m["example"]), config, out=tmp_path / "x.onnx", calibration=m["npz"], evaluate=False)


class TestInt8DynamicMlp(TechniqueTemplate):
    config = Int8DynamicConfig()
    model = "mlp"
    max_size_ratio = 0.4
    min_quality = 0.98


class TestInt4WeightMlp(TechniqueTemplate):
    config = Int4WeightConfig(block_size=32)
    model = "mlp"
    max_size_ratio = 0.3
    min_quality = 0.95

    def test_uncovered_layers_are_reported(self, result):
        assert result.report["covered"] and result.report["uncovered"] == []


class TestInt4WeightCnnReportsConvUncovered(TechniqueTemplate):
    config = Int4WeightConfig(block_size=32)
    model = "cnn"
    max_size_ratio = 1.0

    def test_uncovered_layers_are_reported(self, result):
        assert {u["op"] for u in result.report["uncovered"]} == {"Conv"}
        assert result.warnings  # most parameters stay FP32


class TestFp16Cnn(TechniqueTemplate):
    config = Fp16Config()
    max_size_ratio = 0.6
    min_quality = 0.999


class TestPruneUnstructuredMlp(TechniqueTemplate):
    config = PruneUnstructuredConfig(sparsity=0.5)
    model = "mlp"
    max_size_ratio = 1.01  # dense tensors: the file does not shrink, and the report says so
    min_quality = 0.8

    def test_is_honest_about_size(self, result):
        assert 0.45 <= result.report["sparsity"] <= 0.55
        assert result.report["gzip_size_ratio"] < 0.9
        assert any("does not make" in w for w in result.warnings)


class TestMixedPrecisionCnn(TechniqueTemplate):
    config = MixedPrecisionConfig(quality_target=0.999, calibration_samples=24, validation_samples=16, max_fallback=4)
    max_size_ratio = 1.0
    min_quality = 0.98

    def test_per_layer_table(self, result):
        table = result.report["per_layer"]
        assert len(table) >= 4 and {"node", "op", "sensitivity_sqnr_db", "precision"} <= set(table[0])
        scores = [r["sensitivity_sqnr_db"] for r in table]
        assert scores == sorted(scores)
        assert result.report["target_met"] == (result.report["validation_quality"] >= 0.999)
        if not result.report["target_met"]:
            assert result.warnings


# ---- training-based techniques: torch module in, ONNX out (fine-tuned by distillation on the calibration data)

class TestSvdMlp(TechniqueTemplate):
    config = SvdConfig(ratio=0.4, finetune_epochs=1)
    model = "mlp"
    torch_input = True
    max_size_ratio = 0.8
    min_quality = 0.6

    def test_layers_factorised(self, result):
        assert result.report["param_ratio"] < 0.8
        assert any(r["action"] == "svd" for r in result.report["layers"])


class TestTuckerCnn(TechniqueTemplate):
    config = TuckerConfig(rank_ratio=0.25, finetune_epochs=1, min_channels=8)
    torch_input = True
    max_size_ratio = 0.95
    min_quality = 0.5

    def test_conv_decomposed(self, result):
        assert any(r["action"] == "tucker" for r in result.report["layers"])


class TestPruneStructuredCnnProgressive(TechniqueTemplate):
    config = PruneStructuredConfig(ratio=0.5, steps=2, finetune_epochs=1, round_to=8)
    torch_input = True
    max_size_ratio = 0.5
    min_quality = 0.5

    def test_channels_physically_removed(self, result):
        assert result.report["param_ratio"] < 0.45
        assert all(after % 8 == 0 for _, after in result.report["widths"].values())
        assert len(result.report["fine_tune"]) == 2


class TestDistillCnn(TechniqueTemplate):
    config = DistillConfig(width=0.5, epochs=2)
    torch_input = True
    max_size_ratio = 0.5
    min_quality = 0.5

    def test_student_is_smaller_and_trained(self, result):
        assert result.report["param_ratio"] < 0.45 and result.report["feature_layers"]
        assert result.report["training"]["epochs"] >= 1


class TestQatCnn(TechniqueTemplate):
    config = QatConfig(epochs=1)
    torch_input = True
    max_size_ratio = 0.6
    min_quality = 0.9

    def test_int8_weights(self, result):
        assert result.report["int8_weight_tensors"] >= 3
