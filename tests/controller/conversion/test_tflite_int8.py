"""Full-integer TFLite INT8: the properties its CPU latency depends on (convert venv only).

A MobileNetV2-style inverted-residual block is converted for real. The INT8 artifact must be
full-integer (no float op besides the QUANTIZE/DEQUANTIZE I/O edges: a non-strict
``torch.export`` used to leave residual ADDs in float behind DEQUANTIZE/QUANTIZE) and one
XNNPACK partition, and its float32 I/O must give the same numbers as the INT8-I/O variant.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("litert_torch", reason="the TFLite converter lives in the convert venv (.venv-convert)")
pytest.importorskip("ai_edge_litert")

from controller.conversion import convert  # noqa: E402
from controller.conversion.to_tflite import TfliteOptions, tflite_runner, tflite_structure  # noqa: E402

from .conftest import nn, torch  # noqa: E402


class _InvertedResidual(nn.Module):
    """Expand 1×1 → depthwise 3×3 → project 1×1, plus the identity: the block whose ADD regressed."""

    def __init__(self, ch: int = 8, hidden: int = 24) -> None:
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(ch, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6(),
            nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6(),
            nn.Conv2d(hidden, ch, 1, bias=False), nn.BatchNorm2d(ch))

    def forward(self, x):
        return x + self.conv(x)


class TinyResidualNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU6())
        self.blocks = nn.Sequential(_InvertedResidual(), _InvertedResidual())
        self.head = nn.Linear(8, 10)

    def forward(self, x):
        return self.head(nn.functional.adaptive_avg_pool2d(self.blocks(self.stem(x)), 1).flatten(1))


@pytest.fixture(scope="module")
def residual_net():
    torch.manual_seed(0)
    model = TinyResidualNet().eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.3, 0.3)
                m.running_var.uniform_(0.5, 2.0)
    rng = np.random.default_rng(0)
    golden = {"x": rng.standard_normal((8, 3, 32, 32)).astype(np.float32)}
    calibration = [{"x": rng.standard_normal((1, 3, 32, 32)).astype(np.float32)} for _ in range(16)]
    return model, golden, calibration


def _int8(residual_net, out, **options):
    model, golden, calibration = residual_net
    return convert(model, "tflite", "android-arm64", out=out, options=TfliteOptions(precision="int8", **options),
                   golden=golden, calibration=calibration, example_inputs=(torch.from_numpy(golden["x"][:1]),),
                   input_names=["x"], output_names=["y"], check=False)


@pytest.fixture(scope="module")
def int8_artifacts(residual_net, tmp_path_factory):
    out = tmp_path_factory.mktemp("tflite-int8")
    return _int8(residual_net, out / "float_io.tflite"), _int8(residual_net, out / "int8_io.tflite", float_io=False)


def test_int8_is_full_integer_and_one_xnnpack_partition(int8_artifacts):
    res, _ = int8_artifacts
    structure = res.check["structural"]
    assert structure["ops"]["ADD"] == 2  # both residual ADDs ...
    assert structure["float_ops"] == {}  # ... in INT8: no DEQUANTIZE → ADD → QUANTIZE detour
    assert structure["fully_delegated"] and structure["delegate_partitions"] == 1
    assert not any("not full-integer" in n or "XNNPACK" in n for n in res.notes)
    assert json.loads(res.path.with_name(res.path.name + ".conversion.json").read_text())["check"]["structural"][
        "float_ops"] == {}


def test_int8_keeps_float_io_with_identical_outputs(int8_artifacts, residual_net):
    from ai_edge_litert.interpreter import Interpreter

    float_io, int8_io = int8_artifacts
    details = Interpreter(model_path=str(float_io.path))
    assert [d["dtype"] for d in details.get_input_details() + details.get_output_details()] == [np.float32] * 2
    plain = Interpreter(model_path=str(int8_io.path))
    assert [d["dtype"] for d in plain.get_input_details() + plain.get_output_details()] == [np.int8] * 2
    assert tflite_structure(int8_io.path)["ops"].get("QUANTIZE") is None
    assert float_io.check["structural"]["ops"]["QUANTIZE"] == float_io.check["structural"]["ops"]["DEQUANTIZE"] == 1
    golden = residual_net[1]["x"]
    run_f, run_i = tflite_runner(float_io.path, 1, ["x"]), tflite_runner(int8_io.path, 1, ["x"])
    for i in range(len(golden)):
        np.testing.assert_array_equal(run_f({"x": golden[i:i + 1]})[0], run_i({"x": golden[i:i + 1]})[0])
    model = residual_net[0]
    with torch.no_grad():
        ref = model(torch.from_numpy(golden)).numpy()
    out = np.concatenate([run_f({"x": golden[i:i + 1]})[0] for i in range(len(golden))])
    cos = (out * ref).sum(1) / np.linalg.norm(out, axis=1) / np.linalg.norm(ref, axis=1)
    assert cos.min() > 0.98


def test_structure_reports_a_float_detour(residual_net, tmp_path, monkeypatch):
    """The non-strict graph (what the converter got before the fix) is flagged, not silently shipped."""
    from controller.conversion import to_tflite

    monkeypatch.setattr(to_tflite, "_pt2e_graph", lambda module, args: (
        torch.export.export(module, args, strict=False).module(), None))
    res = _int8(residual_net, tmp_path / "nonstrict.tflite")
    assert res.check["structural"]["float_ops"].get("ADD") == 2
    assert any("not full-integer" in n for n in res.notes)


class _PositionalEncoder(nn.Module):
    """Token + position embeddings with ``arange + offset`` ids (RoBERTa/BERT-style index arithmetic)."""

    def __init__(self) -> None:
        super().__init__()
        self.tok = nn.Embedding(100, 16)
        self.pos = nn.Embedding(40, 16)
        self.proj = nn.Linear(16, 8)

    def forward(self, input_ids):
        positions = torch.arange(input_ids.shape[1]).unsqueeze(0) + 2  # an integer ADD
        return self.proj(self.tok(input_ids) + self.pos(positions)).mean(1)


def test_int8_leaves_integer_arithmetic_unquantized(tmp_path):
    """Strict export lets the ADD annotator see integer adds too; observing them broke calibration."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 100, (4, 12)).astype(np.int64)
    res = convert(_PositionalEncoder().eval(), "tflite", "android-arm64", out=tmp_path / "enc.tflite",
                  options=TfliteOptions(precision="int8"), golden={"input_ids": ids},
                  calibration=[{"input_ids": ids[i:i + 1]} for i in range(4)],
                  example_inputs=(torch.from_numpy(ids[:1]),), input_names=["input_ids"], output_names=["y"],
                  check=False)
    assert res.check["outputs"][0]["cosine"] > 0.95
    assert not any("strict torch.export failed" in n for n in res.notes)


