"""The LiteRT runtime (format "tflite"), chosen from the manifest: benchmark and a real rollout on a phone profile."""

from __future__ import annotations

import pytest

from agent.bench import BenchSpec, run_benchmark
from common.errors import ReasonCode

from .artifacts import make_artifact

pytest.importorskip("ai_edge_litert", reason="optional tflite extra (ai-edge-litert) not installed")
pytestmark = pytest.mark.timeout(120)


def test_tflite_benchmark_good_and_degraded(tmp_path, reference):
    good, bad = tmp_path / "good.tflite", tmp_path / "bad.tflite"
    good.write_bytes(reference.good_tflite())
    bad.write_bytes(reference.degraded_tflite())
    golden = reference.write_golden(tmp_path / "g.npz")
    m = run_benchmark(BenchSpec(good, golden, "tflite", "cosine", runs=4, warmup=1))
    assert m.runtime == "litert" and m.quality > 0.9999 and m.latency_p95_ms > 0
    assert run_benchmark(BenchSpec(bad, golden, "tflite", "top1", runs=2, warmup=0)).quality < 0.7


def test_tflite_rollout_on_android_profile(controller, start_agent, reference, keypair, tmp_path):
    start_agent("phone-1", "android-arm64")
    ok = make_artifact(tmp_path, reference.good_tflite(), reference, keypair[0], version="t1",
                       profile="android-arm64", fmt="tflite")
    bad = make_artifact(tmp_path, reference.degraded_tflite(), reference, keypair[0], version="t2",
                        profile="android-arm64", fmt="tflite")
    controller.deploy("phone-1", ok, "tfl-1")
    assert [r.state for r in controller.wait_outcome("phone-1", "tfl-1")][-2:] == ["commit", "idle"]
    controller.deploy("phone-1", bad, "tfl-2")
    reports = controller.wait_outcome("phone-1", "tfl-2")
    assert reports[-2].state == "failure" and reports[-2].reason is ReasonCode.REGRESSION_QUALITY
    assert controller.benches["phone-1"][-1].candidate_metrics.runtime == "litert"
    controller.wait_for(lambda: controller.states["phone-1"].active.version == "t1", 10, "t1 still active")
    # full-integer model, converter-style tensor names: quantized in, dequantized out, golden matched by position
    int8 = make_artifact(tmp_path, reference.int8_tflite(), reference, keypair[0], version="t3",
                         profile="android-arm64", fmt="tflite")
    controller.deploy("phone-1", int8, "tfl-3")
    assert [r.state for r in controller.wait_outcome("phone-1", "tfl-3")][-2:] == ["commit", "idle"]
    assert controller.benches["phone-1"][-1].candidate_metrics.quality > 0.99
