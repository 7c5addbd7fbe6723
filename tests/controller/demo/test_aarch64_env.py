"""The arm64 tree builder and the demo's emulated device, without waiting on emulation (but one import check).

The full aarch64 agent story is ``tests/agent/test_aarch64_agent.py`` (slow, runs in CI).
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from rich.console import Console

from common.profiles import load_profile
from controller.demo import aarch64
from controller.demo.run import prepare_emulation, results_table, validate_options
from controller.demo.scenario import DemoOptions, DemoRun, StageResult


def test_each_profile_is_emulated_on_its_own_core_or_the_closest_one():
    assert aarch64.qemu_cpu_for(load_profile("rpi4")) == "cortex-a72"  # no dot-product: reduce_range family
    assert aarch64.qemu_cpu_for(load_profile("rpi5")) == "cortex-a76"
    assert aarch64.qemu_cpu_for(load_profile("jetson-orin-nano")) == "cortex-a76"  # A78AE: not in qemu 7.2


def test_emulated_environment_drops_host_python_settings(tmp_path):
    env = aarch64.Aarch64Env(root=tmp_path / "root", site=tmp_path / "site", qemu="/usr/bin/qemu-aarch64-static")
    out = env.environ(repo=tmp_path / "repo", cpu="cortex-a76",
                      base={"PATH": "/usr/bin", "PYTHONHOME": "/x86", "PYTHONPATH": "/x86/site", "VIRTUAL_ENV": "v"})
    assert out == {"PATH": "/usr/bin", "PYTHONPATH": f"{tmp_path / 'repo'}:{tmp_path / 'site'}",
                   "QEMU_CPU": "cortex-a76"}
    (tmp_path / "root" / "usr" / "bin").mkdir(parents=True)
    env.write_wrapper()
    text = env.python.read_text()
    assert text.startswith("#!/bin/sh\n") and f'-L "{env.root}" -0 "$0"' in text and "python3.11" in text
    assert env.agent_argv("--help") == [str(env.python), "-m", "agent", "--help"]


def test_without_qemu_the_reason_names_the_package_and_build_if_possible_exits_0(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(aarch64, "find_qemu", lambda: None)
    monkeypatch.setenv("EDGEFLEET_CACHE", str(tmp_path))
    assert "apt-get install qemu-user-static" in aarch64.unavailable_reason()
    assert aarch64.load_env(tmp_path) is None
    with pytest.raises(aarch64.EmulationUnavailableError, match="qemu-user-static"):
        aarch64.ensure_aarch64_env(tmp_path)
    assert aarch64.main(["build", "--if-possible"]) == 0
    assert aarch64.main(["build"]) == 1
    assert "aarch64 agent unavailable: qemu-aarch64-static not found" in capsys.readouterr().err


def test_key_changes_with_the_pins(monkeypatch):
    key = aarch64.env_key()
    monkeypatch.setattr(aarch64, "WHEELS", (*aarch64.WHEELS[1:], "onnxruntime==1.25.0"))
    assert aarch64.env_key() != key


def test_an_emulated_profile_must_be_aarch64():
    with pytest.raises(ValueError, match="only aarch64 profiles can run emulated; x86-edge is x86_64"):
        validate_options(DemoOptions(model="mnist-cnn", profiles=("x86-edge",), emulated=("x86-edge",)))


def test_demo_skips_the_emulated_device_with_the_reason(monkeypatch, tmp_path):
    def unavailable(**_kw):
        raise aarch64.EmulationUnavailableError("qemu-aarch64-static not found: apt-get install qemu-user-static")

    monkeypatch.setattr(aarch64, "ensure_aarch64_env", unavailable)
    run = DemoRun(DemoOptions(workdir=tmp_path, profiles=("rpi4", "rpi5")))
    said: list[str] = []
    prepare_emulation(run, said.append)
    assert run.emulation is None and list(run.device_profiles()) == ["rpi4-01"]
    assert "apt-get install qemu-user-static" in run.skipped["rpi5"] and "skipped" in said[0]
    assert run.emulated_cpu("rpi5") is None


def test_table_marks_emulated_figures_and_shows_no_ratios_for_them(tmp_path):
    run = DemoRun(DemoOptions(workdir=tmp_path, profiles=("rpi4", "rpi5")))
    run.emulation = SimpleNamespace()
    stage = StageResult("int8", "", "int8-static", "commit")
    for device, emulated in (("rpi4-01", None), ("rpi5-01", "qemu-user")):
        stage.devices[device] = {"state": "committed", "format": "onnx", "technique": "int8-static", "bench": {
            "candidate_metrics": {"latency_p50_ms": 40.0, "latency_p95_ms": 41.0, "peak_rss_delta_mb": 30.0,
                                  "quality": 0.99, "emulated": emulated},
            "baseline_metrics": {"latency_p95_ms": 82.0, "peak_rss_delta_mb": 60.0}}}
    run.stages = [stage]
    out = io.StringIO()
    Console(file=out, width=220).print(results_table(run))
    lines = {line.split("│")[2].strip(): line for line in out.getvalue().splitlines() if "-01" in line}
    assert "×0.50" in lines["rpi4-01"] and "emulated*" not in lines["rpi4-01"]
    assert "rpi5-01 (qemu)" in lines and "emulated*" in lines["rpi5-01 (qemu)"] and "×" not in lines["rpi5-01 (qemu)"]
    assert run.emulated_cpu("rpi5") == "cortex-a76" and run.emulated_cpu("rpi4") is None


def test_built_tree_runs_the_agent_stack_as_aarch64():
    env = aarch64.load_env()
    if env is None:
        pytest.skip(aarch64.unavailable_reason() or "arm64 tree not built: python -m controller.demo.aarch64 build")
    proc = subprocess.run([str(env.python), "-c", aarch64.CHECK_SNIPPET], env=env.environ(cpu="cortex-a76"),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split()[:3] == ["aarch64", "onnxruntime", aarch64.ORT_VERSION]


def test_build_fetches_debs_and_wheels_once_and_renames_into_place(monkeypatch, tmp_path):
    """The build's commands (apt/dpkg/pip stood in for by a recorder): arm64 names, one dpkg -x per deb,
    aarch64 platform tags, then a stamped folder; the second call finds it and runs nothing."""
    calls: list[list[str]] = []

    def fake_run(argv, what, cwd=None):
        calls.append(list(argv))
        if argv[:2] == ["apt-get", "download"]:
            for name in argv[5:]:
                (cwd / f"{name.split(':')[0]}_1.0_arm64.deb").write_bytes(b"deb")
        elif argv[:2] == ["dpkg", "-x"]:
            (Path(argv[3]) / "usr" / "bin").mkdir(parents=True, exist_ok=True)
        elif "pip" in argv:
            Path(argv[argv.index("--target") + 1]).mkdir(parents=True)

    monkeypatch.setattr(aarch64, "_run", fake_run)
    monkeypatch.setattr(aarch64, "_foreign_architectures", lambda: ["arm64"])
    monkeypatch.setattr(aarch64, "find_qemu", lambda: "/usr/bin/qemu-aarch64-static")
    monkeypatch.setattr(aarch64, "_precompile", lambda tree, say: None)
    said: list[str] = []
    env = aarch64.ensure_aarch64_env(tmp_path, say=said.append)
    download = next(c for c in calls if c[:2] == ["apt-get", "download"])
    assert "python3.11:arm64" in download and "libstdc++6:arm64" in download and "media-types" in download
    assert sum(c[:2] == ["dpkg", "-x"] for c in calls) == len(aarch64.DEBS)
    pip = next(c for c in calls if "pip" in c)
    assert "manylinux2014_aarch64" in pip and f"onnxruntime=={aarch64.ORT_VERSION}" in pip and "3.11" in pip
    assert env.root == tmp_path / aarch64.env_key() / "sysroot" and env.python.exists()
    assert (env.root / "usr/lib/python3/dist-packages").is_dir()  # shadows the host's x86 dist-packages
    assert not (tmp_path / aarch64.env_key() / "debs").exists() and "aarch64 tree ready" in said[-1]
    calls.clear()
    assert aarch64.ensure_aarch64_env(tmp_path) == env and calls == []


def test_a_failed_download_says_which_step_and_leaves_nothing(monkeypatch, tmp_path):
    monkeypatch.setattr(aarch64, "_foreign_architectures", lambda: ["arm64"])
    monkeypatch.setattr(aarch64, "find_qemu", lambda: "/usr/bin/qemu-aarch64-static")
    monkeypatch.setattr(aarch64.os, "geteuid", lambda: 1000)
    monkeypatch.setattr(aarch64.shutil, "which", lambda name: f"/usr/bin/{name}" if name != "apt-get" else
                        str(tmp_path / "apt-get"))
    fake = tmp_path / "apt-get"
    fake.write_text("#!/bin/sh\necho 'E: Unable to locate package python3.11:arm64' >&2\nexit 100\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    with pytest.raises(aarch64.EmulationUnavailableError, match=r"apt-get download \(arm64\) failed \(exit 100\)"):
        aarch64.ensure_aarch64_env(tmp_path / "cache")
    assert [p.name for p in (tmp_path / "cache").iterdir()] == []
    helped = subprocess.run([sys.executable, "-m", "controller.demo.aarch64", "agent", "--", "--help"],
                            capture_output=True, text=True, timeout=300, cwd=aarch64.REPO)
    assert helped.returncode == 0 and "usage: python -m agent" in helped.stdout, helped.stderr