class _MaskedAttention(nn.Module):
    """Self-attention with a HF-style additive mask, ``(1 - mask) * finfo(float32).min``."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(100, 16)
        self.qkv = nn.Linear(16, 48)

    def forward(self, input_ids, attention_mask):
        q, k, v = self.qkv(self.emb(input_ids)).chunk(3, dim=-1)
        bias = (1.0 - attention_mask[:, None, :].to(q.dtype)) * torch.finfo(torch.float32).min
        weights = torch.softmax(q @ k.transpose(1, 2) / 4.0 + bias, dim=-1)
        return (weights @ v).mean(1)


def test_int8_keeps_an_additive_attention_mask_in_float(tmp_path):
    """A quantized mask ADD (scale ~1e36) made LiteRT abort the whole process in ADD's Prepare."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 100, (6, 10)).astype(np.int64)
    mask = np.ones((6, 10), np.int64)
    mask[:, 7:] = 0  # padding: the mask term is finfo.min there
    feeds = {"input_ids": ids, "attention_mask": mask}
    res = convert(_MaskedAttention().eval(), "tflite", "android-arm64", out=tmp_path / "attn.tflite",
                  options=TfliteOptions(precision="int8"), golden=feeds,
                  calibration=[{k: v[i:i + 1] for k, v in feeds.items()} for i in range(6)],
                  example_inputs=(torch.from_numpy(ids[:1]), torch.from_numpy(mask[:1])),
                  input_names=["input_ids", "attention_mask"], output_names=["y"], check=False)
    assert any(n.startswith("kept in float (calibrated range beyond") for n in res.notes)
    assert res.check["outputs"][0]["cosine"] > 0.9
