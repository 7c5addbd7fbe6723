"""Entry point of a process-isolated job: ``child_main(job_id, config)`` runs in a forked job process.

The child rebuilds what a job needs from plain data (settings as a dict): its own job store
and registry connections on the same SQLite files (WAL allows several processes), the job
kinds (built-ins + ``EDGEFLEET_JOB_PLUGINS``), and runs the job with the same
:func:`controller.jobs.execute.execute` as the thread runner. It lowers its own CPU priority
so the API stays responsive, and it watches its parent (the fork server, which exits with the
controller): if the controller dies, the child
stops at its next progress report without writing anything, and the restarted controller
marks the job "interrupted by controller restart".
"""

from __future__ import annotations

import logging
import os
import sys
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
