"""What a job sees: its context (record, progress, scratch directory, services) and what a job kind is.

This module is the bottom of ``controller.jobs``: job kinds (``kinds.py``, plug-ins) and the
code that executes a job (``execute.py``) import it, and it imports nothing of the runner, so
the supervising runner, the process worker and the kinds never import each other in a loop.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from controller.jobs.models import Job

if TYPE_CHECKING:
    from controller.registry import Registry
    from controller.settings import Settings

ProgressCallback = Callable[[float, str | None], None]
"""``report(percent, stage)``: raises :class:`~controller.jobs.models.Cancelled` once a stop was asked."""


class JobServices(Protocol):
    """What a job kind may use besides its spec: the settings and the registry.

    The API's ``Services`` and a job process's :class:`WorkerServices` both satisfy it, so a kind
    is written once for both isolations.
    """

    @property
    def settings(self) -> Settings: ...  # noqa: D102 - the Protocol's docstring says it

    @property
    def registry(self) -> Registry: ...  # noqa: D102


@dataclass(frozen=True)
class WorkerServices:
    """The services a job process rebuilds for itself (no job runner, no fleet)."""

    settings: Settings
    registry: Registry


@dataclass
class JobContext:
    """What a running job gets: its record, a progress callback, a scratch directory, shared services."""

    job: Job
    workdir: Path
    services: JobServices
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


JobSpec = dict[str, Any]
"""A job's request as JSON (stored in the job row as it was normalised at submit time)."""


def _accept(spec: JobSpec, services: JobServices) -> JobSpec:
    return spec


@dataclass(frozen=True)
class JobKind:
    """A kind of job: ``validate(spec, services)`` normalises a request at submit time (raising
    :class:`InvalidJobSpecError`), ``run(ctx)`` executes it in a worker thread or a job process."""

    name: str
    run: Callable[[JobContext], dict[str, Any]]
    validate: Callable[[JobSpec, JobServices], JobSpec] = field(default=_accept)
