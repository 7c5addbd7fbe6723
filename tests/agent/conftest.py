"""Agent test fixtures: signing key, reference model, controller stub, agent factories (in-process, subprocess)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.config import AgentConfig
from agent.daemon import Agent
from common.keys import generate_keypair
from fleetsim.controller_stub import ControllerStub

from .artifacts import Reference

REPO = Path(__file__).resolve().parents[2]
FAST = dict(bench_runs=8, bench_warmup=2, rerequest_interval_s=1.0, telemetry_interval_s=2.0, threads=1)


@pytest.fixture(scope="module")
def keypair(tmp_path_factory: pytest.TempPathFactory):
    folder = tmp_path_factory.mktemp("keys")
    key = generate_keypair(folder / "ctl.key", folder / "ctl.pub")
    return key, folder / "ctl.pub"


@pytest.fixture(scope="module")
def reference() -> Reference:
    return Reference.make()


@pytest.fixture
def fleet() -> str:
    return f"t{uuid.uuid4().hex[:8]}"


@pytest.fixture
def controller(mosquitto, fleet, keypair) -> Iterator[ControllerStub]:
    stub = ControllerStub(mosquitto.host, mosquitto.port, mosquitto.credentials.users["controller"], fleet,
                          key=keypair[0])
    try:
        yield stub
    finally:
        stub.close()


@pytest.fixture
def start_agent(mosquitto, fleet, keypair, tmp_path) -> Iterator:
    """Factory for in-process agents (real MQTT, real benchmark subprocesses)."""
    agents: list[Agent] = []

    def start(device_id: str, profile: str = "x86-edge", **overrides) -> Agent:
        password = mosquitto.add_user(device_id)
        cfg = AgentConfig(
            device_id=device_id,
            fleet=fleet,
            profile_id=profile,
            data_dir=tmp_path / device_id,
            controller_key=keypair[1],
            broker_host=mosquitto.host,
            broker_port=mosquitto.port,
            username=device_id,
            password=password,
            **{**FAST, **overrides},
        )
        agent = Agent(cfg)
        agent.start()
        assert agent.connected.wait(10), f"{device_id} did not connect"
        agents.append(agent)
        return agent

    yield start
    for agent in agents:
        agent.stop()


class AgentProcess:
    """``python -m agent`` as a real OS process, for SIGKILL tests."""

    def __init__(self, args: list[str], log_path: Path) -> None:
        self.args = args
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> AgentProcess:
        env = dict(os.environ, PYTHONPATH=str(REPO))
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "agent", *self.args], stdout=log, stderr=log,
                                     env=env, cwd=REPO)
        return self

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def terminate(self) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.terminate()
        try:
            return self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(5)


@pytest.fixture
def agent_process(mosquitto, fleet, keypair, tmp_path) -> Iterator:
    """Factory for agent subprocesses; every process is stopped at teardown."""
    procs: list[AgentProcess] = []

    def make(device_id: str, profile: str = "x86-edge", extra: list[str] | None = None) -> AgentProcess:
        password = mosquitto.add_user(device_id)
        pw_file = tmp_path / f"{device_id}.pw"
        pw_file.write_text(password)
        args = [
            "--device-id", device_id, "--fleet", fleet, "--profile", profile,
            "--broker", f"{mosquitto.host}:{mosquitto.port}", "--password-file", str(pw_file),
            "--data-dir", str(tmp_path / device_id), "--controller-key", str(keypair[1]),
            "--threads", "1", "--bench-runs", "8", "--bench-warmup", "2", "--rerequest-interval", "1",
            "--telemetry-interval", "2", *(extra or []),
        ]
        proc = AgentProcess(args, tmp_path / f"{device_id}.log")
        procs.append(proc)
        return proc

    yield make
    for proc in procs:
        proc.terminate()
