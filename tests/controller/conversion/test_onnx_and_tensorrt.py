"""ONNX-specific behaviour (fusion, opset, external data, slim) and the TensorRT recipe + fallback."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from common.profiles import load_profile, select_execution_providers  # noqa: E402
from controller.conversion import ConversionError, MissingDependencyError, convert  # noqa: E402
from controller.conversion.check import onnx_runner  # noqa: E402
from controller.conversion.to_onnx import OnnxOptions  # noqa: E402
from controller.conversion.to_tensorrt import (  # noqa: E402
    FINGERPRINT_FIELDS,
    TensorrtOptions,
    engine_cache_key,
)

from .conftest import cnn_golden  # noqa: E402


def _ops(path) -> set[str]:
    return {n.op_type for n in onnx.load(str(path), load_external_data=False).graph.node}


def test_offline_optimisation_fuses_conv_bn_relu(tiny_cnn_onnx, tmp_path):
    res = convert(tiny_cnn_onnx, "onnx", "rpi5", out=tmp_path / "fused.onnx", golden=cnn_golden())
    assert "FusedConv" in _ops(res.path) and "BatchNormalization" not in _ops(res.path)
    s = res.check["structural"]
    assert s["nodes_after"] < s["nodes_before"] and s["optimization"] == "extended"
    # the saved, fused graph loads with ORT's optimiser off (what a constrained device may do)
    out = onnx_runner(res.path, optimize=False)({"input": cnn_golden(1)["input"]})
    assert out[0].shape == (1, 10)


def test_level_all_is_not_baked_for_another_arch(tiny_cnn_onnx, tmp_path):
    res = convert(tiny_cnn_onnx, "onnx", "rpi5", out=tmp_path / "a.onnx", options=OnnxOptions(optimization="all"))
    assert res.check["structural"]["optimization"] == "extended"
    assert any("bakes" in n for n in res.notes)


def test_opset_conversion(tiny_cnn_onnx, tiny_cnn, tmp_path):
    res = convert(tiny_cnn_onnx, "onnx", "rpi4", out=tmp_path / "o.onnx",
                  options=OnnxOptions(opset=19, optimization="none"))
    assert {o.domain: o.version for o in onnx.load(str(res.path)).opset_import}[""] == 19 and res.check["ok"]
    # an old device runtime: a torch source is exported at that opset directly
    model, args = tiny_cnn
    res = convert(model, "onnx", "rpi4", out=tmp_path / "t.onnx", example_inputs=args,
                  options=OnnxOptions(opset=13, optimization="none"))
    assert {o.domain: o.version for o in onnx.load(str(res.path)).opset_import}[""] == 13
    # an ONNX file cannot always be down-converted: the error names the op with no adapter
    with pytest.raises(ConversionError, match="no opset adapter for Relu"):
        convert(tiny_cnn_onnx, "onnx", "rpi4", out=tmp_path / "d.onnx", options=OnnxOptions(opset=13))


def test_external_data_for_large_initializers(tiny_cnn_onnx, tmp_path):
    res = convert(tiny_cnn_onnx, "onnx", "x86-edge", out=tmp_path / "ext.onnx",
                  options=OnnxOptions(external_data_threshold_mb=0.0001))
    assert res.check["ok"]
    assert (tmp_path / "ext.onnx.data").exists() and res.extra_files


def test_slim_needs_onnxslim_or_runs(tiny_cnn_onnx, tmp_path):
    opts = OnnxOptions(slim=True)
    if importlib.util.find_spec("onnxslim") is None:
        with pytest.raises(MissingDependencyError, match="onnxslim"):
            convert(tiny_cnn_onnx, "onnx", "rpi5", out=tmp_path / "s.onnx", options=opts)
    else:
        assert convert(tiny_cnn_onnx, "onnx", "rpi5", out=tmp_path / "s.onnx", options=opts).check["ok"]


def test_source_model_file_is_not_modified(tiny_cnn_onnx, tmp_path):
    before = tiny_cnn_onnx.read_bytes()
    convert(tiny_cnn_onnx, "onnx", "rpi4", out=tmp_path / "x.onnx")
    assert tiny_cnn_onnx.read_bytes() == before


# ---- TensorRT: recipe, fingerprint, fallback -------------------------------------------------------


def test_tensorrt_ships_fp16_onnx_and_a_build_recipe(tiny_cnn_onnx, tmp_path):
    res = convert(tiny_cnn_onnx, "tensorrt", "jetson-orin-nano", out=tmp_path / "m.onnx", golden=cnn_golden())
    model = onnx.load(str(res.path))
    assert any(i.data_type == onnx.TensorProto.FLOAT16 for i in model.graph.initializer)
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT  # I/O stay float32
    recipe = json.loads((tmp_path / "m.trt.json").read_text())
    assert recipe["precision"] == "fp16" and "--fp16" in recipe["trtexec"] and "--int8" not in recipe["trtexec"]
    assert recipe["fingerprint_fields"] == list(FINGERPRINT_FIELDS)
    assert recipe["ort_tensorrt_options"]["trt_engine_cache_enable"] is True
    # dynamic batch → an optimisation profile
    assert any(a.startswith("--minShapes=input:1x3x16x16") for a in recipe["trtexec"])
    assert any(a.startswith("--maxShapes=input:4x3x16x16") for a in recipe["trtexec"])
    assert recipe["shapes"] == [{"name": "input", "min": [1, 3, 16, 16], "opt": [1, 3, 16, 16],
                                 "max": [4, 3, 16, 16]}]  # the same profile, typed, for the agent's builder
    assert recipe["workspace_mb"] == 1024 and recipe["ort_tensorrt_options"]["trt_max_workspace_size"] == 2**30
    assert recipe["fallback_providers"] == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert res.check["ok"] and res.check["outputs"][0]["cosine"] > 0.999


def test_tensorrt_fallback_runs_on_the_best_available_provider(tiny_cnn_onnx, tmp_path):
    """No TensorRT here: the artifact must still run, on the first provider of the profile's list we have."""
    res = convert(tiny_cnn_onnx, "tensorrt", "jetson-orin-nano", out=tmp_path / "m.onnx")
    available = ort.get_available_providers()
    expected = select_execution_providers(load_profile("jetson-orin-nano").execution_providers, available)
    assert res.check["structural"]["providers"] == expected
    assert "TensorrtExecutionProvider" not in available or expected[0] == "TensorrtExecutionProvider"
    sess = ort.InferenceSession(str(res.path), providers=expected)
    assert sess.get_providers()[0] == expected[0]
    assert sess.run(None, {"input": cnn_golden(1)["input"]})[0].shape == (1, 10)


