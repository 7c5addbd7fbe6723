"""The model registry: models, immutable versions, content-addressed blobs, tags, artifacts, audit.

One SQLite file (WAL) in the workspace plus ``blobs/``. Every public method is
keyword-only so the REST layer (issue 5) can pass request fields through by
name, and every mutating call writes its audit entry in the same transaction
as the change: there is never a change without its audit line, or the reverse.

The database seam (connections per thread, the write lock, transactions, audit lines)
is :class:`controller.registry.db.Database` (``registry.db``); the fleet's tables are
``registry.devices``, ``registry.deployments`` and ``registry.reports`` (modules of the same
names), on the same database so a deletion can check deployments in one query.

Example:
    >>> reg = Registry(Path("/tmp/ws"))                                    # doctest: +SKIP
    >>> m = reg.create_model(name="minilm", actor="alice")                 # doctest: +SKIP
    >>> v = reg.add_version(model_id=m.id, path=Path("minilm.onnx"))       # doctest: +SKIP
    >>> reg.tags.set_tag(model_id=m.id, tag="production", version_id=v.id)      # doctest: +SKIP
"""

from __future__ import annotations

import json
import re
import sqlite3
from datetime import datetime
from pathlib import Path
from typing import Any

from controller.registry.artifacts import ArtifactRecords
from controller.registry.blobs import BlobStore
from controller.registry.db import Database, dump_json, new_id, utcnow
from controller.registry.deployments import DeploymentRecords
from controller.registry.devices import DeviceRecords
from controller.registry.errors import ConflictError, InvalidInputError, NotFoundError
from controller.registry.records import (
    AuditEntry,
    BlobRecord,
    ModelRecord,
    VersionRecord,
)
from controller.registry.reports import ReportRecords
from controller.registry.retention import Retention
from controller.registry.schema import create_schema
from controller.registry.tags import TagRecords

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
_TOKEN_RE = re.compile(r"^[a-z0-9][a-z0-9_.+-]{0,63}$")


def validate_name(name: str, what: str = "model name") -> str:
    """Reject names that could escape a directory or a URL segment (``/``, ``\\``, ``..``).

    Example:
        >>> validate_name("mobilenet_v2")
        'mobilenet_v2'
    """
    if not isinstance(name, str) or not _NAME_RE.match(name) or ".." in name:
        raise InvalidInputError(
            f"invalid {what} {name!r}: use 1-128 characters from [A-Za-z0-9_.-], starting with a letter "
            "or digit, no path separators and no '..'"
        )
    return name


def _token(value: str, what: str) -> str:
    if not isinstance(value, str) or not _TOKEN_RE.match(value):
        raise InvalidInputError(f"invalid {what} {value!r}: use 1-64 lowercase characters from [a-z0-9_.+-]")
    return value


