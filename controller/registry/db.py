"""The registry's SQLite database: the one seam every store of the controller writes through.

The model registry, the fleet records, the rollout store and the telemetry store all live
in one SQLite file (WAL), because "refuse to delete a version while it is deployed" or
"a rollout decision and its audit line" must be one transaction, not a dance between
stores. Each of them takes a :class:`Database` and uses only its public methods:
:meth:`Database.transaction`, :meth:`Database.one` / :meth:`Database.all`,
:meth:`Database.select`, :meth:`Database.insert`, :meth:`Database.audit` and
:meth:`Database.register_schema` for the tables it owns.

Thread safety: each thread gets its own SQLite connection (paho callbacks, the REST
server's worker threads and the demo all share one database); writers are serialised by
one in-process lock and ``BEGIN IMMEDIATE`` so two processes on the same file also queue
instead of failing.

Example:
    >>> db = Database(Path("/tmp/ws/registry.sqlite"))                       # doctest: +SKIP
    >>> db.register_schema("CREATE TABLE IF NOT EXISTS notes (id TEXT PRIMARY KEY)")  # doctest: +SKIP
    >>> with db.transaction() as conn:                                       # doctest: +SKIP
    ...     db.insert(conn, "notes", {"id": new_id()})
    ...     db.audit(conn, "alice", "note.create", "notes", {})
"""

from __future__ import annotations

import json
import sqlite3
import threading
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlite_utils

from controller.registry.errors import InvalidInputError

_IDENT_OK = frozenset("abcdefghijklmnopqrstuvwxyz_0123456789")


def utcnow() -> str:
    """Current time as ISO 8601 with an explicit UTC offset: the only time format stored."""
    return datetime.now(UTC).isoformat()


def new_id() -> str:
    """A fresh UUID4 string: every model, version, artifact, deployment, rollout and audit entry id."""
    return str(uuid.uuid4())


def iso_utc(ts: datetime) -> str:
    """A device timestamp as stored: devices may send naive times, which are UTC by protocol."""
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=UTC)
    return ts.astimezone(UTC).isoformat()


def dump_json(value: Any, what: str) -> str:
    """Serialise a JSON object strictly (no NaN/inf, dict at the top) so stored data stays portable."""
    if value is None:
        value = {}
    if not isinstance(value, dict):
        raise InvalidInputError(f"{what} must be a JSON object, got {type(value).__name__}")
    try:
        return json.dumps(value, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(
            f"{what} is not JSON-serialisable (finite numbers, strings, lists, dicts): {exc}"
        ) from exc


def dump_loose(value: Any) -> str:
    """Serialise free-form details (audit lines, decision figures): sorted keys, anything else as text."""
    return json.dumps(value, sort_keys=True, default=str)


def _ident(name: str) -> str:
    """Table and column names come from code, never from requests; refuse anything else loudly."""
    if not name or not set(name) <= _IDENT_OK:
        raise ValueError(f"not a plain SQL identifier: {name!r}")
    return name


class Database:
    """One SQLite file (WAL) shared by every controller store; see the module docstring.

    Args:
        path: the database file (created with its parent directory if missing).
        actor: audit-log name used when a call passes none.
    """

    def __init__(self, path: Path, *, actor: str = "system") -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.default_actor = actor
        self._local = threading.local()
        self._conns: list[sqlite3.Connection] = []
        self._conns_lock = threading.Lock()
        self._write_lock = threading.RLock()
        self._closed = False
        self.connection().enable_wal()

    # ------------------------------------------------------------------ connections
    def connection(self) -> sqlite_utils.Database:
        """This thread's connection (opened on first use); RuntimeError once the database is closed."""
        if self._closed:
            raise RuntimeError("registry is closed")
        db = getattr(self._local, "db", None)
        if db is None:
            conn = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA foreign_keys = ON")
            conn.execute("PRAGMA busy_timeout = 30000")
            conn.execute("PRAGMA synchronous = NORMAL")
            db = sqlite_utils.Database(conn)
            self._local.db = db
            with self._conns_lock:
                self._conns.append(conn)
        return db

    def register_schema(self, ddl: str) -> None:
        """Create a store's tables, indexes and triggers (idempotent DDL, ``IF NOT EXISTS``)."""
        self.connection().conn.executescript(ddl)

    def close(self) -> None:
        """Close every thread's connection; the database cannot be used afterwards."""
        self._closed = True
        with self._conns_lock:
            for conn in self._conns:
                try:
                    conn.close()
                except sqlite3.Error:
                    pass
            self._conns.clear()

    # ------------------------------------------------------------------ writing
    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction, re-entrant within a thread: the outermost one commits or rolls back."""
        conn = self.connection().conn
        with self._write_lock:
            if conn.in_transaction:
                yield conn
                return
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    @staticmethod
    def insert(conn: sqlite3.Connection, table: str, row: Mapping[str, Any]) -> None:
        """Insert one row (column names from the mapping's keys) inside an open transaction."""
        cols = ", ".join(_ident(c) for c in row)
        marks = ", ".join("?" for _ in row)
        conn.execute(f"INSERT INTO {_ident(table)} ({cols}) VALUES ({marks})", tuple(row.values()))

    def actor(self, actor: str | None) -> str:
        """The audit name of a call: the one it gave, else the database's default."""
        return actor or self.default_actor

    def audit(
        self, conn: sqlite3.Connection, actor: str | None, action: str, target: str, details: dict[str, Any]
    ) -> None:
        """Append an audit line inside the caller's transaction: never a change without its line, or the reverse."""
        self.insert(
            conn,
            "audit_log",
            {
                "id": new_id(),
                "ts": utcnow(),
                "actor": self.actor(actor),
                "action": action,
                "target": target,
                "details": dump_loose(details),
            },
        )

    # ------------------------------------------------------------------ reading
    def one(self, sql: str, params: tuple | dict = ()) -> dict[str, Any] | None:
        """The first row of a query as a dict, or None."""
        for row in self.connection().query(sql, params):
            return row
        return None

    def all(self, sql: str, params: tuple | dict = ()) -> list[dict[str, Any]]:
        """Every row of a query as dicts."""
        return list(self.connection().query(sql, params))

    def select(
        self,
        table: str,
        *,
        where: Mapping[str, Any] | None = None,
        columns: str = "*",
        order_by: str = "rowid",
        limit: int | None = None,
        offset: int = 0,
    ) -> list[dict[str, Any]]:
        """Rows of a table whose columns equal the given values; ``None`` values are left out of the filter.

        The list endpoints filter by optional query parameters; this is that one shape, so
        none of them assembles a ``WHERE`` clause by hand. A tuple value matches any of its
        items (``IN``). ``columns`` and ``order_by`` come from code, never from a request.

        Example:
            >>> db.select("devices", where={"profile": "rpi4", "online": None}, order_by="id")  # doctest: +SKIP
        """
        clauses, params = [], []
        for column, value in (where or {}).items():
            if value is None:
                continue
            if isinstance(value, tuple):
                clauses.append(f"{_ident(column)} IN ({', '.join('?' for _ in value)})")
                params.extend(value)
            else:
                clauses.append(f"{_ident(column)} = ?")
                params.append(value)
        sql = f"SELECT {columns} FROM {_ident(table)}"
        if clauses:
            sql += f" WHERE {' AND '.join(clauses)}"
        sql += f" ORDER BY {order_by}"
        if limit is not None:
            sql += " LIMIT ? OFFSET ?"
            params.extend((limit, offset))
        return self.all(sql, tuple(params))
