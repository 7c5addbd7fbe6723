"""Run one claimed job to a terminal state: the same code in a worker thread and in a job process.

The runner (``runner.py``) only supervises: it claims jobs, decides the isolation and
stops workers. Everything that happens *inside* a job — the throttled progress reporter with
its cooperative stop check, the scratch directory, mapping the outcome to a terminal state —
lives here, so the process worker (``worker.py``) can call it without importing the runner.
"""

from __future__ import annotations

import logging
import shutil
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from controller.jobs.context import JobContext, JobKind, JobServices, ProgressCallback
from controller.jobs.models import Cancelled, Interrupted, Job, JobState
from controller.jobs.store import JobStore

log = logging.getLogger(__name__)

StopCheck = Callable[[], type[Cancelled] | None]
"""Returns the exception class a job must stop with now (``Cancelled``/``Interrupted``), else None."""


def make_reporter(store: JobStore, job: Job, should_stop: StopCheck, interval: float) -> ProgressCallback:
    """The progress callback given to a technique: throttled store writes + the cooperative stop check.

    Raises the exception class ``should_stop`` returns, :class:`Cancelled` once the store says
    a cancel was requested (by any process or replica), and :class:`Interrupted` when the job
    is no longer ``running`` in the store (a restarted controller failed it): a worker whose
    job was taken away must not record a version for it.
    """
    last: dict[str, Any] = {"t": 0.0, "stage": None}

    def report(percent: float, stage: str | None = None) -> None:
        stop = should_stop()
        if stop is not None:
            raise stop(stop.__name__.lower())
        now = time.monotonic()
        if stage == last["stage"] and now - last["t"] < interval and percent < 100:
            return
        last.update(t=now, stage=stage)
        if not store.report(job.id, percent, stage):
            raise Interrupted("job is no longer running in the store")
        if store.cancel_requested(job.id):
            raise Cancelled("cancelled")

    return report


def execute(store: JobStore, kind: JobKind, job: Job, workspace: Path, services: JobServices,
            should_stop: StopCheck, interval: float) -> None:
    """Run one claimed job to a terminal state in the store (used in a worker thread or a child process)."""
    workdir = Path(workspace) / "jobs" / job.id
    workdir.mkdir(parents=True, exist_ok=True)
    ctx = JobContext(job=job, workdir=workdir, services=services,
                     _report=make_reporter(store, job, should_stop, interval))
    try:
        ctx.progress(0.0, "starting")
        result = kind.run(ctx)
        ctx.progress(100.0, "done")
    except Interrupted as exc:
        store.finish(job.id, JobState.FAILED, error=f"interrupted by controller shutdown ({exc})")
    except Cancelled:
        store.finish(job.id, JobState.CANCELLED, error="cancelled by request")
    except Exception as exc:  # noqa: BLE001 - any failure of a technique ends the job, never the worker
        log.warning("job %s failed: %s", job.id, exc)
        log.debug("%s", traceback.format_exc())
        store.finish(job.id, JobState.FAILED, error=f"{type(exc).__name__}: {exc}")
    else:
        store.finish(job.id, JobState.SUCCEEDED, result=result)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    _write_report(store, job.id, services, workspace)


def _write_report(store: JobStore, job_id: str, services: JobServices, workspace: Path) -> None:
    """Every finished job leaves an HTML report (``controller.report``); never fails the job or the worker."""
    registry = getattr(services, "registry", None)
    if registry is None:
        return
    try:
        job = store.get(job_id)
        if job.error and job.error.startswith("interrupted by controller"):
            return  # shutting down: the stores may already be closing
        from controller.report import write_job_report

        write_job_report(registry, job, workspace)
    except Exception:  # noqa: BLE001 - a report is a by-product; the API renders it on demand when missing
        log.warning("no report written for job %s", job_id, exc_info=True)
