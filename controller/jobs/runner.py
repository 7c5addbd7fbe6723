"""Job runners: the interface the API talks to, and a local thread-pool implementation.

``JobRunner`` is the seam the design asks for: the API only calls ``submit``, ``cancel``,
``get`` and ``list``, so a distributed worker pool (Celery, Ray, a Kubernetes Job
controller) can replace :class:`LocalJobRunner` without touching a route.

:class:`LocalJobRunner` runs at most ``max_workers`` jobs at once in plain threads, *outside*
the event loop; the rest wait in the persisted queue. Threads rather than processes
because the heavy work (ONNX Runtime, torch kernels) releases the GIL, progress and
cancellation then need no IPC, and a tiny job does not pay a 2 s interpreter + torch
import. Cancellation is cooperative: every progress report checks the job's cancel flag
and raises :class:`Cancelled` inside the technique, which unwinds it cleanly.

On start-up the runner first marks jobs that a previous process left ``running`` as failed
("interrupted by controller restart": their partial output cannot be trusted and the
technique cannot resume mid-way), then runs the queued ones in order.
"""

from __future__ import annotations

import abc
import logging
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from controller.jobs.models import (
    Cancelled,
    Interrupted,
    InvalidJobSpecError,
    Job,
    JobState,
)
from controller.jobs.store import JobStore

log = logging.getLogger(__name__)

ProgressCallback = Callable[[float, str | None], None]


@dataclass
class JobContext:
    """What a running job gets: its record, a progress callback, a scratch directory, shared services."""

    job: Job
    workdir: Path
    services: Any
    _report: ProgressCallback

    def progress(self, percent: float, stage: str | None = None) -> None:
        """Report progress (0-100) and the current stage; raises :class:`Cancelled` once cancellation was asked."""
        self._report(percent, stage)

    def scaled(self, start: float, end: float, prefix: str | None = None) -> ProgressCallback:
        """A callback mapping a step's own 0-100 onto ``start..end`` of the job (used by pipelines)."""

        def report(percent: float, stage: str | None = None) -> None:
            name = f"{prefix}: {stage}" if prefix and stage else (prefix or stage)
            self._report(start + (end - start) * max(0.0, min(100.0, percent)) / 100.0, name)

        return report


@dataclass(frozen=True)
class JobKind:
    """A kind of job: ``validate(spec, services)`` normalises a request at submit time (raising
    :class:`InvalidJobSpecError`), ``run(ctx)`` executes it in a worker thread."""

    name: str
    run: Callable[[JobContext], dict[str, Any]]
    validate: Callable[[dict[str, Any], Any], dict[str, Any]] = field(default=lambda spec, services: spec)


class JobRunner(abc.ABC):
    """What the API needs from a job executor."""

    @abc.abstractmethod
    def start(self) -> None:
        """Recover after a restart and begin taking queued jobs."""

    @abc.abstractmethod
    def shutdown(self, timeout: float = 10.0) -> None:
        """Stop taking jobs; running ones are interrupted (marked failed) cooperatively."""

    @abc.abstractmethod
    def submit(self, kind: str, spec: dict[str, Any], actor: str | None = None) -> Job:
        """Validate and queue a job; returns it in state ``queued``."""

    @abc.abstractmethod
    def cancel(self, job_id: str) -> Job:
        """Cancel a queued job now, or ask a running one to stop."""

    @abc.abstractmethod
    def get(self, job_id: str) -> Job:
        """One job."""

    @abc.abstractmethod
    def list(self, state: JobState | None = None, kind: str | None = None,
             limit: int = 50, offset: int = 0) -> tuple[list[Job], int]:
        """Jobs, newest first."""