def test_engine_cache_key_changes_with_the_device_fingerprint(tiny_cnn_onnx, tmp_path):
    convert(tiny_cnn_onnx, "tensorrt", "jetson-orin-nano", out=tmp_path / "m.onnx")
    recipe = json.loads((tmp_path / "m.trt.json").read_text())
    fp = {"tensorrt_version": "10.3.0", "jetpack_version": "6.1", "cuda_version": "12.6",
          "gpu_name": "Orin (nvgpu)", "compute_capability": "8.7"}
    key = engine_cache_key(recipe, fp)
    assert key == engine_cache_key(recipe, dict(fp))
    assert key != engine_cache_key(recipe, fp | {"tensorrt_version": "10.7.0"})
    int8 = recipe | {"precision": "int8",
                     "ort_tensorrt_options": recipe["ort_tensorrt_options"] | {"trt_int8_enable": True}}
    assert key != engine_cache_key(int8, fp)
    assert key != engine_cache_key(recipe | {"shapes": []}, fp)  # another optimisation profile, another engine
    with pytest.raises(ValueError, match="trt_int8_enable"):  # a recipe that contradicts itself is refused
        engine_cache_key(recipe | {"precision": "int8"}, fp)
    with pytest.raises(ValueError, match="gpu_name"):
        engine_cache_key(recipe, {k: v for k, v in fp.items() if k != "gpu_name"})


def test_tensorrt_int8_needs_a_qdq_model(tiny_cnn_onnx, tmp_path):
    with pytest.raises(ConversionError, match="QDQ"):
        convert(tiny_cnn_onnx, "tensorrt", "jetson-orin-nano", out=tmp_path / "m.onnx",
                options=TensorrtOptions(precision="int8"))


def test_tensorrt_int8_from_qdq(tiny_cnn_onnx, tmp_path):
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter([{"input": x[None]} for x in cnn_golden(16, seed=3)["input"]])

        def get_next(self):
            return next(self.it, None)

    qdq = tmp_path / "qdq.onnx"
    quantize_static(str(tiny_cnn_onnx), str(qdq), Reader(), quant_format=QuantFormat.QDQ,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8, per_channel=True)
    res = convert(qdq, "tensorrt", "jetson-orin-nano", out=tmp_path / "m.onnx",
                  options=TensorrtOptions(precision="int8"), golden=cnn_golden())
    recipe = json.loads((tmp_path / "m.trt.json").read_text())
    assert "--int8" in recipe["trtexec"] and res.precision == "int8"
    assert "QuantizeLinear" in _ops(res.path)  # explicit quantization shipped as is


def test_tensorrt_refuses_ort_contrib_ops(tiny_cnn_onnx, tmp_path):
    """An ORT-fused graph (FusedConv, com.microsoft) is not parseable by TensorRT: named up front."""
    from controller.conversion import UnsupportedOpError

    fused = convert(tiny_cnn_onnx, "onnx", "x86-edge", out=tmp_path / "fused.onnx").path
    with pytest.raises(UnsupportedOpError, match="FusedConv") as info:
        convert(fused, "tensorrt", "jetson-orin-nano", out=tmp_path / "t.onnx")
    assert info.value.layer


def test_detects_precision(tiny_cnn_onnx, tmp_path):
    res = convert(tiny_cnn_onnx, "onnx", "x86-edge", out=tmp_path / "m.onnx")
    assert res.precision == "fp32"
    assert np.isfinite(res.check["outputs"][0]["max_abs_error"])
