"""The one door: config registry, JSON round trips and typed errors for bad input."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from controller.compression import (
    CalibrationError,
    Int8StaticConfig,
    InvalidConfigError,
    InvalidModelError,
    UnsupportedTechniqueError,
    compress,
    config_from_json,
    make_config,
    techniques,
)

ALL_TECHNIQUES = ("int8-static", "int8-dynamic", "int4-weight", "fp16", "mixed", "qat", "prune-unstructured",
                  "prune-structured", "distill", "svd", "tucker")


def test_every_issue_technique_is_registered():
    assert set(ALL_TECHNIQUES) <= set(techniques())


@pytest.mark.parametrize("name", sorted(techniques()))
def test_default_config_round_trips_through_json(name):
    cls = techniques()[name]
    config = cls()
    assert config.version >= 1
    again = config_from_json(config.to_json())
    assert again == config and type(again) is cls
    assert json.loads(config.to_json())["technique"] == name
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.version = 99  # type: ignore[misc]


def test_unknown_technique_lists_supported():
    with pytest.raises(UnsupportedTechniqueError, match="int8-static"):
        make_config("int3-magic", {})


def test_unknown_parameter_lists_valid_ones():
    with pytest.raises(InvalidConfigError, match="calibration_method"):
        make_config("int8-static", {"calibraton": "minmax"})


@pytest.mark.parametrize("params", [{"calibration_method": "median"}, {"calibration_samples": "many"},
                                    {"calibration_samples": 0}, {"per_channel": "maybe"}])
def test_bad_parameter_values_are_rejected(params):
    with pytest.raises(InvalidConfigError):
        make_config("int8-static", params)


def test_cli_strings_are_coerced():
    config = make_config("int8-static", {"calibration_samples": "16", "per_channel": "false",
                                         "exclude_nodes": "a,b"})
    assert config == Int8StaticConfig(calibration_samples=16, per_channel=False, exclude_nodes=("a", "b"))


def test_not_a_config_is_rejected(tmp_path):
    with pytest.raises(UnsupportedTechniqueError):
        compress("mnist-cnn", {"technique": "int8-static"}, out=tmp_path / "x.onnx")  # type: ignore[arg-type]


def test_not_an_onnx_file(tmp_path):
    bogus = tmp_path / "model.onnx"
    bogus.write_bytes(b"this is not a protobuf at all")
    with pytest.raises(InvalidModelError, match="model.onnx"):
        compress(bogus, Int8StaticConfig(), out=tmp_path / "out.onnx")
    assert not (tmp_path / "out.onnx").exists()


def test_onnx_failing_checker(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    node = helper.make_node("Relu", ["missing_input"], ["y"])
    graph = helper.make_graph([node], "broken", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    path = tmp_path / "broken.onnx"
    onnx.save(helper.make_model(graph), path)
    with pytest.raises(InvalidModelError, match="onnx.checker"):
        compress(path, Int8StaticConfig(), out=tmp_path / "out.onnx")


def test_torch_checkpoint_and_missing_file(tmp_path):
    ckpt = tmp_path / "w.pt"
    ckpt.write_bytes(b"\0")
    with pytest.raises(InvalidModelError, match="architecture"):
        compress(ckpt, Int8StaticConfig(), out=tmp_path / "o.onnx")
    with pytest.raises(InvalidModelError, match="neither a zoo model"):
        compress("resnet9000", Int8StaticConfig(), out=tmp_path / "o.onnx")


def test_calibration_with_wrong_names_shapes_dtypes(tiny_models, tmp_path):
    m = tiny_models["cnn"]
    cases = {
        "wrong_name.npz": ({"image": np.zeros((4, 3, 16, 16), np.float32)}, "missing"),
        "wrong_shape.npz": ({"input": np.zeros((4, 3, 8, 8), np.float32)}, "shape"),
        "wrong_dtype.npz": ({"input": np.zeros((4, 3, 16, 16), np.int32)}, "dtype"),
    }
    for name, (arrays, message) in cases.items():
        np.savez(tmp_path / name, **arrays)
        with pytest.raises(CalibrationError, match=message):
            compress(m["onnx"], Int8StaticConfig(), out=tmp_path / "o.onnx", calibration=tmp_path / name)


def test_user_onnx_without_calibration_names_the_inputs(tiny_models, tmp_path):
    with pytest.raises(CalibrationError, match="input float32"):
        compress(tiny_models["cnn"]["onnx"], Int8StaticConfig(), out=tmp_path / "o.onnx")


def test_input_model_is_never_modified(tiny_models, tmp_path):
    m = tiny_models["mlp"]
    before = hashlib.sha256(Path(m["onnx"]).read_bytes()).hexdigest()
    compress(m["onnx"], Int8StaticConfig(calibration_samples=8), out=tmp_path / "o.onnx", calibration=m["npz"],
             evaluate=False)
    assert hashlib.sha256(Path(m["onnx"]).read_bytes()).hexdigest() == before


def test_progress_is_reported(tiny_models, tmp_path):
    m = tiny_models["mlp"]
    seen: list[tuple[float, str]] = []
    compress(m["onnx"], Int8StaticConfig(calibration_samples=16), out=tmp_path / "o.onnx", calibration=m["npz"],
             progress=lambda f, msg: seen.append((f, msg)), memory=False)
    fractions = [f for f, _ in seen]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0


def test_int8_dynamic_refuses_when_slower(tiny_models, tmp_path):
    from controller.compression import Int8DynamicConfig, SlowerThanBaselineError

    m = tiny_models["cnn"]
    with pytest.raises(SlowerThanBaselineError, match="slower|latency"):
        compress(m["onnx"], Int8DynamicConfig(op_types=("Conv", "Gemm"), on_slower="refuse", max_latency_ratio=0.01),
                 out=tmp_path / "d.onnx", calibration=m["npz"], evaluate=False)
    assert not (tmp_path / "d.onnx").exists()


def test_unreachable_quality_target_is_reported_not_hidden(tiny_models, tmp_path):
    from controller.compression import MixedPrecisionConfig

    m = tiny_models["mlp"]
    r = compress(m["onnx"], MixedPrecisionConfig(quality_target=1.0, max_fallback=0, calibration_samples=16,
                                                 validation_samples=16),
                 out=tmp_path / "m.onnx", calibration=m["npz"], evaluate=False)
    assert r.report["target_met"] is False and any("not reached" in w for w in r.warnings)


def test_bf16_and_torch_techniques_on_onnx_are_refused(tiny_models, tmp_path):
    from controller.compression import Fp16Config, PruneStructuredConfig, UnsupportedModelError

    m = tiny_models["mlp"]
    with pytest.raises(UnsupportedModelError, match="BF16"):
        compress(m["onnx"], Fp16Config(precision="bf16"), out=tmp_path / "b.onnx", evaluate=False)
    with pytest.raises(UnsupportedModelError, match="torch module"):
        compress(m["onnx"], PruneStructuredConfig(), out=tmp_path / "p.onnx", calibration=m["npz"], evaluate=False)
