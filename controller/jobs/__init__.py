"""Persisted jobs (SQLite) and the runner that executes them outside the event loop.

Import graph (no cycle): ``store`` and ``context`` → ``models``; ``execute`` → ``context``/``store``;
``runner`` → ``execute``/``context``/``store``; ``kinds`` → ``context``/``models`` (+ the domain
packages, imported inside functions);
``worker`` (the job process) → ``execute``/``kinds``/``store``; ``runner`` starts ``worker``
by name in a child process and never imports ``kinds``.
"""

from controller.jobs.context import JobContext, JobKind, JobServices, WorkerServices
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
from controller.jobs.runner import JobRunner, LocalJobRunner
from controller.jobs.store import JobStore

__all__ = [
    "INTERRUPTED_REASON", "Cancelled", "Interrupted", "InvalidJobSpecError", "Job", "JobConflictError",
    "JobContext", "JobError", "JobKind", "JobNotFoundError", "JobRunner", "JobServices", "JobState", "JobStore",
    "LocalJobRunner", "WorkerServices",
]
