"""Issue #13 C: a job never outlives the controller that started it by more than a few seconds.

Before: after ``kill -9`` of the controller, job processes kept running (they held the write end of
the fork server's liveness pipe, so the fork server never saw EOF, and they compared ``getppid()``
with the fork server), finished, wrote versions and marked themselves succeeded with no controller;
after a quick restart up to 2x ``MAX_COMPRESSION_JOBS`` job processes ran.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import psutil

from tests.controller.api.conftest import make_controller, tiny_onnx, wait_job


def _alive(pids: set[int]) -> set[int]:
    out = set()
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                out.add(pid)
        except psutil.NoSuchProcess:
            pass
    return out


def test_kill9_of_the_controller_takes_its_jobs_down(tmp_path: Path) -> None:
    ctl = make_controller(tmp_path, MAX_COMPRESSION_JOBS="2", EDGEFLEET_JOB_ISOLATION="process").start()
    try:
        with ctl.client() as api:
            path = tiny_onnx(tmp_path / "m.onnx")
            vid = api.post("/compression/models", data={"name": "m"},
                           files={"file": ("m.onnx", path.read_bytes())}).json()["data"]["version"]["id"]
            body = {"version_id": vid, "technique": "quant-test-slow", "config": {"seconds": 20}}
            jobs = [api.post("/compression/quantize", json=body).json()["data"] for _ in range(2)]
            deadline = time.monotonic() + 60  # the fork server imports numpy/onnx/... before the first fork
            while any(api.get(f"/compression/jobs/{j['id']}").json()["data"]["progress"] < 2 for j in jobs):
                assert time.monotonic() < deadline, "jobs did not start"
                time.sleep(0.1)
        descendants = {p.pid for p in psutil.Process(ctl.proc.pid).children(recursive=True)}
        assert len(descendants) >= 3  # the fork server and two job processes (plus helpers)
        ctl.stop(signal.SIGKILL)
        deadline = time.monotonic() + 5
        while _alive(descendants) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _alive(descendants), f"job processes outlived the controller: {_alive(descendants)}"

        ctl.start()  # restart at once: the old jobs are interrupted and never finish later
        with ctl.client() as api:
            for job in jobs:
                after = api.get(f"/compression/jobs/{job['id']}").json()["data"]
                assert after["state"] == "failed" and after["error"] == "interrupted by controller restart"
            fresh = [api.post("/compression/quantize", json={**body, "config": {"seconds": 1}}).json()["data"]
                     for _ in range(2)]
            for job in fresh:
                assert wait_job(api, job["id"])["state"] == "succeeded"
            for job in jobs:  # nothing left running wrote a late result
                assert api.get(f"/compression/jobs/{job['id']}").json()["data"]["state"] == "failed"
            versions = api.get("/compression/models/m/versions").json()["data"]["items"]
            assert len(versions) == 3  # the upload and the two fresh jobs; none from the killed ones
    finally:
        ctl.stop()
