"""Tags (``production``, ``candidate``, custom) pointing at versions, their history and rollbacks.

A tag move is a compare-and-set when the caller says what it expects, every move is
kept in ``tag_history``, and a rollback may only go to a version in the tag's lineage
(an ancestor of the current version or an earlier holder of the tag).
"""

from __future__ import annotations

import re
import sqlite3
from typing import Any

from controller.registry.catalog import Catalog
from controller.registry.db import Database, utcnow
from controller.registry.errors import ConflictError, InvalidInputError, NotFoundError
from controller.registry.records import VersionRecord

_TAG_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_UNSET: Any = object()
PRODUCTION = "production"
CANDIDATE = "candidate"


class TagRecords:
    """Tags on the registry's :class:`Database` (``registry.tags``).

    Example:
        >>> reg.tags.set_tag(model_id=m.id, tag="production", version_id=v.id)  # doctest: +SKIP
    """

    def __init__(self, db: Database, catalog: Catalog) -> None:
        self.db = db
        self.catalog = catalog

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
        version = self.catalog.get_version(version_id=version_id)
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
        return self.catalog.get_version(version_id=row["version_id"])

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
        for version in reversed(self.catalog.lineage(version_id=current.id)[:-1]):
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
        version = self.catalog.get_version(version_id=target)
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
