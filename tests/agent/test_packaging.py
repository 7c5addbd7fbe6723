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


PY39 = Path("/root/.pyenv/versions/3.9.18/bin/python")
CLIENT39 = """
import sys
import numpy as np
from agent.client import InferenceClient
res = InferenceClient(socket_path=sys.argv[1]).infer({"x": np.load(sys.argv[2])})
print(res.version, float(np.abs(res.outputs["y"] - np.load(sys.argv[3])).max()))
"""


def _oldest_python() -> Path | None:
    """The oldest interpreter here the agent must support (3.9: Raspberry Pi OS 11); pyenv shims may not run."""
    for candidate in (str(PY39), shutil.which("python3.9")):
        if candidate and subprocess.run([candidate, "-c", "import sys; assert sys.version_info[:2] == (3, 9)"],
                                        capture_output=True).returncode == 0:
            return Path(candidate)
    return None


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_agent_extra_on_python39_commits_and_serves(tmp_path, controller, mosquitto, fleet, keypair, reference):
    """The agent extra installed under Python 3.9 in a throwaway venv: downloads, verifies, benchmarks and
    commits a real artifact, then serves it to a 3.9 application through agent.client."""
    import numpy as np

    from .artifacts import make_artifact

    py39 = _oldest_python()
    if py39 is None:
        pytest.skip("no Python 3.9 interpreter on this machine")
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    for pkg in ("agent", "common", "profiles"):
        shutil.copytree(REPO / pkg, src / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    venv = tmp_path / "venv39"
    subprocess.run([str(py39), "-m", "venv", str(venv)], check=True)
    py = venv / "bin" / "python"
    subprocess.run([str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check", f"{src}[agent]"],
                   check=True, cwd=tmp_path, timeout=800)
    version = subprocess.run([str(py), "-c", "import sys; print(sys.version_info[:2])"], capture_output=True,
                             text=True, check=True).stdout.strip()
    assert version == "(3, 9)"

    import tempfile

    sock = Path(tempfile.mkdtemp(prefix="ef39", dir="/tmp")) / "s.sock"
    pw = tmp_path / "pw"
    pw.write_text(mosquitto.add_user("py39-1"))
    args = ["-m", "agent", "--device-id", "py39-1", "--fleet", fleet, "--profile", "x86-edge", "--broker",
            f"{mosquitto.host}:{mosquitto.port}", "--password-file", str(pw), "--data-dir", str(tmp_path / "data"),
            "--controller-key", str(keypair[1]), "--threads", "1", "--bench-runs", "8", "--bench-warmup", "2",
            "--serve-socket", str(sock)]
    log = tmp_path / "agent39.log"
    proc = subprocess.Popen([str(py), *args], cwd=tmp_path, stdout=log.open("wb"), stderr=subprocess.STDOUT,
                            env={"PATH": "/usr/bin:/bin", "EDGEFLEET_PROFILES_DIR": str(REPO / "profiles")})
    try:
        v1 = make_artifact(tmp_path, reference.good_model(), reference, keypair[0], version="v1")
        controller.wait_for(lambda: "py39-1" in controller.states, 60, "the 3.9 agent's birth")
        controller.deploy("py39-1", v1, "dep-39")
        states = [r.state for r in controller.wait_outcome("py39-1", "dep-39", timeout=120)]
        assert states == ["download", "verify", "install", "benchmark", "commit", "idle"], log.read_text()[-2000:]
        x, y = tmp_path / "x.npy", tmp_path / "y.npy"
        np.save(x, reference.inputs[:3])
        np.save(y, reference.outputs()[:3])
        out = subprocess.run([str(py), "-c", CLIENT39, str(sock), str(x), str(y)], capture_output=True, text=True,
                             timeout=60, cwd=tmp_path)
        assert out.returncode == 0, out.stderr
        served, error = out.stdout.split()
        assert served == "v1" and float(error) < 1e-3
    finally:
        proc.terminate()
        assert proc.wait(20) == 0, log.read_text()[-2000:]
        shutil.rmtree(sock.parent, ignore_errors=True)
