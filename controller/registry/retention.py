"""What may be deleted, and deleting it: versions (refused while deployed or derived from), empty models, blobs.

Deployed versions are kept for the audit trail and for rollbacks; lineage must stay
complete; a blob goes only once no version or artifact refers to it, under the write
lock like every blob commit, so a concurrent add of the same content cannot lose its file.
"""

from __future__ import annotations

import json

from controller.registry.catalog import Catalog
from controller.registry.db import Database
from controller.registry.errors import ConflictError, InvalidInputError


class Retention:
    """Deletion rules on the registry's :class:`Database` (``registry.retention``)."""

    def __init__(self, db: Database, catalog: Catalog) -> None:
        self.db = db
        self.catalog = catalog

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
        versions = [self.catalog.get_version(version_id=v) for v in version_ids]
        model_ids = {v.model_id for v in versions}
        if delete_model and len(model_ids) != 1:
            raise InvalidInputError("delete_model needs versions of exactly one model")
        busy = self.versions_in_use(version_ids=version_ids)
        if busy:
            raise ConflictError(
                f"version(s) {', '.join(busy)} are or were deployed to devices; deployed versions are kept "
                "(roll back or deploy another version; history stays auditable)"
            )
        children = [c.id for v in versions for c in self.catalog.children(version_id=v.id) if c.id not in version_ids]
        if children:
            raise ConflictError(
                f"version(s) {', '.join(children)} derive from what you are deleting; delete them first"
            )
        if delete_model:
            (model_id,) = model_ids
            every = self.catalog.list_versions(model_id=model_id, limit=1_000_000)
            rest = [v.id for v in every if v.id not in version_ids]
            if rest:
                raise ConflictError(f"model {model_id} still has versions {rest}; delete them too")
        ids = [v.id for v in versions]
        by_id = {v.id: v for v in versions}
        depth = {v.id: len(self.catalog.lineage(version_id=v.id)) for v in versions}
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
        model = self.catalog.get_model(model_id=model_id)
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
                self.catalog.blobs.remove(sha)
        return removed
