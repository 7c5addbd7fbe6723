"""An uploaded FP32 model deploys to any profile; a build made for one profile stays bound to it."""

from __future__ import annotations

import numpy as np
import pytest

from common.keys import load_or_create_private_key
from controller.artifacts import ArtifactBuildError, build_artifact
from controller.registry import Registry
from tests.tiny_models import tiny_linear_onnx


def test_upload_with_a_profile_is_not_locked_to_it(tmp_path):
    reg = Registry(tmp_path / "ws")
    key = load_or_create_private_key(tmp_path / "k.key")
    fp32 = tiny_linear_onnx(tmp_path / "m.onnx")
    model = reg.create_model(name="m")
    up = reg.add_version(model_id=model.id, path=fp32, technique="upload", profile="rpi4")
    int8 = reg.add_version(model_id=model.id, path=tiny_linear_onnx(tmp_path / "q.onnx", scale=1.0001),
                           technique="int8-static", profile="rpi4", parent_id=up.id)
    kw = dict(golden_inputs=[{"x": np.ones((1, 8), np.float32)}], reference_onnx=fp32, quality_metric="cosine",
              signing_key=key)
    for profile in ("rpi4", "rpi5", "x86-edge"):
        manifest = build_artifact(reg, up.id, profile=profile, **kw)[0]
        assert manifest.profile == profile
    with pytest.raises(ArtifactBuildError, match="built for profile 'rpi4'"):
        build_artifact(reg, int8.id, profile="rpi5", **kw)
    reg.close()