class Registry:
    """SQLite-backed registry rooted at one workspace directory.

    Args:
        workspace: directory holding ``registry.db`` and ``blobs/`` (``COMPRESSION_WORKSPACE``).
        actor: default actor name written to the audit log when a call passes none.
    """

    def __init__(self, workspace: Path, *, actor: str = "system") -> None:
        self.workspace = Path(workspace)
        self.workspace.mkdir(parents=True, exist_ok=True)
        self.db_path = self.workspace / "registry.sqlite"
        self.blobs = BlobStore(self.workspace / "blobs")
        self.db = Database(self.db_path, actor=actor)
        create_schema(self.db)
        self.devices = DeviceRecords(self.db)
        self.deployments = DeploymentRecords(self.db, self.devices)
        self.reports = ReportRecords(self.db)
        self.tags = TagRecords(self.db, self)
        self.artifacts = ArtifactRecords(self.db, self)
        self.retention = Retention(self.db, self)

    @property
    def default_actor(self) -> str:
        """Audit-log name used when a call passes none."""
        return self.db.default_actor

    def close(self) -> None:
        """Close every thread's connection; the registry cannot be used afterwards."""
        self.db.close()

    def __enter__(self) -> Registry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ audit
    def audit(self, *, action: str, target: str, details: dict | None = None, actor: str | None = None) -> None:
        """Append an audit entry for a mutating call made outside the registry (e.g. an upload rejected)."""
        with self.db.transaction() as conn:
            self.db.audit(conn, actor, action, target, details or {})

    def audit_log(self, *, target: str | None = None, action: str | None = None, limit: int = 100) -> list[AuditEntry]:
        """Audit entries, newest first, optionally for one target id or one action."""
        where, params = [], []
        if target is not None:
            where.append("target = ?")
            params.append(target)
        if action is not None:
            where.append("action = ?")
            params.append(action)
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        rows = self.db.all(f"SELECT * FROM audit_log {clause} ORDER BY ts DESC, rowid DESC LIMIT ?", (*params, limit))
        return [AuditEntry.from_row(r) for r in rows]

    # ------------------------------------------------------------------ models
    def create_model(self, *, name: str, description: str = "", actor: str | None = None) -> ModelRecord:
        """Register a model name; ConflictError if the name is taken (names are unique)."""
        validate_name(name)
        row = {
            "id": new_id(),
            "name": name,
            "description": description,
            "created_at": utcnow(),
            "created_by": self.db.actor(actor),
        }
        try:
            with self.db.transaction() as conn:
                self.db.insert(conn, "models", row)
                self.db.audit(conn, actor, "model.create", row["id"], {"name": name})
        except sqlite3.IntegrityError as exc:
            raise ConflictError(f"a model named {name!r} already exists; pick another name or add a version") from exc
        return ModelRecord.from_row(row)

    def get_model(self, *, model_id: str | None = None, name: str | None = None) -> ModelRecord:
        """A model by id or by name."""
        if (model_id is None) == (name is None):
            raise InvalidInputError("give exactly one of model_id= or name=")
        key, value = ("id", model_id) if model_id is not None else ("name", name)
        row = self.db.one(f"SELECT * FROM models WHERE {key} = ?", (value,))
        if row is None:
            raise NotFoundError(f"no model with {key} {value!r}")
        return ModelRecord.from_row(row)

    def ensure_model(self, *, name: str, description: str = "", actor: str | None = None) -> ModelRecord:
        """The model with this name, created if missing (for scripts and the demo)."""
        try:
            return self.get_model(name=name)
        except NotFoundError:
            try:
                return self.create_model(name=name, description=description, actor=actor)
            except ConflictError:
                return self.get_model(name=name)

    def list_models(
        self, *, name_contains: str | None = None, tag: str | None = None, limit: int = 100, offset: int = 0
    ) -> list[ModelRecord]:
        """Models sorted by name; filter by a name substring or by having a tag set."""
        where, params = [], []
        if name_contains:
            where.append("name LIKE ?")
            params.append(f"%{name_contains}%")
        if tag:
            where.append("id IN (SELECT model_id FROM tags WHERE tag = ?)")
            params.append(tag)
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        rows = self.db.all(f"SELECT * FROM models {clause} ORDER BY name LIMIT ? OFFSET ?", (*params, limit, offset))
        return [ModelRecord.from_row(r) for r in rows]

    # ------------------------------------------------------------------ blobs
    def put_blob(self, *, path: Path | None = None, data: bytes | None = None, actor: str | None = None) -> BlobRecord:
        """Store a file by content (idempotent: the same bytes give the same record)."""
        staged = self.blobs.stage(path=path, data=data)
        try:
            with self.db.transaction() as conn:
                staged.commit()
                conn.execute(
                    "INSERT OR IGNORE INTO blobs(sha256, size, created_at) VALUES (?, ?, ?)",
                    (staged.sha256, staged.size, utcnow()),
                )
                if staged.created:
                    self.db.audit(conn, actor, "blob.put", staged.sha256, {"size": staged.size})
        except BaseException:
            staged.undo()
            raise
        return self.get_blob(sha256=staged.sha256)

    def get_blob(self, *, sha256: str) -> BlobRecord:
        """A stored blob's record; NotFoundError if unknown or missing on disk."""
        row = self.db.one("SELECT * FROM blobs WHERE sha256 = ?", (sha256,))
        if row is None:
            raise NotFoundError(f"no blob with sha256 {sha256}")
        path = self.blobs.existing(sha256)
        return BlobRecord(row["sha256"], row["size"], str(path), datetime.fromisoformat(row["created_at"]))

    def blob_path(self, *, sha256: str) -> Path:
        """Filesystem path of a stored blob (read-only file)."""
        return Path(self.get_blob(sha256=sha256).path)

    # ------------------------------------------------------------------ versions
    def add_version(
        self,
        *,
        model_id: str,
        path: Path | None = None,
        data: bytes | None = None,
        technique: str = "fp32",
        config: dict[str, Any] | None = None,
        format: str = "onnx",  # noqa: A002 - the domain word
        profile: str | None = None,
        parent_id: str | None = None,
        metrics: dict[str, Any] | None = None,
        actor: str | None = None,
    ) -> VersionRecord:
        """Add an immutable version: its blob is stored by content, its row points at its parent.

        Everything is validated before anything is written, and the blob is removed
        again if the row cannot be written, so a failed add leaves no blob and no row.
        """
        self.get_model(model_id=model_id)
        _token(technique, "technique")
        _token(format, "format")
        if profile is not None:
            _token(profile, "profile")
        if parent_id is not None:
            self.get_version(version_id=parent_id)
        config_json = dump_json(config, "config")
        metrics_json = dump_json(metrics, "metrics")
        staged = self.blobs.stage(path=path, data=data)
        row = {
            "id": new_id(),
            "model_id": model_id,
            "parent_id": parent_id,
            "technique": technique,
            "config": config_json,
            "format": format,
            "profile": profile,
            "sha256": staged.sha256,
            "size": staged.size,
            "metrics": metrics_json,
            "created_at": utcnow(),
            "created_by": self.db.actor(actor),
        }
        try:
            with self.db.transaction() as conn:
                staged.commit()
                conn.execute(
                    "INSERT OR IGNORE INTO blobs(sha256, size, created_at) VALUES (?, ?, ?)",
                    (staged.sha256, staged.size, row["created_at"]),
                )
                self.db.insert(conn, "versions", row)
                self.db.audit(
                    conn,
                    actor,
                    "version.create",
                    row["id"],
                    {"model_id": model_id, "parent_id": parent_id, "technique": technique, "sha256": staged.sha256},
                )
        except BaseException:
            staged.undo()
            raise
        return VersionRecord.from_row(row)

    def get_version(self, *, version_id: str) -> VersionRecord:
        """One version by id."""
        row = self.db.one("SELECT * FROM versions WHERE id = ?", (version_id,))
        if row is None:
            raise NotFoundError(f"no model version with id {version_id!r}")
        return VersionRecord.from_row(row)

    def list_versions(
        self,
        *,
        model_id: str,
        format: str | None = None,  # noqa: A002
        profile: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[VersionRecord]:
        """A model's versions, oldest first, optionally filtered by format or profile."""
        self.get_model(model_id=model_id)
        where, params = ["model_id = ?"], [model_id]
        if format:
            where.append("format = ?")
            params.append(format)
        if profile:
            where.append("profile = ?")
            params.append(profile)
        rows = self.db.all(
            f"SELECT * FROM versions WHERE {' AND '.join(where)} ORDER BY created_at, rowid LIMIT ? OFFSET ?",
            (*params, limit, offset),
        )
        return [VersionRecord.from_row(r) for r in rows]

    def lineage(self, *, version_id: str) -> list[VersionRecord]:
        """The parent chain from the root to this version (inclusive), oldest first."""
        chain: list[VersionRecord] = []
        seen: set[str] = set()
        current: str | None = version_id
        while current is not None and current not in seen:
            seen.add(current)
            version = self.get_version(version_id=current)
            chain.append(version)
            current = version.parent_id
        return list(reversed(chain))

    def children(self, *, version_id: str) -> list[VersionRecord]:
        """Versions derived directly from this one."""
        rows = self.db.all("SELECT * FROM versions WHERE parent_id = ? ORDER BY created_at, rowid", (version_id,))
        return [VersionRecord.from_row(r) for r in rows]

    def add_metrics(self, *, version_id: str, metrics: dict[str, Any], source: str, actor: str | None = None) -> None:
        """Attach metrics measured after creation (evaluation, device benchmarks); the version stays immutable."""
        self.get_version(version_id=version_id)
        text = dump_json(metrics, "metrics")
        with self.db.transaction() as conn:
            self.db.insert(
                conn,
                "version_metrics",
                {"version_id": version_id, "source": source, "metrics": text, "created_at": utcnow()},
            )
            self.db.audit(conn, actor, "version.metrics", version_id, {"source": source})

    def version_metrics(self, *, version_id: str) -> dict[str, Any]:
        """Creation metrics under ``"build"`` plus later ones under their source (latest per source wins)."""
        version = self.get_version(version_id=version_id)
        out: dict[str, Any] = {"build": version.metrics}
        for row in self.db.all("SELECT * FROM version_metrics WHERE version_id = ? ORDER BY id", (version_id,)):
            out[row["source"]] = json.loads(row["metrics"])
        return out
