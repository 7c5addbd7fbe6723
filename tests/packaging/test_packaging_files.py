"""The files that put edgefleet on a device: systemd unit, install script, container files."""

from __future__ import annotations

import configparser
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
UNIT = REPO / "packaging" / "systemd" / "edgefleet-agent.service"


def _unit() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # systemd keys are case-sensitive
    parser.read(UNIT)
    return parser


def test_unit_runs_unprivileged_restarts_on_failure_and_is_hardened():
    unit = _unit()["Service"]
    assert unit["User"] == "edgefleet" and unit["StateDirectory"] == "edgefleet"
    assert unit["Restart"] == "on-failure"
    assert set(unit["RestartPreventExitStatus"].split()) == {"2", "3"}  # bad config, refused credentials
    assert "--config /etc/edgefleet/agent.toml" in unit["ExecStart"]
    for key in ("NoNewPrivileges", "ProtectHome", "PrivateTmp", "ProtectKernelTunables", "RestrictSUIDSGID"):
        assert unit[key] == "yes", key
    assert unit["ProtectSystem"] == "strict" and unit["CapabilityBoundingSet"] == ""


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze not installed")
def test_unit_verifies_and_has_a_low_exposure(tmp_path):
    unit = tmp_path / "edgefleet-agent.service"
    unit.write_text(UNIT.read_text().replace("/opt/edgefleet/venv/bin/python", sys.executable))
    verify = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert verify.returncode == 0 and "edgefleet-agent" not in verify.stderr, verify.stderr
    security = subprocess.run(["systemd-analyze", "security", "--offline=yes", str(unit)], capture_output=True,
                              text=True, timeout=60)
    level = float(re.search(r"Overall exposure level for \S+: ([0-9.]+)", security.stdout).group(1))
    assert level <= 2.5, security.stdout[-2000:]


def test_install_script_refuses_what_is_not_a_bundle(tmp_path):
    script = REPO / "packaging" / "install-agent.sh"
    out = subprocess.run(["bash", str(script), "--bundle", str(tmp_path), "--root", str(tmp_path / "r"),
                          "--no-system"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "agent.toml is missing" in out.stderr
    assert subprocess.run(["bash", str(script)], capture_output=True, text=True).returncode == 2


def test_container_files_run_unprivileged_and_start_from_the_bundle():
    agent = (REPO / "packaging" / "agent.Dockerfile").read_text()
    assert "USER edgefleet" in agent and '"--config", "/etc/edgefleet/agent.toml"' in agent
    assert ".[agent]" in agent and "torch" not in agent
    controller = (REPO / "packaging" / "controller.Dockerfile").read_text()
    assert "torch==2.13.0" in controller and "mosquitto" in controller
    entry = (REPO / "packaging" / "controller-entrypoint.sh").read_text()
    assert "su edgefleet" in entry and "edgefleet broker" in entry
    for path in (REPO / "packaging" / "controller-entrypoint.sh", REPO / "packaging" / "install-agent.sh"):
        assert subprocess.run(["sh", "-n", str(path)]).returncode == 0


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_install_script_installs_agent_unit_and_bundle(tmp_path):
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "agent.toml").write_text('[device]\nid = "pi-9"\nfleet = "f"\nprofile = "rpi4"\n[broker]\nhost = "h"\n'
                                       'port = 8883\npassword_file = "password"\ntls_ca = "ca.pem"\n[controller]\n'
                                       'public_key = "controller.pub"\n[paths]\ndata_dir = "/tmp/x"\n')
    for name in ("password", "controller.pub", "ca.pem"):
        (bundle / name).write_text(name)
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    for pkg in ("agent", "common", "profiles"):
        shutil.copytree(REPO / pkg, src / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    root = tmp_path / "root"
    out = subprocess.run(["bash", str(REPO / "packaging" / "install-agent.sh"), "--bundle", str(bundle), "--source",
                          str(src), "--root", str(root), "--no-system"], capture_output=True, text=True, timeout=850,
                         env={"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "PYTHON": sys.executable})
    assert out.returncode == 0, out.stderr[-3000:]
    assert (root / "etc/systemd/system/edgefleet-agent.service").read_text() == UNIT.read_text()
    assert oct((root / "etc/edgefleet/password").stat().st_mode & 0o777) == "0o640"
    assert 'data_dir = "/var/lib/edgefleet"' in (root / "etc/edgefleet/agent.toml").read_text()
    # exactly what the unit runs, with nothing from this checkout on the path
    helped = subprocess.run([str(root / "opt/edgefleet/venv/bin/python"), "-m", "agent", "--help"],
                            capture_output=True, text=True, timeout=60, cwd=tmp_path, env={"PATH": "/usr/bin:/bin"})
    assert helped.returncode == 0 and "--config" in helped.stdout
