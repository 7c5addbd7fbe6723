"""The agent extra installs into a clean venv and imports without torch, fastapi or onnx (a Pi has no room)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

CHECK = """
import sys
import agent.daemon, agent.bench, agent.bench_child, agent.cli, agent.update.machine
heavy = sorted(m for m in ("torch", "fastapi", "onnx", "transformers", "uvicorn") if m in sys.modules)
assert not heavy, heavy
for m in ("torch", "onnx", "fastapi"):
    try:
        __import__(m)
    except ImportError:
        pass
    else:
        raise AssertionError(m + " is installed in the agent-only venv")
from agent.runtimes import available_formats
assert available_formats() == ["onnx"], available_formats()
print("ok")
"""


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_agent_extra_in_clean_venv(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    for pkg in ("agent", "common"):
        shutil.copytree(REPO / pkg, src / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)  # clean: no system site-packages
    py = venv / "bin" / "python"
    subprocess.run(
        [str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check", f"{src}[agent]"],
        check=True, cwd=tmp_path, timeout=540,
    )
    run = dict(cwd=tmp_path, capture_output=True, text=True, timeout=60)
    out = subprocess.run([str(py), "-c", CHECK], **run)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
    helped = subprocess.run([str(py), "-m", "agent", "--help"], **run)
    assert helped.returncode == 0 and "--controller-key" in helped.stdout, helped.stderr


BLOCKED = """
import sys
for name in ("torch", "onnx", "fastapi", "transformers", "onnxscript", "uvicorn"):
    sys.modules[name] = None  # any import of these now raises ImportError
import agent.daemon, agent.bench, agent.cli, agent.__main__, agent.update.machine
from agent.bench import BenchSpec, measure
from pathlib import Path
m = measure(BenchSpec(Path(sys.argv[1]), Path(sys.argv[2]), "onnx", "cosine", runs=2, warmup=0))
assert m.quality > 0.999, m
print("ok")
"""


def test_agent_runs_with_heavy_packages_blocked(tmp_path, keypair, reference):
    """Fast guard (the clean-venv test is slow): the agent imports and benchmarks with torch/onnx/fastapi blocked."""
    model = tmp_path / "m.onnx"
    model.write_bytes(reference.good_model())
    golden = reference.write_golden(tmp_path / "g.npz")
    out = subprocess.run([sys.executable, "-c", BLOCKED, str(model), str(golden)], cwd=REPO, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_cli_refuses_bad_config_with_exit_2(tmp_path):
    args = ["--device-id", "d1", "--fleet", "f", "--profile", "no-such-profile", "--data-dir", str(tmp_path),
            "--controller-key", str(tmp_path / "missing.pub")]
    out = subprocess.run([sys.executable, "-m", "agent", *args], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "unknown profile 'no-such-profile'" in out.stderr
    bad_id = subprocess.run([sys.executable, "-m", "agent", *args[:1], "a/b", *args[2:]], cwd=REPO,
                            capture_output=True, text=True, timeout=60)
    assert bad_id.returncode == 2 and "invalid device id" in bad_id.stderr


def test_edgefleet_cli_has_the_agent_subcommand():
    from agent.cli import run
    from controller.cli import build_parser

    args = build_parser().parse_args(
        ["agent", "--device-id", "d1", "--fleet", "f", "--profile", "rpi4", "--broker", "10.0.0.2:8883",
         "--data-dir", "/tmp/d1", "--controller-key", "/tmp/k.pub", "--telemetry-interval", "7"]
    )
    assert args.func is run and args.broker == ("10.0.0.2", 8883) and args.telemetry_interval == 7.0
