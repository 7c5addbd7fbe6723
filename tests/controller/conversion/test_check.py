"""Cross-runtime check metrics, the readable report, and the ONNX per-layer drift table."""

from __future__ import annotations

import numpy as np
import pytest

from common.profiles import Tolerance
from controller.conversion.check import (
    compare_output,
    cross_runtime_check,
    first_divergent,
    layer_drift,
    raise_if_failed,
    render_drift,
)
from controller.conversion.errors import CrossRuntimeMismatchError

from .conftest import cnn_golden

TOL = Tolerance()


def test_identical_outputs_are_perfect():
    x = np.random.default_rng(0).standard_normal((5, 10)).astype(np.float32)
    c = compare_output("logits", x, x.copy(), TOL, quality_metric="top1")
    assert c.ok and c.max_abs_error == 0 and np.isclose(c.cosine, 1) and c.top1_agreement == 1.0


def test_small_noise_passes_cosine_but_flipped_argmax_fails_top1():
    rng = np.random.default_rng(0)
    ref = rng.standard_normal((50, 10))
    near = ref + 1e-3 * rng.standard_normal(ref.shape)
    assert compare_output("y", ref, near, TOL, quality_metric="top1").ok
    swapped = ref.copy()
    top = ref.argmax(1)
    swapped[np.arange(50), top] = ref.min(1) - 1  # every argmax moves
    c = compare_output("y", ref, swapped, TOL, quality_metric="top1")
    assert not c.ok and any("top-1" in r for r in c.reasons)
    # an embedding model is judged on cosine only: top-1 is reported, not enforced
    assert compare_output("y", ref, swapped, Tolerance(min_cosine=0.0), quality_metric="cosine").ok


def test_shape_mismatch_nan_and_abs_tolerance():
    ref = np.ones((2, 4), np.float32)
    assert "shape" in compare_output("y", ref, np.ones((2, 5)), TOL).reasons[0]
    assert compare_output("y", ref, np.ones(8), TOL).ok  # same data squeezed differently: reshaped
    bad = ref.copy()
    bad[0, 0] = np.nan
    assert "NaN" in " ".join(compare_output("y", ref, bad, TOL).reasons)
    c = compare_output("y", ref, ref * 1.5, Tolerance(max_abs_error=0.1))
    assert not c.ok and "max abs error" in c.reasons[0]


def test_report_renders_every_output_and_raises():
    golden = {"x": np.random.default_rng(0).standard_normal((4, 3)).astype(np.float32)}

    def reference(feeds):
        return [feeds["x"] * 2, feeds["x"].sum(1, keepdims=True)]

    def artifact(feeds):
        return [feeds["x"] * 2, -feeds["x"].sum(1, keepdims=True)]

    report = cross_runtime_check(reference, artifact, golden, TOL, target="onnx", profile="rpi4",
                                 output_names=["scores", "total"])
    assert [o.ok for o in report.outputs] == [True, False] and not report.ok
    text = report.render()
    assert "scores" in text and "total" in text and "FAIL: cosine" in text and "rpi4" in text
    with pytest.raises(CrossRuntimeMismatchError, match="total"):
        raise_if_failed(report)
    assert report.to_dict()["ok"] is False


def test_structural_only_report_when_artifact_cannot_run():
    golden = {"x": np.zeros((2, 3), np.float32)}
    report = cross_runtime_check(lambda f: [f["x"]], None, golden, TOL, structural={"ok": True})
    assert report.ok and not report.executed and "not executed" in report.render()
    report = cross_runtime_check(lambda f: [f["x"]], None, golden, TOL, structural={"ok": False, "problems": ["x"]})
    assert not report.ok


def test_drift_table_finds_the_first_divergent_layer(tiny_cnn_onnx, tmp_path):
    """Corrupt one conv's weights: the table must name that conv, not the head or the output."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(tiny_cnn_onnx))
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    target = convs[1]  # the depthwise conv, after the stem
    init = {i.name: i for i in model.graph.initializer}
    w = numpy_helper.to_array(init[target.input[1]])
    init[target.input[1]].CopyFrom(numpy_helper.from_array(-w, target.input[1]))
    bad = tmp_path / "bad.onnx"
    onnx.save(model, str(bad))

    feeds = {"input": cnn_golden(1)["input"]}
    table = layer_drift(tiny_cnn_onnx, bad, feeds)
    first = first_divergent(table, TOL)
    assert first is not None and first.node == target.name, render_drift(table, first)
    before = [r for r in table if r.index < first.index]
    assert before and all(r.cosine > 0.9999 for r in before)
    assert "first divergent" in render_drift(table, first)


def test_failed_onnx_conversion_attaches_drift(tiny_cnn_onnx, tmp_path, monkeypatch):
    """convert() explains a failed ONNX check with the drift table, pointing at the broken layer."""
    import onnx
    from onnx import numpy_helper

    from controller.conversion import convert, to_onnx

    real = to_onnx.ort_optimize

    def sabotaged(src, dst, level, **kw):
        real(src, dst, level, **kw)
        m = onnx.load(str(dst))
        node = next(n for n in m.graph.node if n.op_type in ("Conv", "FusedConv"))
        init = {i.name: i for i in m.graph.initializer}
        w = numpy_helper.to_array(init[node.input[1]])
        init[node.input[1]].CopyFrom(numpy_helper.from_array(w * 0 + 0.01, node.input[1]))
        onnx.save(m, str(dst))

    monkeypatch.setattr(to_onnx, "ort_optimize", sabotaged)
    with pytest.raises(CrossRuntimeMismatchError) as info:
        convert(tiny_cnn_onnx, "onnx", "rpi5", out=tmp_path / "m.onnx", golden=cnn_golden(), quality_metric="top1")
    report = info.value.report
    assert report.drift and report.first_divergent is not None
    assert "per-layer drift" in str(info.value) and "first divergent" in str(info.value)
