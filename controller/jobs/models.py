"""Job records: what a job is, its states, and the errors the job system raises.

A job row is the single source of truth for a compression / pipeline / conversion
run: the REST layer reads it, the runner writes it. State names are persisted, so
their values never change.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field

from common.errors import ConflictError, DomainError, InvalidInputError, NotFoundError


class JobState(StrEnum):
    """Persisted job states (values are stored in SQLite: never rename them)."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        """True once the job can no longer change."""
        return self in (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED)


INTERRUPTED_REASON = "interrupted by controller restart"


class Job(BaseModel):
    """One job as stored and as served by ``GET /compression/jobs/{id}``."""

    id: str = Field(description="UUID4")
    kind: str = Field(description="compression, pipeline or conversion")
    state: JobState
    spec: dict[str, Any] = Field(description="the request that created the job (technique config, input version)")
    progress: float = Field(0.0, ge=0, le=100, description="percent done")
    stage: str | None = Field(None, description="current stage, as reported by the technique")
    created_at: str = Field(description="UTC ISO-8601")
    started_at: str | None = None
    finished_at: str | None = None
    duration_s: float | None = Field(None, description="wall time from start to finish (or to now while running)")
    queue_s: float | None = Field(None, description="time spent queued before a worker took it")
    result: dict[str, Any] | None = Field(None, description="output version id, metrics")
    error: str | None = None
    cancel_requested: bool = False
    actor: str | None = Field(None, description="API key name that created it")


class JobError(DomainError):
    """Base of job-system errors; ``http_status`` lets the API map it once."""

    code = "job_error"
    http_status = 400


class JobNotFoundError(JobError, NotFoundError):
    """No job with that id."""

    code = "not_found"
    http_status = 404


class JobConflictError(JobError, ConflictError):
    """The job is in a state that does not allow the request (e.g. cancelling a finished job)."""

    code = "conflict"
    http_status = 409


class InvalidJobSpecError(JobError, InvalidInputError):
    """The job request names an unknown kind/technique or a bad parameter."""

    code = "invalid_input"
    http_status = 422


class Cancelled(Exception):  # noqa: N818 - reads as "raise Cancelled" at the call site
    """Raised inside a running job by the progress callback once cancellation was requested."""


class Interrupted(Cancelled):
    """Raised inside a running job when the controller shuts down; the job is marked failed."""
