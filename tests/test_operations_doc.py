"""docs/operations.md is a test: its walkthrough's shell commands run here, as written, in order.

The only things the harness adds are what a person at a terminal adds: free ports and a
temporary folder in the environment, the model file they already have, and waiting for the
controller to answer before typing the next command. Background processes (`&`) are stopped
at the end.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from controller.broker import free_port
from tests.controller.api.conftest import tiny_onnx

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "operations.md"

pytestmark = pytest.mark.timeout(600)


def walkthrough_blocks() -> list[str]:
    """The ```bash blocks between '## Walkthrough' and the next '## ' heading."""
    text = DOC.read_text()
    section = text.split("## Walkthrough", 1)[1].split("\n## ", 1)[0]
    return [b.strip() for b in re.findall(r"```bash\n(.*?)```", section, flags=re.S)]


def test_walkthrough_counts_five_commands_to_a_first_committed_device():
    commands = [line for block in walkthrough_blocks() for line in block.splitlines() if line.strip()]
    first_device = [c for c in commands if "pi-2" not in c or "deploy create" in c]
    before_deploy = first_device[: next(i for i, c in enumerate(first_device) if "deploy create" in c) + 1]
    assert len(before_deploy) == 5, before_deploy
    assert "5 commands" in DOC.read_text()


def _wait_health(url: str, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/api/v1/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise AssertionError(f"controller at {url} did not answer in {timeout}s")


def test_operations_walkthrough_runs_as_written():
    work = Path(tempfile.mkdtemp(prefix="ef-ops-"))
    work.chmod(0o755)  # the broker account (mosquitto, when run as root) keeps its files below
    api_port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EDGEFLEET_", "COMPRESSION_"))}
    env.update({
        "PATH": f"{Path(sys.executable).parent}:{env.get('PATH', '/usr/bin:/bin')}",
        "PYTHONPATH": str(REPO), "COMPRESSION_WORKSPACE": str(work / "workspace"),
        "EDGEFLEET_API_PORT": str(api_port), "EDGEFLEET_URL": f"http://127.0.0.1:{api_port}",
        "EDGEFLEET_BROKER_PORT": str(free_port()), "EDGEFLEET_BROKER_TLS_PORT": str(free_port()),
        "EDGEFLEET_JOB_ISOLATION": "thread", "OMP_NUM_THREADS": "1",
    })
    # what the reader already has: a model and real inputs for it
    tiny_onnx(work / "model.onnx")
    np.savez(work / "samples.npz", input=np.random.default_rng(0).standard_normal((24, 16)).astype(np.float32))
    background: list[subprocess.Popen] = []
    log = (work / "walkthrough.log").open("ab")
    try:
        for i, block in enumerate(walkthrough_blocks()):
            # output to a file, not a pipe: a background child keeps a pipe open after bash returns
            out_path = work / f"block-{i}.out"
            with out_path.open("w") as out_file:
                proc = subprocess.Popen(["bash", "-e", "-c", block], cwd=work, env=env, stdout=out_file,
                                        stderr=log, start_new_session=True)
            background.append(proc)
            proc.wait(timeout=400)
            out = out_path.read_text()
            assert proc.returncode == 0, f"`{block}` failed:\n{out}\n{_tail(work)}"
            if "controller" in block and "&" in block:
                _wait_health(env["EDGEFLEET_URL"])
            if "fleet status" in block:
                rows = [line.split() for line in out.splitlines() if line.startswith("pi-")]
                assert [(r[0], r[1]) for r in rows] == [("pi-1", "yes"), ("pi-2", "yes")], out
        # both devices run the uploaded model, and applications on pi-1 can call it
        with httpx.Client(base_url=env["EDGEFLEET_URL"] + "/api/v1") as api:
            devices = {d["id"]: d for d in api.get("/devices").json()["data"]}
            versions = api.get("/compression/models/my-model/versions").json()["data"]["items"]
        assert {d["active"]["version"] for d in devices.values()} == {versions[-1]["id"]}
        from agent.client import InferenceClient

        sock = work / "pi-1" / "state" / "serve.sock"
        res = InferenceClient(socket_path=sock).infer({"input": np.ones((2, 16), np.float32)})
        assert res.version == versions[-1]["id"] and res.outputs["output"].shape == (2, 8)
    finally:
        for proc in reversed(background):
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        time.sleep(3)
        for proc in background:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        log.close()
        shutil.rmtree(work, ignore_errors=True)


def _tail(work: Path) -> str:
    path = work / "walkthrough.log"
    return path.read_text(errors="replace")[-4000:] if path.exists() else ""
