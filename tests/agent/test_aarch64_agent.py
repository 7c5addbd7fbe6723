"""A real aarch64 agent process (Debian's arm64 Python under qemu-user) in a fleet with an x86 agent.

The story is the demo's on the small zoo CNN (mnist-cnn, real MNIST digits): FP32, then INT8 static
(committed), then a degraded INT8 build (rolled back), each one deployment to both devices through
the real FleetService, registry, ArtifactBuilder and mosquitto. The aarch64 agent downloads, verifies
the signature, benchmarks with onnxruntime's aarch64 kernels in an emulated child process and decides
like the x86 one; its caps say aarch64 and emulated, its latency is marked emulated and not gated,
and its golden-set quality matches the x86 agent's on every build.

Needs ``qemu-user-static`` and the arm64 tree (``python -m controller.demo.aarch64 build``, run by
``make test``; built here on first use). Skipped with the reason where this host cannot emulate
aarch64, except in CI (``CI=true``), where that is a failure: CI installs qemu itself.
"""

from __future__ import annotations

import os
import subprocess
import time
import uuid

import pytest

from common.keys import load_or_create_private_key
from common.profiles import load_profile
from controller.artifacts import ArtifactBuilder
from controller.demo import aarch64
from controller.fleet import FleetService
from controller.registry import Registry

agent_daemon = pytest.importorskip("agent.daemon")
agent_config = pytest.importorskip("agent.config")

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]
FAST = dict(bench_runs=8, bench_warmup=2, rerequest_interval_s=1.0, telemetry_interval_s=1.0, threads=1)


@pytest.fixture(scope="module")
def arm_env() -> aarch64.Aarch64Env:
    reason = aarch64.unavailable_reason()
    if reason is not None:
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the aarch64 agent: {reason}")
        pytest.skip(reason)
    return aarch64.ensure_aarch64_env()


def _wait(pred, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.2)
    return bool(pred())


def test_aarch64_agent_commits_int8_and_rolls_back_degraded_like_x86(arm_env, mosquitto, tmp_path):
    from controller.demo.build import build_versions

    fleet = f"t{uuid.uuid4().hex[:8]}"
    key = load_or_create_private_key(tmp_path / "keys" / "ctl.key")
    reg = Registry(tmp_path / "ws")
    versions = build_versions(reg, model="mnist-cnn", profiles=("x86-edge", "rpi5"), out_dir=tmp_path / "models",
                              calibration_samples=32, say=lambda _m: None)
    builder = ArtifactBuilder(reg, signing_key=key, chunk_size=32 * 1024)
    svc = FleetService(reg, host=mosquitto.host, port=mosquitto.port, fleet=fleet,
                       password=mosquitto.credentials.users["controller"], artifact_builder=builder).start()
    x86, arm = f"{fleet}-x86", f"{fleet}-pi5"
    pw_file = tmp_path / "arm.pw"
    pw_file.write_text(mosquitto.add_user(arm))
    cfg = agent_config.AgentConfig(
        device_id=x86, fleet=fleet, profile_id="x86-edge", data_dir=tmp_path / x86,
        controller_key=tmp_path / "keys" / "ctl.pub", broker_host=mosquitto.host, broker_port=mosquitto.port,
        username=x86, password=mosquitto.add_user(x86), **FAST)
    x86_agent = agent_daemon.Agent(cfg)
    log_path = tmp_path / "arm-agent.log"
    argv = arm_env.agent_argv(
        "--device-id", arm, "--fleet", fleet, "--profile", "rpi5", "--broker", f"{mosquitto.host}:{mosquitto.port}",
        "--password-file", str(pw_file), "--data-dir", str(tmp_path / arm), "--controller-key",
        str(tmp_path / "keys" / "ctl.pub"), "--threads", "1", "--bench-runs", "5", "--bench-warmup", "1",
        "--rerequest-interval", "2", "--telemetry-interval", "2")
    with log_path.open("wb") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                env=arm_env.environ(cpu=aarch64.qemu_cpu_for(load_profile("rpi5"))))

    def log_tail() -> str:
        return "\n".join(log_path.read_text(errors="replace").splitlines()[-30:])

    try:
        x86_agent.start()
        assert svc.wait_for_devices([x86, arm], timeout=90), log_tail()
        arch = lambda: (reg.devices.get_device(device_id=arm).caps or {}).get("arch")  # noqa: E731
        assert _wait(lambda: arch() == "aarch64", 30), log_tail()
        caps = reg.devices.get_device(device_id=arm).caps
        assert caps["emulated"] == "qemu-user" and caps["profile"] == "rpi5" and caps["runtimes"] == ["onnxruntime"]
        assert caps["missing_runtimes"] == ["tflite"]  # the arm64 tree carries onnxruntime only: said, not hidden
        assert reg.devices.get_device(device_id=x86).caps["emulated"] is None

        def roll(version) -> dict:
            dep = svc.deploy(version.id, [x86, arm])
            return svc.wait_for(dep, timeout=240).as_dict()

        fp32 = roll(versions["fp32"])
        assert fp32["state"] == "succeeded", (fp32, log_tail())
        int8 = roll(versions["int8"]["rpi5"])
        assert int8["state"] == "succeeded", (int8, log_tail())
        degraded = roll(versions["degraded"]["rpi5"])
        assert degraded["state"] == "failed", (degraded, log_tail())

        for name, stage in (("fp32", fp32), ("int8", int8), ("degraded", degraded)):
            a, b = (stage["devices"][d]["bench"] for d in (arm, x86))
            arm_m, x86_m = a["candidate_metrics"], b["candidate_metrics"]
            print(f"{name}: aarch64 (emulated) p50 {arm_m['latency_p50_ms']:.1f} ms, "
                  f"mem {arm_m['peak_rss_delta_mb']:.1f}"
                  f" MB, top1 {arm_m['quality']:.4f} | x86 p50 {x86_m['latency_p50_ms']:.2f} ms, mem "
                  f"{x86_m['peak_rss_delta_mb']:.1f} MB, top1 {x86_m['quality']:.4f}")
            assert arm_m["emulated"] == "qemu-user" and x86_m.get("emulated") is None
            assert arm_m["runtime"] == "onnxruntime" and arm_m["quality_metric"] == "top1"
            # real ARM kernels: same answers as x86 on the golden digits (one of 16 may flip on INT8 rounding)
            assert abs(arm_m["quality"] - x86_m["quality"]) <= 1 / 16 + 1e-9, (arm_m, x86_m)
        assert fp32["devices"][arm]["bench"]["candidate_metrics"]["quality"] == 1.0
        assert any(r.startswith("latency not gated: measured under qemu-user") for r in
                   int8["devices"][arm]["bench"]["reasons"])
        for dev in (x86, arm):
            info = degraded["devices"][dev]
            assert info["state"] == "rolled_back" and info["reason"] == "regression_quality", info
            assert _wait(lambda d=dev: (reg.devices.get_device(device_id=d).active or {}).get("version")
                         == versions["int8"]["rpi5"].id, 30)
        assert proc.poll() is None, log_tail()  # the emulated agent is still serving
        assert "Traceback" not in log_path.read_text(errors="replace")
    finally:
        x86_agent.stop()
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait(5)
        svc.stop()
        reg.close()
    assert proc.returncode == 0, log_tail()  # SIGTERM: clean shutdown, offline state published
