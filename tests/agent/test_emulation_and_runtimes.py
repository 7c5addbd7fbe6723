"""Emulation is detected and marked, never latency-gated; a runtime the profile needs but lacks is named.

The real aarch64 process under qemu is ``test_aarch64_agent.py`` (slow); here the pieces it relies on
are pinned in a second each, plus the RISC-V case: a VisionFive 2 agent without onnxruntime (there is
no riscv64 wheel) says so at start-up, in its caps and in the reason it refuses an ONNX deployment.
"""

from __future__ import annotations

import json
import logging

import pytest

from agent import runtimes
from agent.compare import decide
from agent.config import AgentConfig
from agent.device import build_caps
from agent.emulation import detect
from common.errors import ReasonCode
from common.manifest import Thresholds
from common.messages import BenchMetrics, BenchReport, DeviceCaps, ModelRef, decode

from .artifacts import make_artifact


def _metrics(p95: float, quality: float = 1.0, mem: float = 10.0, emulated: str | None = None) -> BenchMetrics:
    return BenchMetrics(latency_p50_ms=p95 * 0.9, latency_p95_ms=p95, load_ms=5, peak_rss_delta_mb=mem,
                        quality=quality, quality_metric="top1", runs=5, emulated=emulated)


def test_qemu_user_is_detected_from_the_process_name_or_an_x86_cpu_under_an_arm_machine():
    assert detect(comm="qemu-aarch64-st", machine="aarch64", cpuinfo="") == "qemu-user"
    assert detect(comm="python3", machine="aarch64", cpuinfo="vendor_id\t: GenuineIntel\n") == "qemu-user"
    assert detect(comm="python3", machine="riscv64", cpuinfo="vendor_id : AuthenticAMD") == "qemu-user"
    assert detect(comm="python3", machine="aarch64", cpuinfo="CPU implementer\t: 0x41\nCPU part\t: 0xd0b") is None
    assert detect(comm="python3", machine="x86_64", cpuinfo="vendor_id : GenuineIntel") is None
    assert detect() is None  # this test process runs natively


def test_emulated_latency_is_reported_but_not_gated_while_quality_and_memory_still_are():
    base = _metrics(200.0, emulated="qemu-user")
    slow = _metrics(900.0, emulated="qemu-user")  # 4.5x slower under qemu: says nothing about the device
    verdict = decide(slow, base, Thresholds())
    assert verdict.commit, verdict.reasons
    assert any(r.startswith("latency not gated: measured under qemu-user") for r in verdict.reasons)
    assert decide(_metrics(900.0, quality=0.5, emulated="qemu-user"), base, Thresholds()).reason \
        is ReasonCode.REGRESSION_QUALITY
    assert decide(_metrics(200.0, mem=500.0, emulated="qemu-user"), base, Thresholds()).reason \
        is ReasonCode.REGRESSION_MEMORY
    native = decide(_metrics(900.0), _metrics(200.0), Thresholds())  # the same figures on hardware: regression
    assert native.reason is ReasonCode.REGRESSION_LATENCY


def test_new_fields_stay_off_the_wire_at_their_defaults_so_older_controllers_still_decode():
    caps = DeviceCaps(device_id="d1", profile="rpi5", arch="aarch64", cores=4, ram_mb=1024)
    assert set(json.loads(caps.to_bytes())) & {"emulated", "missing_runtimes"} == set()
    marked = caps.model_copy(update={"emulated": "qemu-user", "missing_runtimes": ["tflite"]})
    assert decode(DeviceCaps, marked.to_bytes()) == marked
    ref = ModelRef(model_id="m", version="v1", sha256="a" * 64, format="onnx")
    native = BenchReport(device_id="d1", deployment_id="d", candidate=ref, candidate_metrics=_metrics(2.0),
                         baseline=ref, baseline_metrics=_metrics(2.0), decision="commit")
    wire = json.loads(native.to_bytes())
    assert "emulated" not in wire["candidate_metrics"] and "emulated" not in wire["baseline_metrics"]
    emulated = native.model_copy(update={"candidate_metrics": _metrics(300.0, emulated="qemu-user"),
                                         "baseline_metrics": None})
    assert decode(BenchReport, emulated.to_bytes()).candidate_metrics.emulated == "qemu-user"


def test_missing_runtimes_say_what_to_do_and_tell_the_riscv64_truth(monkeypatch):
    monkeypatch.setattr(runtimes, "_importable", lambda *modules: False)
    riscv = runtimes.missing_runtimes(["onnxruntime"], "riscv64")
    assert "no riscv64 wheel" in riscv["onnxruntime"] and "docs/devices.md" in riscv["onnxruntime"]
    arm = runtimes.missing_runtimes(["onnxruntime", "tflite", "coreml"], "aarch64")
    assert "edgefleet[agent]" in arm["onnxruntime"] and "ai-edge-litert" in arm["tflite"]
    assert "no adapter" in arm["coreml"]
    monkeypatch.undo()
    assert runtimes.missing_runtimes(["onnxruntime"], "riscv64") == {}  # installed here


@pytest.fixture
def no_onnxruntime(monkeypatch):
    """This process as a RISC-V board sees it: onnxruntime cannot be imported."""
    real = runtimes._importable  # noqa: SLF001 - a RISC-V board: the one import that fails there
    monkeypatch.setattr(runtimes, "_importable", lambda *m: "onnxruntime" not in m and real(*m))


def test_visionfive2_without_onnxruntime_says_so_in_caps_and_log(no_onnxruntime, keypair, tmp_path, caplog):
    cfg = AgentConfig(device_id="vf2", fleet="f", profile_id="visionfive2", data_dir=tmp_path / "vf2",
                      controller_key=keypair[1])
    caps = build_caps(cfg)
    assert caps.runtimes == [] and caps.formats == [] and caps.missing_runtimes == ["onnxruntime"]
    from agent.daemon import Agent

    agent = Agent(cfg)
    with caplog.at_level(logging.WARNING, logger="agent.daemon"):
        agent.say_what_is_missing()
    text = caplog.text
    assert "profile visionfive2 needs runtime onnxruntime" in text and "no riscv64 wheel" in text
    assert "runs none of its profile's formats (onnx)" in text
    assert all(r.levelno == logging.ERROR for r in caplog.records)


def test_visionfive2_without_onnxruntime_refuses_onnx_with_the_reason(
    no_onnxruntime, controller, start_agent, reference, keypair, tmp_path
):
    agent = start_agent("vf2-dev", "visionfive2")
    art = make_artifact(tmp_path, reference.good_model(), reference, keypair[0], version="v1", profile="visionfive2")
    controller.deploy("vf2-dev", art, "d-vf2")
    reports = controller.wait_outcome("vf2-dev", "d-vf2", 15)
    assert [r.state for r in reports] == ["failure"] and reports[0].reason is ReasonCode.UNSUPPORTED_FORMAT
    assert "this device runs nothing" in reports[0].detail and "no riscv64 wheel" in reports[0].detail
    assert not [r for r in controller.requests if r[1].deployment_id == "d-vf2"]  # nothing downloaded
    assert agent.machine.active() is None
