"""Self-contained HTML reports with charts for jobs, versions, deployments and rollouts.

One door per subject (``job_report``, ``version_report``, ``deployment_report``,
``rollout_report``) returns a :class:`Report`; ``Report.write(folder)`` leaves ``report.html``
(offline, inline SVG charts, < 2 MB), ``report.json`` and ``charts/*.svg|png``. Finished jobs
write theirs under ``<workspace>/reports/jobs/<job id>/`` (:func:`write_job_report`, called by
the job runner); the API serves any report at ``…/report`` and renders it on demand when no
file exists (a job from before reports existed, a rollout still running).

Example:
    >>> from controller.report import version_report
    >>> version_report(registry, "9f1c…").write(Path("build/reports/9f1c"))  # doctest: +SKIP
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from controller.report.builders import deployment_report, job_report, rollout_report, version_report
from controller.report.charts import Chart
from controller.report.document import MAX_REPORT_BYTES, Report, ReportError, Section, Table

log = logging.getLogger(__name__)

__all__ = ["MAX_REPORT_BYTES", "Chart", "Report", "ReportError", "Section", "Table", "deployment_report",
           "job_report", "report_dir", "resolve", "rollout_report", "version_report", "write_job_report"]


def report_dir(workspace: Path, kind: str, ref: str) -> Path:
    """Where the report of ``kind`` (``jobs``, ``versions``, ...) ``ref`` lives in the workspace."""
    return Path(workspace) / "reports" / kind / ref


def write_job_report(registry: Any, job: Any, workspace: Path) -> Path | None:
    """Write a finished job's report; never raises (a report must not turn a good job into a failed one)."""
    try:
        return job_report(registry, job).write(report_dir(workspace, "jobs", job.id))
    except Exception:  # noqa: BLE001 - logged with the traceback; the API can still render it on demand
        log.exception("could not write the report of job %s", getattr(job, "id", "?"))
        return None


def resolve(services: Any, ref: str) -> Report:
    """The report for any id: a job, a model version, a deployment or a rollout (tried in that order)."""
    from common.errors import NotFoundError  # the jobs, registry and rollout "unknown id" errors all derive from it

    attempts = [lambda: job_report(services.registry, services.runner.get(ref)),
                lambda: version_report(services.registry, ref),
                lambda: deployment_report(services.registry, ref),
                lambda: rollout_report(services.registry, rollout_store(services), ref)]
    for attempt in attempts:
        try:
            return attempt()
        except NotFoundError:
            continue
    raise ReportError(f"no job, version, deployment or rollout has the id {ref!r}")


def rollout_store(services: Any) -> Any:
    """The rollout store of the app (the engine's when it runs, else one opened on the registry)."""
    engine = services.extra.get("rollouts") if hasattr(services, "extra") else None
    if engine is not None:
        return engine.store
    from controller.rollout.store import RolloutStore

    return RolloutStore(services.registry.db)
