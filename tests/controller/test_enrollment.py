"""Enrollment end to end: `edgefleet broker` (subprocess, TLS), the controller, `devices register --out`,
`edgefleet agent --config`, `devices revoke` — and an agent with a wrong password gives up with a clear error."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from agent.config import read_config_file
from agent.errors import ConfigError
from controller.broker import free_port, wait_port
from controller.cli import main as edgefleet
from tests.controller.api.conftest import REPO, Controller, InProcessController, make_controller

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def short_tmp() -> Iterator[Path]:
    folder = Path(tempfile.mkdtemp(prefix="ef-enr-"))
    folder.chmod(0o755)  # the broker account (mosquitto, when tests run as root) keeps its files here
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def broker(short_tmp: Path) -> Iterator[dict]:
    port, tls_port = free_port(), free_port()
    folder = short_tmp / "broker"
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGEFLEET_")} | {"PYTHONPATH": str(REPO)}
    log = (short_tmp / "broker.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "controller.cli", "broker", "--dir", str(folder), "--port",
                             str(port), "--tls-port", str(tls_port)], stdout=log, stderr=subprocess.STDOUT,
                            env=env, cwd=REPO)
    try:
        wait_port("127.0.0.1", tls_port, timeout=20)
        yield {"dir": folder, "port": port, "tls_port": tls_port, "proc": proc}
    finally:
        proc.terminate()
        assert proc.wait(15) == 0  # a clean stop on SIGTERM
        log.close()


@pytest.fixture(scope="module")
def ctl(tmp_path_factory: pytest.TempPathFactory, broker: dict) -> Iterator[Controller]:
    base = make_controller(tmp_path_factory.mktemp("enroll"), EDGEFLEET_BROKER_HOST="127.0.0.1",
                           EDGEFLEET_BROKER_PORT=str(broker["port"]), EDGEFLEET_BROKER_TLS_PORT=str(broker["tls_port"]),
                           EDGEFLEET_BROKER_DIR=str(broker["dir"]), EDGEFLEET_FLEET="enroll")
    c = InProcessController(url=base.url, workspace=base.workspace, env=base.env, port=base.port, keys=base.keys)
    c.start()
    try:
        yield c
    finally:
        c.stop()


def _cli(ctl: Controller, monkeypatch: pytest.MonkeyPatch, *argv: str) -> int:
    monkeypatch.setenv("EDGEFLEET_URL", ctl.url)
    monkeypatch.setenv("EDGEFLEET_API_KEY", ctl.keys["admin"])
    return edgefleet(list(argv))


def _agent(config: Path, sock: Path, log: Path, *extra: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.Popen([sys.executable, "-m", "agent", "--config", str(config), "--serve-socket", str(sock),
                             "--threads", "1", "--max-auth-failures", "2", *extra],
                            stdout=log.open("wb"), stderr=subprocess.STDOUT, env=env, cwd=REPO)


def _online(ctl: Controller, device: str) -> bool:
    with ctl.client() as api:
        r = api.get(f"/devices/{device}")
        return r.status_code == 200 and bool(r.json()["data"]["online"])


def _until(pred, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.2)
    return bool(pred())


def test_register_start_from_bundle_then_revoke(ctl, broker, short_tmp, monkeypatch, capsys):
    out = short_tmp / "bundle-e1"
    assert _cli(ctl, monkeypatch, "devices", "register", "dev-e1", "--profile", "x86-edge", "--out", str(out),
                "--data-dir", str(short_tmp / "state-e1")) == 0
    assert sorted(p.name for p in out.iterdir()) == ["agent.toml", "ca.pem", "controller.pub", "password"]
    assert oct((out / "password").stat().st_mode & 0o777) == "0o600"
    cfg = read_config_file(out / "agent.toml")
    assert cfg["device_id"] == "dev-e1" and cfg["fleet"] == "enroll" and cfg["profile_id"] == "x86-edge"
    assert cfg["broker_port"] == broker["tls_port"] and cfg["tls_ca"] == (out / "ca.pem").resolve()
    assert (out / "controller.pub").read_text() == (ctl.workspace / "keys" / "controller.pub").read_text()
    assert "agent --config" in capsys.readouterr().out

    agent = _agent(out / "agent.toml", short_tmp / "e1.sock", short_tmp / "e1.log")
    try:
        assert _until(lambda: _online(ctl, "dev-e1")), (short_tmp / "e1.log").read_text()[-3000:]
        t0 = time.monotonic()
        assert _cli(ctl, monkeypatch, "devices", "revoke", "dev-e1") == 0
        assert _until(lambda: not _online(ctl, "dev-e1"), 10), "the revoked device must be disconnected"
        assert agent.wait(60) == 3  # refused twice in a row, then it gives up
        assert time.monotonic() - t0 < 60
        log = (short_tmp / "e1.log").read_text()
        assert "refused the login of dev-e1" in log and "re-enroll" in log
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.wait(5)


def test_wrong_password_is_a_clear_error_and_bounded(ctl, short_tmp, monkeypatch):
    out = short_tmp / "bundle-e2"
    assert _cli(ctl, monkeypatch, "devices", "register", "dev-e2", "--profile", "rpi4", "--out", str(out),
                "--data-dir", str(short_tmp / "state-e2")) == 0
    (out / "password").write_text("not-the-password\n")
    agent = _agent(out / "agent.toml", short_tmp / "e2.sock", short_tmp / "e2.log")
    try:
        assert agent.wait(60) == 3
    finally:
        if agent.poll() is None:
            agent.kill()
    assert "password is wrong or the device was revoked" in (short_tmp / "e2.log").read_text()


def test_enrollment_errors_are_actionable(ctl, monkeypatch, tmp_path, capsys):
    assert _cli(ctl, monkeypatch, "devices", "register", "dev-e3", "--profile", "no-such", "--out",
                str(tmp_path / "b")) == 1
    assert "no-such" in capsys.readouterr().err
    with ctl.client("viewer") as api:  # read-only keys cannot enroll
        assert api.post("/devices/dev-e3/enroll", json={"profile": "rpi4"}).status_code == 403
    with httpx.Client(base_url=ctl.url + "/api/v1") as anon:
        assert anon.post("/devices/dev-e3/revoke").status_code == 401


def test_config_file_errors(tmp_path):
    bad = tmp_path / "agent.toml"
    bad.write_text('[device]\nid = "x"\n')
    with pytest.raises(ConfigError, match=r"\[device\] fleet is missing"):
        read_config_file(bad)
    bad.write_text("not toml = = =")
    with pytest.raises(ConfigError, match="not valid TOML"):
        read_config_file(bad)
    with pytest.raises(ConfigError, match="cannot read"):
        read_config_file(tmp_path / "missing.toml")
    env = dict(os.environ, PYTHONPATH=str(REPO))
    r = subprocess.run([sys.executable, "-m", "agent", "--fleet", "f"], capture_output=True, text=True, env=env,
                       cwd=REPO, timeout=60)
    assert r.returncode == 2 and "missing --device-id" in r.stderr and "--config" in r.stderr
