"""Persisted jobs (SQLite) and the runner that executes them outside the event loop."""

from controller.jobs.models import (
    INTERRUPTED_REASON,
    Cancelled,
    Interrupted,
    InvalidJobSpecError,
    Job,
    JobConflictError,
    JobError,
    JobNotFoundError,
    JobState,
)
from controller.jobs.runner import JobContext, JobKind, JobRunner, LocalJobRunner
from controller.jobs.store import JobStore

__all__ = [
    "INTERRUPTED_REASON", "Cancelled", "Interrupted", "InvalidJobSpecError", "Job", "JobConflictError",
    "JobContext", "JobError", "JobKind", "JobNotFoundError", "JobRunner", "JobState", "JobStore",
    "LocalJobRunner",
]
