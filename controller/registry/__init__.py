"""Model registry and fleet records: one SQLite file (WAL) plus content-addressed blobs.

Import :class:`Registry` and the typed errors from here; the REST layer maps
:class:`RegistryError` subclasses to HTTP statuses via their ``http_status``.
"""

from controller.registry.db import Database, new_id, utcnow
from controller.registry.deployments import DeploymentRecords
from controller.registry.devices import DeviceRecords
from controller.registry.errors import ConflictError, InvalidInputError, NotFoundError, RegistryError
from controller.registry.records import (
    ArtifactRecord,
    AuditEntry,
    BlobRecord,
    DeploymentDeviceRecord,
    DeploymentRecord,
    DeploymentState,
    DeviceDeploymentState,
    DeviceRecord,
    ModelRecord,
    ReportOutcome,
    VersionRecord,
    job_state_to_status,
)
from controller.registry.reports import ReportRecords, ReportResult
from controller.registry.store import Registry, validate_name
from controller.registry.tags import CANDIDATE, PRODUCTION

__all__ = [
    "CANDIDATE",
    "PRODUCTION",
    "ArtifactRecord",
    "AuditEntry",
    "BlobRecord",
    "ConflictError",
    "Database",
    "DeploymentDeviceRecord",
    "DeploymentRecord",
    "DeploymentState",
    "DeviceDeploymentState",
    "DeploymentRecords",
    "DeviceRecord",
    "DeviceRecords",
    "InvalidInputError",
    "ModelRecord",
    "NotFoundError",
    "Registry",
    "RegistryError",
    "ReportOutcome",
    "ReportRecords",
    "ReportResult",
    "VersionRecord",
    "job_state_to_status",
    "new_id",
    "utcnow",
    "validate_name",
]
