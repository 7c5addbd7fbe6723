"""Template converter tests: every registered converter is held to the same contract.

``ConverterContract`` is abstract; each subclass names its target, profile and
options. Converters whose packages are missing (litert-torch, coremltools are in
the ``convert`` extra) are skipped, so the main suite runs without them.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
from typing import Any, ClassVar

import numpy as np
import pytest

from controller.conversion import (
    ConversionResult,
    CrossRuntimeMismatchError,
    UnsupportedOpError,
    UnsupportedSourceError,
    convert,
)
from controller.conversion.api import _load_converters
from controller.conversion.registry import _CONVERTERS, Artifact

from .conftest import cnn_golden


class ConverterContract:
    """Checks every converter must pass; subclasses set the class attributes."""

    target: ClassVar[str]
    profile: ClassVar[str]
    suffix: ClassVar[str]
    needs: ClassVar[tuple[str, ...]] = ()
    executes_here: ClassVar[bool] = True  # False: structural validation only (Core ML on Linux)
    torch_only: ClassVar[bool] = False

    def options(self) -> Any:
        return None  # profile's recipe decides

    @pytest.fixture(autouse=True)
    def _needs(self):
        for mod in self.needs:
            pytest.importorskip(mod)

    def _convert(self, model, tmp_path, name="m", **kw) -> ConversionResult:
        return convert(model, self.target, self.profile, out=tmp_path / f"{name}{self.suffix}",
                       options=kw.pop("options", self.options()), **kw)

    def unsupported_source(self, request) -> tuple[Any, dict[str, Any], str, str]:
        """(model, convert kwargs, expected op substring, expected layer substring)."""
        model, args = request.getfixturevalue("bessel_model")
        return model, {"example_inputs": args}, "bessel_j0", "act"

    # ---- the contract
    def test_converts_and_passes_the_cross_runtime_check(self, tiny_cnn, tmp_path):
        model, args = tiny_cnn
        res = self._convert(model, tmp_path, example_inputs=args, golden=cnn_golden(), quality_metric="top1")
        assert res.path.exists() and res.size_bytes > 0 and len(res.sha256) == 64
        assert res.check["ok"], res.check
        assert res.check["executed"] is self.executes_here
        if self.executes_here:
            (out,) = res.check["outputs"]
            assert out["cosine"] >= 0.99 and out["top1_agreement"] >= 0.8 and out["shape"] == [6, 10]
        assert res.profile == self.profile and res.target == self.target

    def test_result_is_recorded_as_json_lineage(self, tiny_cnn, tmp_path):
        model, args = tiny_cnn
        res = self._convert(model, tmp_path, example_inputs=args)
        sidecar = type(res.path)(str(res.path) + ".conversion.json")
        again = ConversionResult.model_validate_json(sidecar.read_text())
        assert again.sha256 == res.sha256 and again.options["type"] == type(self.options() or
                                                                               _default(self)).__name__
        json.dumps(res.model_dump(mode="json"))  # fully serialisable

    def test_io_names_follow_the_source(self, tiny_cnn, tmp_path):
        model, args = tiny_cnn
        res = self._convert(model, tmp_path, example_inputs=args, input_names=["image"], output_names=["logits"],
                            golden={"image": cnn_golden()["input"]})
        assert [i["name"] for i in res.inputs] == ["image"]
        assert [o["name"] for o in res.outputs] == ["logits"]

    def test_two_input_token_model(self, tiny_encoder, tmp_path):
        model, args = tiny_encoder
        res = self._convert(model, tmp_path, example_inputs=args, input_names=["input_ids", "attention_mask"],
                            output_names=["embedding"])
        assert res.check["ok"], res.check
        assert [i["name"] for i in res.inputs] == ["input_ids", "attention_mask"]

    def test_unsupported_op_names_the_op_and_the_layer(self, request, tmp_path):
        model, kwargs, op, layer = self.unsupported_source(request)
        with pytest.raises(UnsupportedOpError) as info:
            self._convert(model, tmp_path, **kwargs)
        err = info.value
        assert op in err.op and layer in err.layer, str(err)
        assert self.target in str(err) and op in str(err) and layer in str(err)

    def test_drifting_artifact_fails_with_a_per_output_report(self, tiny_cnn, tmp_path, monkeypatch):
        if not self.executes_here:
            pytest.skip("artifact does not execute on this host")
        _load_converters()
        spec = _CONVERTERS[self.target]

        def corrupting(*a, **kw) -> Artifact:
            art = spec.handler(*a, **kw)
            good = art.runner
            art.runner = lambda feeds: [-o for o in good(feeds)]  # sign flip: cosine -1
            return art

        monkeypatch.setitem(_CONVERTERS, self.target, dataclasses.replace(spec, handler=corrupting))
        model, args = tiny_cnn
        with pytest.raises(CrossRuntimeMismatchError) as info:
            self._convert(model, tmp_path, example_inputs=args, output_names=["logits"])
        text = str(info.value)
        assert "FAILED" in text and "logits" in text and "cosine" in text
        assert not info.value.report.ok

    def test_wrong_options_type_is_refused(self, tiny_cnn, tmp_path):
        @dataclasses.dataclass(frozen=True)
        class Bogus:
            x: int = 1

        model, args = tiny_cnn
        with pytest.raises(TypeError, match=self.target):
            self._convert(model, tmp_path, example_inputs=args, options=Bogus())


def _default(contract: ConverterContract) -> Any:
    from common.profiles import load_profile
    from controller.conversion.recipes import options_for

    return options_for(contract.target, load_profile(contract.profile))


class OnnxSourceUnsupported:
    def unsupported_source(self, request):
        return request.getfixturevalue("custom_op_onnx"), {}, "MysteryOp", "block3/mystery"


class TestOnnxConverter(OnnxSourceUnsupported, ConverterContract):
    target, profile, suffix = "onnx", "rpi5", ".onnx"
    needs = ("onnxruntime",)


class TestTensorrtConverter(OnnxSourceUnsupported, ConverterContract):
    target, profile, suffix = "tensorrt", "jetson-orin-nano", ".onnx"
    needs = ("onnxruntime",)


class TestTfliteFp32(ConverterContract):
    target, profile, suffix = "tflite", "android-arm64", ".tflite"
    needs = ("litert_torch", "ai_edge_litert")

    def options(self):
        from controller.conversion.to_tflite import TfliteOptions

        return TfliteOptions(precision="fp32")


class TestTfliteInt8(TestTfliteFp32):
    def options(self):
        from controller.conversion.to_tflite import TfliteOptions

        return TfliteOptions(precision="int8")


class TestTfliteFp16(TestTfliteFp32):
    def options(self):
        from controller.conversion.to_tflite import TfliteOptions

        return TfliteOptions(precision="fp16")


class TestTfliteInt8Dynamic(TestTfliteFp32):
    def options(self):
        from controller.conversion.to_tflite import TfliteOptions

        return TfliteOptions(precision="int8-dynamic")


class TestCoremlInt8(ConverterContract):
    target, profile, suffix = "coreml", "iphone", ".mlpackage"
    needs = ("coremltools",)
    executes_here = importlib.util.find_spec("coremltools") is not None and __import__("sys").platform == "darwin"

    def options(self):
        from controller.conversion.to_coreml import CoremlOptions

        return CoremlOptions(weights="int8", weight_threshold=16)  # tiny layers: compress them anyway


class TestCoremlPalettized(TestCoremlInt8):
    def options(self):
        from controller.conversion.to_coreml import CoremlOptions

        return CoremlOptions(weights="palettize", nbits=4, weight_threshold=16)


@pytest.mark.parametrize(("target", "module"), [("tflite", "litert_torch"), ("coreml", "coremltools")])
def test_torch_only_targets_refuse_onnx_sources(target, module, tiny_cnn_onnx, tmp_path):
    pytest.importorskip(module)
    with pytest.raises(UnsupportedSourceError, match="needs the torch model"):
        convert(tiny_cnn_onnx, target, "android-arm64", out=tmp_path / "x.bin")


def test_golden_outputs_are_identical_for_fp32_onnx(tiny_cnn_onnx, tmp_path):
    res = convert(tiny_cnn_onnx, "onnx", "x86-edge", out=tmp_path / "m.onnx", golden=cnn_golden(4))
    (out,) = res.check["outputs"]
    assert out["max_abs_error"] < 1e-4 and np.isclose(out["cosine"], 1.0)


def test_coreml_retries_with_core_aten_decompositions(tmp_path):
    """BERT's ``aten.new_ones`` has no coremltools lowering as is; the core-ATen table lowers it."""
    pytest.importorskip("coremltools")
    import torch

    from controller.conversion.to_coreml import CoremlOptions

    class NewOnes(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.proj = torch.nn.Linear(8, 8)

        def forward(self, x):
            return self.proj(x) * x.new_ones(x.shape)

    res = convert(NewOnes().eval(), "coreml", "iphone", out=tmp_path / "m.mlpackage",
                  example_inputs=(torch.randn(1, 8),), options=CoremlOptions(weight_threshold=16))
    assert res.check["ok"]
    assert any("core-ATen" in n for n in res.notes), res.notes
