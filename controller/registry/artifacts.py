"""Artifacts: signed manifests built from a version for one device profile, over stored blobs."""

from __future__ import annotations

from common.manifest import Manifest
from controller.registry.catalog import Catalog
from controller.registry.db import Database, new_id, utcnow
from controller.registry.errors import InvalidInputError, NotFoundError
from controller.registry.records import ArtifactRecord


class ArtifactRecords:
    """Artifacts on the registry's :class:`Database` (``registry.artifacts``)."""

    def __init__(self, db: Database, catalog: Catalog) -> None:
        self.db = db
        self.catalog = catalog

    def add_artifact(self, *, manifest: Manifest, actor: str | None = None) -> ArtifactRecord:
        """Record a signed manifest built from a version; all its files must already be stored blobs."""
        if not manifest.signature:
            raise InvalidInputError("refusing an unsigned manifest: sign it with common.manifest.sign_manifest")
        version = self.catalog.get_version(version_id=manifest.version)
        if version.model_id != manifest.model_id:
            raise InvalidInputError(
                f"manifest model_id {manifest.model_id} does not match version {version.id}'s model {version.model_id}"
            )
        for ref in manifest.files:
            blob = self.catalog.get_blob(sha256=ref.sha256)
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
