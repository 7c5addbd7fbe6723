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
    >>> reg.set_tag(model_id=m.id, tag="production", version_id=v.id)      # doctest: +SKIP
"""

from __future__ import annotations

import json
import re
import sqlite3
from datetime import datetime
from pathlib import Path
from typing import Any

from common.manifest import Manifest
from controller.registry.blobs import BlobStore
from controller.registry.db import Database, dump_json, new_id, utcnow
from controller.registry.deployments import DeploymentRecords
from controller.registry.devices import DeviceRecords
from controller.registry.errors import ConflictError, InvalidInputError, NotFoundError
from controller.registry.records import (
    ArtifactRecord,
    AuditEntry,
    BlobRecord,
    ModelRecord,
    VersionRecord,
)
from controller.registry.reports import ReportRecords
from controller.registry.schema import create_schema

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
_TOKEN_RE = re.compile(r"^[a-z0-9][a-z0-9_.+-]{0,63}$")
_TAG_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_UNSET: Any = object()
PRODUCTION = "production"
CANDIDATE = "candidate"


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

    def versions_in_use(self, *, version_ids: list[str]) -> list[str]:
        """Which of these versions a device runs or keeps, or any deployment ever shipped.

        Deployed versions are kept for the audit trail and for rollbacks, so deletion refuses them.
        """
        if not version_ids:
            return []
        marks = ", ".join("?" for _ in version_ids)
        hits = {
            r["version_id"]
            for r in self.db.all(
                f"SELECT DISTINCT a.version_id FROM deployment_devices dd JOIN artifacts a ON a.id = dd.artifact_id "
                f"WHERE a.version_id IN ({marks})",
                tuple(version_ids),
            )
        }
        for row in self.db.all("SELECT active, previous FROM devices"):
            for slot in (row["active"], row["previous"]):
                version = json.loads(slot).get("version") if slot else None
                if version in version_ids:
                    hits.add(version)
        return sorted(hits)

    def delete_versions(self, *, version_ids: list[str], actor: str | None = None, delete_model: bool = False) -> None:
        """Delete versions (and optionally their model) in one audited transaction.

        Refused (ConflictError) while a version is deployed or kept on a device, or while
        another version derives from it (lineage must stay complete). Blobs nothing refers
        to any more are removed after the commit.
        """
        versions = [self.get_version(version_id=v) for v in version_ids]
        model_ids = {v.model_id for v in versions}
        if delete_model and len(model_ids) != 1:
            raise InvalidInputError("delete_model needs versions of exactly one model")
        busy = self.versions_in_use(version_ids=version_ids)
        if busy:
            raise ConflictError(
                f"version(s) {', '.join(busy)} are or were deployed to devices; deployed versions are kept "
                "(roll back or deploy another version; history stays auditable)"
            )
        children = [c.id for v in versions for c in self.children(version_id=v.id) if c.id not in version_ids]
        if children:
            raise ConflictError(
                f"version(s) {', '.join(children)} derive from what you are deleting; delete them first"
            )
        if delete_model:
            (model_id,) = model_ids
            rest = [v.id for v in self.list_versions(model_id=model_id, limit=1_000_000) if v.id not in version_ids]
            if rest:
                raise ConflictError(f"model {model_id} still has versions {rest}; delete them too")
        ids = [v.id for v in versions]
        by_id = {v.id: v for v in versions}
        depth = {v.id: len(self.lineage(version_id=v.id)) for v in versions}
        marks = ", ".join("?" for _ in ids)
        with self.db.transaction() as conn:
            conn.execute(
                f"DELETE FROM artifact_blobs WHERE artifact_id IN (SELECT id FROM artifacts WHERE version_id IN "
                f"({marks}))",
                ids,
            )
            conn.execute(f"DELETE FROM artifacts WHERE version_id IN ({marks})", ids)
            conn.execute(f"DELETE FROM tags WHERE version_id IN ({marks})", ids)
            conn.execute(f"DELETE FROM version_metrics WHERE version_id IN ({marks})", ids)
            # children first, so the parent foreign key never dangles mid-statement
            for vid in sorted(ids, key=lambda i: -depth[i]):
                conn.execute("DELETE FROM versions WHERE id = ?", (vid,))
                self.db.audit(conn, actor, "version.delete", vid, {"model_id": by_id[vid].model_id})
            if delete_model:
                (model_id,) = model_ids
                conn.execute("DELETE FROM tags WHERE model_id = ?", (model_id,))
                conn.execute("DELETE FROM models WHERE id = ?", (model_id,))
                self.db.audit(conn, actor, "model.delete", model_id, {})
        self.gc_blobs()

    def delete_empty_model(self, *, model_id: str, actor: str | None = None) -> None:
        """Delete a model that has no version (left by an interrupted upload); audited.

        ConflictError while it has versions: those go through :meth:`delete_versions`, which
        checks deployments and lineage.
        """
        model = self.get_model(model_id=model_id)
        with self.db.transaction() as conn:
            if self.db.one("SELECT 1 AS x FROM versions WHERE model_id = ? LIMIT 1", (model_id,)) is not None:
                raise ConflictError(f"model {model_id} has versions; delete them with delete_versions")
            conn.execute("DELETE FROM tags WHERE model_id = ?", (model_id,))
            conn.execute("DELETE FROM models WHERE id = ?", (model_id,))
            self.db.audit(conn, actor, "model.delete", model_id, {"name": model.name})

    def gc_blobs(self) -> list[str]:
        """Remove blobs no version or artifact refers to; returns their sha256s.

        Runs under the write lock, like every blob commit, so a concurrent add of the same
        content cannot lose its file.
        """
        with self.db.transaction() as conn:
            rows = conn.execute(
                "SELECT sha256 FROM blobs WHERE sha256 NOT IN (SELECT sha256 FROM versions) "
                "AND sha256 NOT IN (SELECT sha256 FROM artifact_blobs)"
            ).fetchall()
            removed = [r[0] for r in rows]
            for sha in removed:
                conn.execute("DELETE FROM blobs WHERE sha256 = ?", (sha,))
                self.blobs.remove(sha)
        return removed

    # ------------------------------------------------------------------ tags
    def set_tag(
        self,
        *,
        model_id: str,
        tag: str,
        version_id: str,
        expected_version_id: str | None = _UNSET,
        actor: str | None = None,
    ) -> VersionRecord:
        """Point a tag (``production``, ``candidate``, custom) at a version of the model.

        ``expected_version_id`` makes it a compare-and-set (None = the tag must not exist
        yet): two operators promoting at once get a ConflictError instead of a silent
        overwrite.
        """
        if not isinstance(tag, str) or not _TAG_RE.match(tag) or ".." in tag:
            raise InvalidInputError(f"invalid tag {tag!r}: use 1-64 characters from [A-Za-z0-9_.-]")
        version = self.get_version(version_id=version_id)
        if version.model_id != model_id:
            raise InvalidInputError(f"version {version_id} belongs to model {version.model_id}, not {model_id}")
        with self.db.transaction() as conn:
            row = self.db.one("SELECT version_id FROM tags WHERE model_id = ? AND tag = ?", (model_id, tag))
            current = row["version_id"] if row else None
            if expected_version_id is not _UNSET and current != expected_version_id:
                raise ConflictError(
                    f"tag {tag!r} of model {model_id} points at {current}, not the expected {expected_version_id}; "
                    "reload and retry"
                )
            self._write_tag(conn, model_id, tag, version_id, "set", actor)
            self.db.audit(conn, actor, "tag.set", model_id, {"tag": tag, "version_id": version_id, "from": current})
        return version

    def _write_tag(
        self, conn: sqlite3.Connection, model_id: str, tag: str, version_id: str, action: str, actor: str | None
    ) -> None:
        now = utcnow()
        conn.execute(
            "INSERT INTO tags(model_id, tag, version_id, updated_at, updated_by) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT(model_id, tag) DO UPDATE SET version_id = excluded.version_id, "
            "updated_at = excluded.updated_at, updated_by = excluded.updated_by",
            (model_id, tag, version_id, now, self.db.actor(actor)),
        )
        self.db.insert(
            conn,
            "tag_history",
            {
                "model_id": model_id,
                "tag": tag,
                "version_id": version_id,
                "action": action,
                "ts": now,
                "actor": self.db.actor(actor),
            },
        )

    def get_tag(self, *, model_id: str, tag: str) -> VersionRecord:
        """The version a tag points at."""
        row = self.db.one("SELECT version_id FROM tags WHERE model_id = ? AND tag = ?", (model_id, tag))
        if row is None:
            raise NotFoundError(f"model {model_id} has no tag {tag!r}")
        return self.get_version(version_id=row["version_id"])

    def list_tags(self, *, model_id: str) -> dict[str, str]:
        """Tag name → version id for one model."""
        rows = self.db.all("SELECT tag, version_id FROM tags WHERE model_id = ? ORDER BY tag", (model_id,))
        return {r["tag"]: r["version_id"] for r in rows}

    def delete_tag(self, *, model_id: str, tag: str, actor: str | None = None) -> None:
        """Remove a tag (audited)."""
        self.get_tag(model_id=model_id, tag=tag)
        with self.db.transaction() as conn:
            conn.execute("DELETE FROM tags WHERE model_id = ? AND tag = ?", (model_id, tag))
            self.db.audit(conn, actor, "tag.delete", model_id, {"tag": tag})

    def rollback_targets(self, *, model_id: str, tag: str = PRODUCTION) -> list[str]:
        """Versions a tag may roll back to: ancestors of its current version and its earlier holders."""
        current = self.get_tag(model_id=model_id, tag=tag)
        history = self.db.all(
            "SELECT version_id FROM tag_history WHERE model_id = ? AND tag = ? ORDER BY id DESC", (model_id, tag)
        )
        out: list[str] = []
        for row in history:
            if row["version_id"] != current.id and row["version_id"] not in out:
                out.append(row["version_id"])
        for version in reversed(self.lineage(version_id=current.id)[:-1]):
            if version.id not in out:
                out.append(version.id)
        return out

    def rollback_tag(
        self,
        *,
        model_id: str,
        tag: str = PRODUCTION,
        to_version_id: str | None = None,
        actor: str | None = None,
        reason: str = "",
    ) -> VersionRecord:
        """Move a tag back to an earlier version in its lineage (default: the previous holder).

        "Earlier in the lineage" means an ancestor of the current version or a version
        that held this tag before; anything else is refused, so a rollback can never
        promote an untested sibling by mistake.
        """
        current = self.get_tag(model_id=model_id, tag=tag)
        allowed = self.rollback_targets(model_id=model_id, tag=tag)
        if not allowed:
            raise ConflictError(f"tag {tag!r} of model {model_id} has no earlier version to roll back to")
        target = to_version_id or allowed[0]
        if target not in allowed:
            raise InvalidInputError(
                f"version {target} is not in the lineage of {tag!r} (currently {current.id}); "
                f"allowed targets: {', '.join(allowed)}"
            )
        version = self.get_version(version_id=target)
        with self.db.transaction() as conn:
            self._write_tag(conn, model_id, tag, target, "rollback", actor)
            self.db.audit(
                conn,
                actor,
                "tag.rollback",
                model_id,
                {"tag": tag, "from": current.id, "to": target, "reason": reason},
            )
        return version

    # ------------------------------------------------------------------ artifacts
    def add_artifact(self, *, manifest: Manifest, actor: str | None = None) -> ArtifactRecord:
        """Record a signed manifest built from a version; all its files must already be stored blobs."""
        if not manifest.signature:
            raise InvalidInputError("refusing an unsigned manifest: sign it with common.manifest.sign_manifest")
        version = self.get_version(version_id=manifest.version)
        if version.model_id != manifest.model_id:
            raise InvalidInputError(
                f"manifest model_id {manifest.model_id} does not match version {version.id}'s model {version.model_id}"
            )
        for ref in manifest.files:
            blob = self.get_blob(sha256=ref.sha256)
            if blob.size != ref.size:
                raise InvalidInputError(f"manifest says {ref.filename} is {ref.size} bytes, stored blob is {blob.size}")
        row = {
            "id": new_id(),
            "version_id": version.id,
            "profile": manifest.profile,
            "manifest": manifest.model_dump_json(),
            "created_at": utcnow(),
        }
        with self.db.transaction() as conn:
            self.db.insert(conn, "artifacts", row)
            for ref in manifest.files:
                conn.execute(
                    "INSERT OR IGNORE INTO artifact_blobs(artifact_id, sha256, role) VALUES (?, ?, ?)",
                    (row["id"], ref.sha256, ref.role),
                )
            self.db.audit(
                conn, actor, "artifact.create", row["id"], {"version_id": version.id, "profile": manifest.profile}
            )
        return ArtifactRecord.from_row(row)

    def get_artifact(self, *, artifact_id: str) -> ArtifactRecord:
        """One artifact by id."""
        row = self.db.one("SELECT * FROM artifacts WHERE id = ?", (artifact_id,))
        if row is None:
            raise NotFoundError(f"no artifact with id {artifact_id!r}")
        return ArtifactRecord.from_row(row)

    def list_artifacts(self, *, version_id: str | None = None, profile: str | None = None) -> list[ArtifactRecord]:
        """Artifacts newest first, optionally for one version and/or profile."""
        where, params = [], []
        if version_id:
            where.append("version_id = ?")
            params.append(version_id)
        if profile:
            where.append("profile = ?")
            params.append(profile)
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        rows = self.db.all(f"SELECT * FROM artifacts {clause} ORDER BY created_at DESC, rowid DESC", tuple(params))
        return [ArtifactRecord.from_row(r) for r in rows]

    def manifest(self, *, artifact_id: str) -> Manifest:
        """The signed manifest of an artifact, as the protocol model."""
        return Manifest.model_validate(self.get_artifact(artifact_id=artifact_id).manifest)

    def find_artifact(self, *, manifest: Manifest) -> ArtifactRecord | None:
        """The artifact recorded for exactly this signed manifest, if any."""
        for art in self.list_artifacts(version_id=manifest.version, profile=manifest.profile):
            if art.manifest.get("signature") == manifest.signature:
                return art
        return None
