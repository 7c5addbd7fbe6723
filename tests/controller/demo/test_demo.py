"""The demo end to end on real processes: broker, controller, three agent processes."""

from __future__ import annotations

import json
import os
import signal

import psutil
import pytest

from controller.demo.processes import Child, python_module, stop_all, wait_until
from controller.demo.run import run_demo
from controller.demo.scenario import DemoOptions


@pytest.mark.slow
def test_demo_commits_int8_and_rolls_back_degraded(tmp_path, capsys):
    opts = DemoOptions(workdir=tmp_path / "demo", model="mnist-cnn", profiles=("rpi4", "x86-edge"),
                       broker="mosquitto", bench_runs=60, calibration_samples=32)
    code = run_demo(opts)
    out = capsys.readouterr().out
    assert "console: http://127.0.0.1:" in out and "/console/" in out  # watchable while it runs
    summary = json.loads((tmp_path / "demo" / "summary.json").read_text())
    assert code == 0, summary["problems"]
    assert summary["ok"] is True
    stages = {s["name"]: s for s in summary["stages"]}
    for device in ("rpi4-01", "x86-edge-01"):
        assert stages["int8"]["devices"][device]["state"] == "committed"
        degraded = stages["degraded"]["devices"][device]
        assert degraded["state"] == "rolled_back"
        assert degraded["reason"] == "regression_quality"
        bench = degraded["bench"]
        assert bench["candidate_metrics"]["quality"] < bench["baseline_metrics"]["quality"]
        final = summary["final"][device]["active"]
        assert final["version"] == stages["int8"]["per_profile_versions"][summary["devices"][device]["profile"]]
    # a report per stage (its deployment: every device's decision and figures) and per compressed build
    reports = summary["reports"]
    assert {"stage-fp32", "stage-int8", "stage-degraded"} <= set(reports)
    assert any(name.startswith("version-int8") for name in reports)
    degraded_html = (tmp_path / "demo" / "reports" / "stage-degraded" / "report.html").read_text()
    assert "regression_quality" in degraded_html and "<svg" in degraded_html
    assert (tmp_path / "demo" / "reports" / "index.html").exists()
    # nothing left running: no agent process of this demo survives it
    mine = [p for p in psutil.process_iter(["cmdline"]) if str(tmp_path) in " ".join(p.info["cmdline"] or [])]
    assert mine == []


@pytest.mark.slow
def test_one_deployment_per_stage_reaches_onnx_and_tflite_devices(tmp_path):
    """The Android device gets TFLite builds (made in the convert venv), the Pi ONNX, in the same deployments."""
    from controller.demo.tflite import unavailable_reason

    reason = unavailable_reason("mnist-cnn", "android-arm64")
    if reason:
        pytest.skip(reason)
    opts = DemoOptions(workdir=tmp_path / "demo", model="mnist-cnn", profiles=("rpi4", "android-arm64"),
                       broker="mosquitto", bench_runs=60, calibration_samples=32)
    code = run_demo(opts)
    summary = json.loads((tmp_path / "demo" / "summary.json").read_text())
    assert code == 0, summary["problems"]
    assert {d: i["format"] for d, i in summary["devices"].items()} == {"rpi4-01": "onnx", "android-arm64-01": "tflite"}
    stages = {s["name"]: s for s in summary["stages"]}
    for stage in stages.values():
        assert len({i["deployment_id"] for i in stage["devices"].values()}) == 1  # one deployment, two formats
        assert stage["devices"]["android-arm64-01"]["format"] == "tflite"
        assert stage["devices"]["rpi4-01"]["format"] == "onnx"
    phone = {name: s["devices"]["android-arm64-01"] for name, s in stages.items()}
    assert phone["int8"]["state"] == "committed" and phone["int8"]["technique"] == "int8-dynamic"
    assert phone["int8"]["bench"]["candidate_metrics"]["runtime"] == "litert"
    assert phone["degraded"]["state"] == "rolled_back" and phone["degraded"]["reason"] == "regression_quality"
    assert summary["final"]["android-arm64-01"]["active"]["version"] == stages["int8"]["per_profile_versions"][
        "android-arm64"]
    assert summary["tflite_build"]["builds"]["int8"]["precision"] == "int8-dynamic"


def test_failed_start_is_reported_and_nothing_left(tmp_path):
    opts = DemoOptions(workdir=tmp_path / "demo", model="mnist-cnn", profiles=("no-such-profile",), broker="amqtt")
    code = run_demo(opts)
    summary = json.loads((tmp_path / "demo" / "summary.json").read_text())
    assert code == 1
    assert summary["ok"] is False
    assert summary["problems"]


def test_children_are_stopped_even_when_they_ignore_sigterm(tmp_path):
    script = (
        "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\nprint('up', flush=True)\ntime.sleep(60)"
    )
    child = Child("stubborn", python_module("this"), tmp_path / "c.log")
    child.argv = [child.argv[0], "-c", script]
    child.start()
    assert wait_until(lambda: "up" in child.tail(), timeout=10)
    pid = child.proc.pid
    assert child.stop(timeout=1) == -signal.SIGKILL
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    stop_all()
    assert not child.alive


def test_kill9_simulates_power_cut(tmp_path):
    child = Child("sleeper", [python_module("this")[0], "-c", "import time; time.sleep(60)"], tmp_path / "s.log")
    child.start()
    child.kill9()
    assert child.proc.returncode == -signal.SIGKILL
    assert os.path.exists(tmp_path / "s.log")


@pytest.mark.slow
def test_demo_runs_the_emulated_aarch64_device_beside_a_native_one(tmp_path):
    """`make demo`'s fifth device: rpi5 as a real aarch64 agent under qemu, joining at INT8."""
    from controller.demo import aarch64

    reason = aarch64.unavailable_reason()
    if reason:
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the emulated demo device: {reason}")
        pytest.skip(reason)
    opts = DemoOptions(workdir=tmp_path / "demo", model="mnist-cnn", profiles=("x86-edge", "rpi5"),
                       broker="mosquitto", bench_runs=20, calibration_samples=32)
    code = run_demo(opts)
    summary = json.loads((tmp_path / "demo" / "summary.json").read_text())
    assert code == 0, summary["problems"]
    assert summary["devices"]["rpi5-01"]["emulated"] == "qemu-user aarch64 (cortex-a76)"
    assert summary["devices"]["x86-edge-01"]["emulated"] is None
    stages = {s["name"]: s for s in summary["stages"]}
    assert "rpi5-01" not in stages["fp32"]["devices"]  # emulated FP32 would dominate the demo's time
    pi, box = (stages["int8"]["devices"][d] for d in ("rpi5-01", "x86-edge-01"))
    assert pi["state"] == box["state"] == "committed"
    assert pi["bench"]["candidate_metrics"]["emulated"] == "qemu-user"
    assert abs(pi["bench"]["candidate_metrics"]["quality"] - box["bench"]["candidate_metrics"]["quality"]) <= 1 / 16
    degraded = stages["degraded"]["devices"]["rpi5-01"]
    assert degraded["state"] == "rolled_back" and degraded["reason"] == "regression_quality"
    assert summary["final"]["rpi5-01"]["active"]["version"] == stages["int8"]["per_profile_versions"]["rpi5"]
