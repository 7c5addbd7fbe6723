"""The controller times every model with the ORT tuning of the profile closest to this host."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper

from common.profiles import OrtTuning
from controller import ort_tuning


def _tiny(path):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    onnx.save(helper.make_model(helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y]),
                                opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_env_profile_overrides_the_host_guess(monkeypatch):
    ort_tuning.host_tuning.cache_clear()
    monkeypatch.setenv("EDGEFLEET_HOST_PROFILE", "x86-edge")
    assert ort_tuning.host_tuning().disabled_optimizers == ["SkipLayerNormFusion"]
    ort_tuning.host_tuning.cache_clear()
    monkeypatch.setenv("EDGEFLEET_HOST_PROFILE", "no-such-profile")
    assert ort_tuning.host_tuning() == OrtTuning()  # unknown profile: safe defaults, not a crash
    ort_tuning.host_tuning.cache_clear()


def test_cpu_session_applies_tuning_and_runs(tmp_path):
    tuning = OrtTuning(disabled_optimizers=["SkipLayerNormFusion"])
    sess = ort_tuning.cpu_session(_tiny(tmp_path / "m.onnx"), 1, tuning)
    out = sess.run(None, {"x": np.array([[-1, 2, -3, 4]], np.float32)})[0]
    assert out.tolist() == [[0, 2, 0, 4]]
    assert sess.get_session_options().get_session_config_entry("session.set_denormal_as_zero") == "1"
