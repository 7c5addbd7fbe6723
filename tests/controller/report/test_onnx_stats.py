"""Size breakdown and per-layer drift read from real compressed ONNX files (static QDQ, dynamic INT8, FP16)."""

from __future__ import annotations

import numpy as np
import pytest

from controller.compression import compress, make_config
from controller.report.onnx_stats import layer_drift, size_breakdown
from tests.controller.api.conftest import tiny_onnx


@pytest.mark.parametrize("technique,params,lo,hi", [
    ("int8-dynamic", {}, 20.0, 80.0),  # MatMulInteger: weights as <name>_quantized + scale, no DequantizeLinear
    ("fp16", {}, 60.0, 200.0),         # FP16 keeps ~3 decimal digits: far closer than INT8
])
def test_drift_is_measured_for_every_weight(tmp_path, technique, params, lo, hi):
    src = tiny_onnx(tmp_path / "m.onnx", seed=5)
    samples = tmp_path / "s.npz"
    np.savez(samples, input=np.random.default_rng(0).standard_normal((16, 16)).astype(np.float32))
    out = compress(src, make_config(technique, params), out=tmp_path / "c.onnx", calibration=samples,
                   evaluate=False, memory=False).output
    drift = layer_drift(src, out)
    assert drift["compared"] == 2 and drift["unmatched"] == 0, drift
    assert all(lo < r["sqnr_db"] < hi for r in drift["layers"]), drift["layers"]
    sizes = size_breakdown(out)
    assert sum(sizes.values()) == out.stat().st_size
    if technique == "int8-dynamic":
        assert sizes.get("INT8", 0) + sizes.get("UINT8", 0) > sizes.get("FLOAT", 0)  # the weights went 8-bit
