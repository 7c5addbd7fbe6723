"""What the registry's side tables need of the model catalog (models, versions, blobs), as a Protocol.

Tags, artifacts and retention are their own objects on the registry's database; they
look versions and blobs up through this narrow interface, which
:class:`controller.registry.Registry` provides, instead of importing the registry
(which builds them) and closing an import loop.
"""

from __future__ import annotations

from typing import Protocol

from controller.registry.blobs import BlobStore
from controller.registry.records import BlobRecord, ModelRecord, VersionRecord


class Catalog(Protocol):
    """Model, version and blob lookups (see :class:`controller.registry.Registry`)."""

    blobs: BlobStore

    def get_model(self, *, model_id: str | None = None, name: str | None = None) -> ModelRecord: ...

    def get_version(self, *, version_id: str) -> VersionRecord: ...

    def list_versions(
        self, *, model_id: str, format: str | None = None, profile: str | None = None,  # noqa: A002
        limit: int = 100, offset: int = 0,
    ) -> list[VersionRecord]: ...

    def lineage(self, *, version_id: str) -> list[VersionRecord]: ...

    def children(self, *, version_id: str) -> list[VersionRecord]: ...

    def get_blob(self, *, sha256: str) -> BlobRecord: ...