class LocalJobRunner(JobRunner):
    """Thread-pool runner backed by :class:`JobStore`; at most ``max_workers`` jobs run at once."""

    #: minimum seconds between two progress writes of one job when only the percentage moved
    PROGRESS_WRITE_INTERVAL = 0.25

    def __init__(self, store: JobStore, kinds: dict[str, JobKind], *, max_workers: int,
                 workspace: Path, services: Any = None, poll_interval: float = 1.0) -> None:
        self.store = store
        self.kinds = dict(kinds)
        self.max_workers = max_workers
        self.workspace = Path(workspace)
        self.services = services
        self.poll_interval = poll_interval
        self._wake = threading.Condition()
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._cancel_events: dict[str, threading.Event] = {}
        self._events_lock = threading.Lock()

    # ---- lifecycle
    def start(self) -> None:
        """Fail jobs a dead process left running, then start the worker threads."""
        interrupted = self.store.recover()
        if interrupted:
            log.warning("marked %d interrupted job(s) failed: %s", len(interrupted), ", ".join(interrupted))
        self._stopping.clear()
        for i in range(self.max_workers):
            t = threading.Thread(target=self._worker, name=f"edgefleet-job-{i}", daemon=True)
            t.start()
            self._threads.append(t)

    def shutdown(self, timeout: float = 10.0) -> None:
        """Stop workers; a running job sees :class:`Interrupted` at its next progress report."""
        self._stopping.set()
        with self._events_lock:
            for ev in self._cancel_events.values():
                ev.set()
        with self._wake:
            self._wake.notify_all()
        deadline = time.monotonic() + timeout
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
        self._threads.clear()

    # ---- API
    def submit(self, kind: str, spec: dict[str, Any], actor: str | None = None) -> Job:
        """Validate with the kind's validator, persist as queued, wake a worker."""
        job_kind = self.kinds.get(kind)
        if job_kind is None:
            raise InvalidJobSpecError(f"unknown job kind {kind!r}; known: {', '.join(sorted(self.kinds))}")
        normalised = job_kind.validate(dict(spec), self.services)
        job = self.store.create(kind, normalised, actor=actor)
        with self._wake:
            self._wake.notify()
        return job

    def cancel(self, job_id: str) -> Job:
        """Flag the job cancelled in the store and wake its thread's next progress check."""
        job = self.store.request_cancel(job_id)
        with self._events_lock:
            ev = self._cancel_events.get(job_id)
        if ev is not None:
            ev.set()
        return job

    def get(self, job_id: str) -> Job:
        """One job from the store."""
        return self.store.get(job_id)

    def list(self, state: JobState | None = None, kind: str | None = None,
             limit: int = 50, offset: int = 0) -> tuple[list[Job], int]:
        """Jobs from the store."""
        return self.store.list(state=state, kind=kind, limit=limit, offset=offset)

    def running_count(self) -> int:
        """Jobs executing in this process right now."""
        with self._events_lock:
            return len(self._cancel_events)

    # ---- workers
    def _worker(self) -> None:
        while not self._stopping.is_set():
            job = self.store.claim_next()
            if job is None:
                with self._wake:
                    self._wake.wait(self.poll_interval)
                continue
            self._execute(job)

    def _make_reporter(self, job: Job, cancel_event: threading.Event) -> ProgressCallback:
        last = {"t": 0.0, "pct": -1.0, "stage": None}

        def report(percent: float, stage: str | None = None) -> None:
            if cancel_event.is_set():
                raise Interrupted("controller shutting down") if self._stopping.is_set() else Cancelled("cancelled")
            now = time.monotonic()
            if stage == last["stage"] and now - last["t"] < self.PROGRESS_WRITE_INTERVAL and percent < 100:
                return
            last.update(t=now, pct=percent, stage=stage)
            self.store.report(job.id, percent, stage)
            if self.store.cancel_requested(job.id):  # set by another process / replica
                cancel_event.set()
                raise Cancelled("cancelled")

        return report

    def _execute(self, job: Job) -> None:
        cancel_event = threading.Event()
        with self._events_lock:
            self._cancel_events[job.id] = cancel_event
        if self.store.cancel_requested(job.id):
            cancel_event.set()
        workdir = self.workspace / "jobs" / job.id
        workdir.mkdir(parents=True, exist_ok=True)
        ctx = JobContext(job=job, workdir=workdir, services=self.services,
                         _report=self._make_reporter(job, cancel_event))
        try:
            ctx.progress(0.0, "starting")
            result = self.kinds[job.kind].run(ctx)
        except Interrupted:
            self.store.finish(job.id, JobState.FAILED, error="interrupted by controller shutdown")
        except Cancelled:
            self.store.finish(job.id, JobState.CANCELLED, error="cancelled by request")
        except Exception as exc:  # noqa: BLE001 - any failure of a technique ends the job, never the worker
            log.warning("job %s failed: %s", job.id, exc)
            log.debug("%s", traceback.format_exc())
            self.store.finish(job.id, JobState.FAILED, error=f"{type(exc).__name__}: {exc}")
        else:
            self.store.finish(job.id, JobState.SUCCEEDED, result=result)
        finally:
            with self._events_lock:
                self._cancel_events.pop(job.id, None)
