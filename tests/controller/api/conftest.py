"""A real controller (``edgefleet controller`` in a subprocess, uvicorn on a free loopback port) + httpx."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from controller.api.auth import Role, generate_key
from controller.broker import free_port
from tests.tiny_models import tiny_mlp_onnx as tiny_onnx

REPO = Path(__file__).resolve().parents[3]



@dataclass
class Controller:
    """A controller process under test."""

    url: str
    workspace: Path
    env: dict[str, str]
    port: int
    keys: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen | None = None
    log_path: Path | None = None

    def client(self, key: str | None = "admin", timeout: float = 30.0) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.keys[key]}"} if key else {}
        return httpx.Client(base_url=self.url + "/api/v1", headers=headers, timeout=timeout)

    def start(self, timeout: float = 30.0) -> Controller:
        self.log_path = self.workspace.parent / f"controller-{self.port}.log"
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "controller.cli", "controller", "--host", "127.0.0.1", "--port", str(self.port)],
            cwd=REPO, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"controller exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if httpx.get(self.url + "/api/v1/health", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"controller did not answer in {timeout}s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-5000:] if self.log_path else ""

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            os.kill(self.proc.pid, sig)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self.proc = None


def make_controller(tmp: Path, **env_extra: str) -> Controller:
    admin, admin_entry = generate_key("admin", Role.READ_WRITE)
    viewer, viewer_entry = generate_key("viewer", Role.READ_ONLY)
    port = free_port()
    workspace = tmp / "workspace"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EDGEFLEET_", "COMPRESSION_", "MAX_COMPRESSION"))}
    env.update({
        "COMPRESSION_WORKSPACE": str(workspace), "MAX_COMPRESSION_JOBS": "2",
        "EDGEFLEET_API_KEYS": f"{admin_entry},{viewer_entry}",
        "EDGEFLEET_JOB_PLUGINS": "tests.controller.api.plugin_kinds",
        "EDGEFLEET_MAX_UPLOAD_MB": "1", "EDGEFLEET_CACHE": str(tmp / "cache"),
        "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1",
    })
    env.update(env_extra)
    return Controller(url=f"http://127.0.0.1:{port}", workspace=workspace, env=env, port=port,
                      keys={"admin": admin, "viewer": viewer, "bogus": "efk_not-a-key"})


class InProcessController(Controller):
    """The same controller under a real uvicorn on a free port, but in a thread of the test process.

    Used where the test is about API behaviour rather than process boundaries: coverage
    sees the server code, and jobs run in worker threads (``EDGEFLEET_JOB_ISOLATION=thread``)
    so the job kinds are measured too. Restart, crash and CLI tests use the subprocess one.
    """

    server: object | None = None
    thread: threading.Thread | None = None

    def start(self, timeout: float = 30.0) -> Controller:
        import uvicorn

        from controller.api.app import create_app
        from controller.settings import Settings

        env = {k.lower(): v for k, v in self.env.items()
               if k.startswith(("EDGEFLEET_", "COMPRESSION_", "MAX_COMPRESSION", "MODEL_COMPRESSION"))}
        env["edgefleet_job_isolation"] = "thread"
        settings = Settings.model_validate(env)
        config = uvicorn.Config(create_app(settings), host="127.0.0.1", port=self.port, log_level="warning",
                                lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="uvicorn-under-test", daemon=True)
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("in-process controller did not start")
            time.sleep(0.05)
        return self

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.server is not None:
            self.server.should_exit = True
            self.thread.join(30)
            self.server = None


@pytest.fixture(scope="module")
def controller(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Controller]:
    tmp = tmp_path_factory.mktemp("ctl")
    base = make_controller(tmp)
    ctl = InProcessController(url=base.url, workspace=base.workspace, env=base.env, port=base.port, keys=base.keys)
    ctl.start()
    try:
        yield ctl
    finally:
        ctl.stop()


@pytest.fixture(scope="module")
def api(controller: Controller) -> Iterator[httpx.Client]:
    with controller.client("admin") as client:
        yield client


@pytest.fixture(scope="module")
def model_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_onnx(tmp_path_factory.mktemp("onnx") / "tiny.onnx")


def wait_job(client: httpx.Client, job_id: str, timeout: float = 60.0, states=("succeeded", "failed", "cancelled")):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/compression/jobs/{job_id}").json()["data"]
        if job["state"] in states:
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} still {job['state']} after {timeout}s")
