"""Entry point of a process-isolated job: ``child_main(job_id, config)`` runs in a forked job process.

The child rebuilds what a job needs from plain data (settings as a dict): its own job store
and registry connections on the same SQLite files (WAL allows several processes), the job
kinds (built-ins + ``EDGEFLEET_JOB_PLUGINS``), and runs the job with the same
:func:`controller.jobs.execute.execute` as the thread runner. It lowers its own CPU priority
so the API stays responsive, and it watches the *controller* process itself (not its parent, the
fork server, which outlived a ``kill -9``ed controller because job processes held its liveness
pipe): a thread blocks on a pidfd of the controller and ends the process the moment the controller
is gone, without writing anything; the restarted controller marks the job "interrupted by
controller restart". So no job outlives its controller, and ``MAX_COMPRESSION_JOBS`` holds across
a quick restart.
"""

from __future__ import annotations

import logging
import os
import select
import sys
import threading
import time
from typing import Any

from controller.jobs.models import Cancelled, Interrupted

log = logging.getLogger(__name__)


def child_main(job_id: str, config: dict[str, Any]) -> None:
    """Run one claimed job to completion in this (child) process."""
    from controller.jobs.context import WorkerServices
    from controller.jobs.execute import execute
    from controller.jobs.kinds import default_kinds, plugin_kinds
    from controller.jobs.store import JobStore
    from controller.registry import Registry
    from controller.settings import Settings

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s job-worker: %(message)s")
    try:
        os.nice(int(config.get("nice", 10)))
        if config.get("sched_idle") and hasattr(os, "sched_setscheduler"):
            # Linux SCHED_IDLE: run only when no normal task wants the CPU, so API requests never wait on a job
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    except OSError:
        pass
    parent = os.getppid()
    watch_controller(int(config.get("controller_pid") or parent), job_id)
    settings = Settings(**config["settings"])
    store = JobStore(settings.jobs_db_path)
    registry = Registry(settings.compression_workspace, actor="controller")
    services = WorkerServices(settings=settings, registry=registry)
    kinds = default_kinds() | plugin_kinds(settings.job_plugins)
    job = store.get(job_id)

    def should_stop() -> type[Cancelled] | None:
        if os.getppid() != parent:
            log.warning("controller %d is gone; abandoning job %s (it is failed on restart)", parent, job_id)
            sys.stdout.flush()
            os._exit(3)  # write nothing: the restarted controller owns the job's fate
        return None

    try:
        execute(store, kinds[job.kind], job, settings.compression_workspace, services, should_stop,
                float(config.get("progress_interval", 0.25)))
    except Interrupted:  # pragma: no cover - execute() maps it; kept for safety
        pass
    finally:
        store.close()
        registry.close()


def watch_controller(pid: int, job_id: str) -> threading.Thread:
    """End this process as soon as the controller ``pid`` exits (a daemon thread; returns it).

    A pidfd (Linux 5.3+) becomes readable when the process exits and cannot be fooled by pid
    reuse; elsewhere the pid is polled every 0.2 s.
    """
    def gone() -> None:
        log.warning("controller %d is gone; abandoning job %s (it is failed on restart)", pid, job_id)
        sys.stdout.flush()
        os._exit(3)  # write nothing: the restarted controller owns the job's fate

    def watch() -> None:
        try:
            fd = os.pidfd_open(pid)
        except (AttributeError, OSError):
            fd = None
        if fd is None:
            while True:
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    gone()
                except PermissionError:
                    pass
                time.sleep(0.2)
        select.select([fd], [], [])
        gone()

    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        gone()
    thread = threading.Thread(target=watch, name="controller-watch", daemon=True)
    thread.start()
    return thread
