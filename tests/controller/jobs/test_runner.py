"""Job store + local runner: queueing limit, progress, cancellation, restart recovery."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from controller.jobs import (
    INTERRUPTED_REASON,
    InvalidJobSpecError,
    JobConflictError,
    JobContext,
    JobKind,
    JobNotFoundError,
    JobState,
    JobStore,
    LocalJobRunner,
)
from fleetsim.waiting import wait_until


class Gate:
    """A job kind that reports progress until released, and records how many ran at once."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.lock = threading.Lock()
        self.active = 0
        self.peak = 0

    def run(self, ctx: JobContext) -> dict:
        with self.lock:
            self.active += 1
            self.peak = max(self.peak, self.active)
        try:
            i = 0
            while not self.release.is_set():
                ctx.progress(min(90, i), "working")
                i += 1
                time.sleep(0.01)
            ctx.progress(100, "done")
            return {"echo": ctx.job.spec.get("x")}
        finally:
            with self.lock:
                self.active -= 1


def validate(spec: dict, services) -> dict:
    if "bad" in spec:
        raise InvalidJobSpecError("parameter 'bad' is not allowed")
    return spec


def fail(ctx: JobContext) -> dict:
    ctx.progress(10, "about to fail")
    raise RuntimeError("boom")


@pytest.fixture
def gate() -> Gate:
    return Gate()


@pytest.fixture
def runner(tmp_path: Path, gate: Gate):
    store = JobStore(tmp_path / "jobs.sqlite")
    r = LocalJobRunner(store, {"gate": JobKind("gate", gate.run, validate), "fail": JobKind("fail", fail)},
                       max_workers=2, workspace=tmp_path, poll_interval=0.05)
    r.start()
    yield r
    gate.release.set()
    r.shutdown()
    store.close()


def test_at_most_max_workers_run_and_the_rest_queue(runner: LocalJobRunner, gate: Gate) -> None:
    jobs = [runner.submit("gate", {"x": i}) for i in range(4)]
    wait_until(lambda: runner.store.counts()["running"] == 2)
    time.sleep(0.2)
    assert runner.store.counts()["queued"] == 2
    assert gate.peak == 2
    running = wait_until(lambda: [j for j in runner.list(state=JobState.RUNNING)[0] if j.progress > 0])
    assert running[0].stage == "working"
    gate.release.set()
    for j in jobs:
        done = wait_until(lambda j=j: runner.get(j.id).state.terminal and runner.get(j.id))
        assert done.state is JobState.SUCCEEDED, done.error
        assert done.progress == 100
        assert done.result == {"echo": j.spec["x"]}
        assert done.duration_s is not None and done.queue_s is not None
    assert gate.peak == 2


def test_cancel_running_and_queued(runner: LocalJobRunner) -> None:
    a, b, c = (runner.submit("gate", {"x": i}) for i in range(3))
    wait_until(lambda: runner.get(b.id).state is JobState.RUNNING)
    queued = runner.cancel(c.id)
    assert queued.state is JobState.CANCELLED
    runner.cancel(a.id)
    done = wait_until(lambda: runner.get(a.id).state.terminal and runner.get(a.id))
    assert done.state is JobState.CANCELLED and done.cancel_requested
    with pytest.raises(JobConflictError, match="already cancelled"):
        runner.cancel(a.id)
    with pytest.raises(JobNotFoundError):
        runner.cancel("nope")


def test_failure_and_bad_spec(runner: LocalJobRunner) -> None:
    job = runner.submit("fail", {})
    done = wait_until(lambda: runner.get(job.id).state.terminal and runner.get(job.id))
    assert done.state is JobState.FAILED and "RuntimeError: boom" in done.error
    with pytest.raises(InvalidJobSpecError, match="'bad'"):
        runner.submit("gate", {"bad": 1})
    with pytest.raises(InvalidJobSpecError, match="unknown job kind"):
        runner.submit("nope", {})


def test_restart_fails_interrupted_and_runs_queued(tmp_path: Path, gate: Gate) -> None:
    store = JobStore(tmp_path / "jobs.sqlite")
    running = store.create("gate", {"x": 1})
    assert store.claim_next().id == running.id  # a previous process took it, then died
    queued = store.create("gate", {"x": 2})
    store.close()

    gate.release.set()
    store2 = JobStore(tmp_path / "jobs.sqlite")
    r = LocalJobRunner(store2, {"gate": JobKind("gate", gate.run)}, max_workers=1, workspace=tmp_path,
                       poll_interval=0.05)
    r.start()
    try:
        failed = r.get(running.id)
        assert failed.state is JobState.FAILED and failed.error == INTERRUPTED_REASON
        done = wait_until(lambda: r.get(queued.id).state.terminal and r.get(queued.id))
        assert done.state is JobState.SUCCEEDED
    finally:
        r.shutdown()
        store2.close()


def test_shutdown_interrupts_running_job(tmp_path: Path, gate: Gate) -> None:
    store = JobStore(tmp_path / "jobs.sqlite")
    r = LocalJobRunner(store, {"gate": JobKind("gate", gate.run)}, max_workers=1, workspace=tmp_path,
                       poll_interval=0.05)
    r.start()
    job = r.submit("gate", {})
    wait_until(lambda: r.get(job.id).state is JobState.RUNNING)
    r.shutdown()
    after = store.get(job.id)
    assert after.state is JobState.FAILED and "shutdown" in after.error
    store.close()
