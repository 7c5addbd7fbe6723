"""Process isolation: jobs in niced worker processes, supervised (cancel grace, crash, shutdown)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from controller.jobs import JobState, JobStore, LocalJobRunner
from controller.jobs.kinds import plugin_kinds
from controller.jobs.worker import child_main
from fleetsim.waiting import wait_until

PLUGIN = "tests.controller.jobs.plugin_kinds"


def child_config(tmp_path: Path, nice: int = 0) -> dict:
    return {"settings": {"compression_workspace": str(tmp_path), "job_plugins": PLUGIN}, "nice": nice}


@pytest.fixture
def runner(tmp_path: Path):
    store = JobStore(tmp_path / "jobs.sqlite")
    r = LocalJobRunner(store, plugin_kinds(PLUGIN), max_workers=2, workspace=tmp_path, poll_interval=0.05,
                       isolation="process", child_config=child_config(tmp_path, nice=19))
    r.CANCEL_GRACE_S = 1.0
    r.start()
    yield r
    r.shutdown()
    store.close()


def done(runner: LocalJobRunner, job_id: str, timeout: float = 60):
    return wait_until(lambda: runner.get(job_id).state.terminal and runner.get(job_id), timeout)


def test_jobs_run_in_other_processes_and_cancel(runner: LocalJobRunner) -> None:
    echo = runner.submit("echo", {"x": 41})
    result = done(runner, echo.id)
    assert result.state is JobState.SUCCEEDED and result.result["echo"] == 41
    assert result.result["pid"] != os.getpid()
    slow = runner.submit("slow", {})
    wait_until(lambda: runner.get(slow.id).progress > 0, 60)
    runner.cancel(slow.id)
    cancelled = done(runner, slow.id)
    assert cancelled.state is JobState.CANCELLED and cancelled.error == "cancelled by request"


def test_supervisor_stops_deaf_job_after_grace_and_reports_crashes(runner: LocalJobRunner) -> None:
    deaf = runner.submit("deaf", {"seconds": 120})
    wait_until(lambda: runner.get(deaf.id).state is JobState.RUNNING, 60)
    time.sleep(0.5)
    runner.cancel(deaf.id)
    stopped = done(runner, deaf.id, timeout=30)
    assert stopped.state is JobState.CANCELLED and "worker stopped after" in stopped.error
    crash = runner.submit("crash", {})
    failed = done(runner, crash.id)
    assert failed.state is JobState.FAILED and "exited with code 7" in failed.error


def test_shutdown_fails_running_process_job(tmp_path: Path) -> None:
    store = JobStore(tmp_path / "jobs.sqlite")
    r = LocalJobRunner(store, plugin_kinds(PLUGIN), max_workers=1, workspace=tmp_path, poll_interval=0.05,
                       isolation="process", child_config=child_config(tmp_path))
    r.start()
    job = r.submit("slow", {})
    wait_until(lambda: r.get(job.id).progress > 0, 60)
    r.shutdown()
    after = store.get(job.id)
    assert after.state is JobState.FAILED and after.error == "interrupted by controller shutdown"
    store.close()


def test_child_main_runs_a_claimed_job_in_this_process(tmp_path: Path) -> None:
    store = JobStore(tmp_path / "jobs.sqlite")
    job = store.create("echo", {"x": "hi"})
    assert store.claim_next().id == job.id
    child_main(job.id, child_config(tmp_path))
    finished = store.get(job.id)
    assert finished.state is JobState.SUCCEEDED and finished.result["echo"] == "hi"
    assert not (tmp_path / "jobs" / job.id).exists()  # scratch directory removed
    store.close()


def test_bad_isolation_settings() -> None:
    with pytest.raises(ValueError, match="isolation"):
        LocalJobRunner(None, {}, max_workers=1, workspace=Path("."), isolation="fiber")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="child_config"):
        LocalJobRunner(None, {}, max_workers=1, workspace=Path("."), isolation="process")  # type: ignore[arg-type]
