"""Recipe selection: each shipped profile maps to the technique, target and options the issue asks for."""

from __future__ import annotations

import pytest

from common.profiles import load_profile, load_profile_file, profiles_dir
from controller.conversion import UnknownTargetError, registered_targets
from controller.conversion.api import _load_converters
from controller.conversion.recipes import plan_build
from controller.conversion.registry import get_converter, register_converter


@pytest.mark.parametrize(
    ("profile", "compression", "target", "precision"),
    [
        ("rpi4", ("int8-static", {"reduce_range": True, "per_channel": True}), "onnx", None),
        ("rpi5", ("int8-static", {"per_channel": True}), "onnx", None),
        ("visionfive2", ("int8-static", {"reduce_range": True, "per_channel": True}), "onnx", None),
        ("x86-edge", ("int8-static", {"per_channel": True}), "onnx", None),
        ("jetson-orin-nano", None, "tensorrt", "fp16"),
        ("android-arm64", None, "tflite", "int8"),
        ("iphone", None, "coreml", "int8"),
    ],
)
def test_shipped_profile_recipes(profile, compression, target, precision):
    plan = plan_build(profile)
    assert plan.compression == compression and plan.target == target
    if precision:
        assert getattr(plan.options, "precision", getattr(plan.options, "weights", None)) == precision
    assert plan.artifact_suffix == {"onnx": ".onnx", "tensorrt": ".onnx", "tflite": ".tflite",
                                    "coreml": ".mlpackage"}[target]
    assert plan.format in load_profile(profile).formats


def test_user_profile_with_palettization(tmp_path):
    text = (profiles_dir() / "iphone.toml").read_text()
    path = tmp_path / "ipad.toml"
    text = text.replace('id = "iphone"', 'id = "ipad"')
    path.write_text(text.replace("palettize = false", "palettize = true, nbits = 4"))
    plan = plan_build(load_profile_file(path))
    assert plan.options.weights == "palettize" and plan.options.nbits == 4 and plan.compression is None


def test_no_dot_product_without_reduce_range_is_flagged(tmp_path):
    text = (profiles_dir() / "rpi4.toml").read_text()
    path = tmp_path / "pi4b.toml"
    path.write_text(text.replace('id = "rpi4"', 'id = "pi4b"').replace("reduce_range = true, ", ""))
    plan = plan_build(load_profile_file(path))
    assert any("reduce_range" in n for n in plan.notes)


def test_registry_names_known_targets_and_refuses_duplicates():
    _load_converters()
    assert {"onnx", "tensorrt", "tflite", "coreml"} <= set(registered_targets())
    with pytest.raises(UnknownTargetError, match="registered targets: coreml, onnx"):
        get_converter("openvino")
    spec = get_converter("onnx")
    with pytest.raises(ValueError, match="already registered"):
        register_converter("onnx", options=spec.options_type)(lambda *a: None)
    with pytest.raises(TypeError, match="dataclass"):
        register_converter("x", options=int)


def test_fallback_ladder_from_the_recipe_precision():
    from controller.conversion.recipes import fallback_options
    from controller.conversion.to_onnx import OnnxOptions
    from controller.conversion.to_tensorrt import TensorrtOptions
    from controller.conversion.to_tflite import TfliteOptions

    assert [o.precision for o in fallback_options("tflite", TfliteOptions(precision="int8"))] == [
        "int8", "int8-dynamic", "fp16", "fp32"]
    assert [o.precision for o in fallback_options("tensorrt", TensorrtOptions(precision="fp16"))] == ["fp16", "fp32"]
    assert fallback_options("onnx", OnnxOptions()) == [OnnxOptions()]


def test_tflite_int8_float_io_by_default_and_int8_io_on_request(tmp_path):
    """INT8 TFLite keeps float32 I/O (quantize inside the graph) unless the profile asks for INT8 I/O."""
    assert plan_build("android-arm64").options.float_io
    path = tmp_path / "int8-io-phone.toml"
    text = (profiles_dir() / "android-arm64.toml").read_text().replace('id = "android-arm64"', 'id = "int8-io-phone"')
    path.write_text(text.replace("full_integer = true", "full_integer = true, float_io = false"))
    plan = plan_build(load_profile_file(path))
    assert plan.options.precision == "int8" and not plan.options.float_io and plan.compression is None
