"""SQLite job store (sqlite-utils, WAL): survives restarts, safe to use from many threads.

Jobs live in their own file, ``jobs.sqlite`` under ``COMPRESSION_WORKSPACE``, not in the
registry's database: progress is written several times a second per running job, and
keeping those writes out of the registry file means they never hold the registry's write
lock. A distributed runner would replace this file with a server database behind the
same methods.

One connection is shared behind a lock: each call is a few microseconds of SQLite work,
so serialising them costs less than opening a connection per call, and every state
transition is a single ``UPDATE ... WHERE state = ?`` so two threads cannot both win.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlite_utils

from controller.jobs.models import (
    INTERRUPTED_REASON,
    Job,
    JobConflictError,
    JobNotFoundError,
    JobState,
)

TABLE = "jobs"


def utcnow() -> str:
    """UTC timestamp, ISO-8601 with microseconds and offset."""
    return datetime.now(UTC).isoformat()


def _seconds(start: str | None, end: str | None) -> float | None:
    if not start:
        return None
    t1 = datetime.fromisoformat(end) if end else datetime.now(UTC)
    return round((t1 - datetime.fromisoformat(start)).total_seconds(), 3)


class JobStore:
    """Persisted jobs: create, claim, report progress, finish, cancel, recover after a restart."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(str(self.path), check_same_thread=False, timeout=30, isolation_level=None)
        self.db = sqlite_utils.Database(conn)
        self.db.enable_wal()
        self.db.execute("PRAGMA synchronous=NORMAL")
        self._lock = threading.RLock()
        if TABLE not in self.db.table_names():
            self.db[TABLE].create({
                "id": str, "kind": str, "state": str, "spec": str, "progress": float, "stage": str,
                "created_at": str, "started_at": str, "finished_at": str, "result": str, "error": str,
                "cancel_requested": int, "actor": str, "seq": int,
            }, pk="id", not_null={"kind", "state", "spec", "created_at"})
            self.db[TABLE].create_index(["state", "seq"])
            self.db[TABLE].create_index(["seq"])

    # ---- helpers
    def _row_to_job(self, row: dict[str, Any]) -> Job:
        state = JobState(row["state"])
        return Job(
            id=row["id"], kind=row["kind"], state=state, spec=json.loads(row["spec"]),
            progress=row["progress"] or 0.0, stage=row["stage"], created_at=row["created_at"],
            started_at=row["started_at"], finished_at=row["finished_at"],
            duration_s=_seconds(row["started_at"], row["finished_at"]),
            queue_s=_seconds(row["created_at"], row["started_at"]) if row["started_at"] else None,
            result=json.loads(row["result"]) if row["result"] else None, error=row["error"],
            cancel_requested=bool(row["cancel_requested"]), actor=row["actor"],
        )

    def _fetch(self, job_id: str) -> dict[str, Any] | None:
        rows = list(self.db.query(f"select * from {TABLE} where id = ?", [job_id]))
        return rows[0] if rows else None

    def _update(self, job_id: str, where_states: tuple[JobState, ...], **values: Any) -> bool:
        sets = ", ".join(f"{k} = ?" for k in values)
        marks = ", ".join("?" for _ in where_states)
        cur = self.db.execute(
            f"update {TABLE} set {sets} where id = ? and state in ({marks})",
            [*values.values(), job_id, *[s.value for s in where_states]])
        return cur.rowcount == 1

    # ---- public API
    def create(self, kind: str, spec: dict[str, Any], actor: str | None = None) -> Job:
        """Insert a queued job and return it."""
        with self._lock:
            seq = (self.db.execute(f"select coalesce(max(seq), 0) + 1 from {TABLE}").fetchone()[0])
            row = {"id": str(uuid.uuid4()), "kind": kind, "state": JobState.QUEUED.value,
                   "spec": json.dumps(spec, sort_keys=True), "progress": 0.0, "stage": None,
                   "created_at": utcnow(), "started_at": None, "finished_at": None, "result": None,
                   "error": None, "cancel_requested": 0, "actor": actor, "seq": seq}
            self.db[TABLE].insert(row)
            return self._row_to_job(row)

    def get(self, job_id: str) -> Job:
        """One job; raises :class:`JobNotFoundError`."""
        with self._lock:
            row = self._fetch(job_id)
        if row is None:
            raise JobNotFoundError(f"job {job_id!r} does not exist")
        return self._row_to_job(row)

    def list(self, state: JobState | None = None, kind: str | None = None,
             limit: int = 50, offset: int = 0) -> tuple[list[Job], int]:
        """Newest first, optionally filtered; returns (page, total matching)."""
        where, args = [], []
        if state is not None:
            where.append("state = ?")
            args.append(JobState(state).value)
        if kind is not None:
            where.append("kind = ?")
            args.append(kind)
        clause = f"where {' and '.join(where)}" if where else ""
        with self._lock:
            total = self.db.execute(f"select count(*) from {TABLE} {clause}", args).fetchone()[0]
            rows = list(self.db.query(
                f"select * from {TABLE} {clause} order by seq desc limit ? offset ?", [*args, limit, offset]))
        return [self._row_to_job(r) for r in rows], int(total)

    def claim_next(self) -> Job | None:
        """Atomically move the oldest queued job to running and return it (None when the queue is empty)."""
        with self._lock:
            row = next(iter(self.db.query(
                f"select id from {TABLE} where state = ? order by seq limit 1", [JobState.QUEUED.value])), None)
            if row is None:
                return None
            if not self._update(row["id"], (JobState.QUEUED,), state=JobState.RUNNING.value, started_at=utcnow()):
                return None
            return self._row_to_job(self._fetch(row["id"]))  # type: ignore[arg-type]

    def report(self, job_id: str, progress: float, stage: str | None) -> bool:
        """Record progress of a running job; False when it is no longer running."""
        with self._lock:
            return self._update(job_id, (JobState.RUNNING,), progress=max(0.0, min(100.0, progress)), stage=stage)

    def finish(self, job_id: str, state: JobState, *, result: dict[str, Any] | None = None,
               error: str | None = None) -> Job:
        """Move a running (or queued) job to a terminal state."""
        if not state.terminal:
            raise ValueError(f"{state} is not a terminal state")
        values: dict[str, Any] = {"state": state.value, "finished_at": utcnow(), "error": error}
        if result is not None:
            values["result"] = json.dumps(result, sort_keys=True, default=str)
        if state is JobState.SUCCEEDED:
            values["progress"] = 100.0
        with self._lock:
            self._update(job_id, (JobState.RUNNING, JobState.QUEUED), **values)
            return self.get(job_id)

    def request_cancel(self, job_id: str) -> Job:
        """Cancel a queued job at once, or flag a running one; a finished job raises :class:`JobConflictError`."""
        with self._lock:
            job = self.get(job_id)
            if job.state is JobState.QUEUED and self._update(
                    job_id, (JobState.QUEUED,), state=JobState.CANCELLED.value, finished_at=utcnow(),
                    cancel_requested=1, error="cancelled before it started"):
                return self.get(job_id)
            if self._update(job_id, (JobState.RUNNING,), cancel_requested=1):
                return self.get(job_id)
            job = self.get(job_id)
            raise JobConflictError(f"job {job_id} is already {job.state.value}; only queued or running jobs can be "
                                   "cancelled")

    def cancel_requested(self, job_id: str) -> bool:
        """True once someone asked to cancel this job (read by the progress callback)."""
        with self._lock:
            row = self.db.execute(f"select cancel_requested from {TABLE} where id = ?", [job_id]).fetchone()
        return bool(row and row[0])

    def recover(self, reason: str = INTERRUPTED_REASON) -> list[str]:
        """Mark jobs left ``running`` by a previous process as failed; queued jobs stay queued and run again."""
        with self._lock:
            ids = [r["id"] for r in self.db.query(
                f"select id from {TABLE} where state = ?", [JobState.RUNNING.value])]
            for job_id in ids:
                self._update(job_id, (JobState.RUNNING,), state=JobState.FAILED.value, finished_at=utcnow(),
                             error=reason)
        return ids

    def counts(self) -> dict[str, int]:
        """Number of jobs per state (for health checks and the benchmark)."""
        with self._lock:
            rows = self.db.execute(f"select state, count(*) from {TABLE} group by state").fetchall()
        return {s.value: 0 for s in JobState} | {state: n for state, n in rows}

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            self.db.conn.close()
