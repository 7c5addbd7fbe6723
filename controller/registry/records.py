"""Plain, frozen records the registry returns: what the REST layer serialises and the demo prints.

Rows are converted once here so callers never see SQLite types (JSON text,
0/1 booleans, ISO strings) and a schema change touches one file.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from common.errors import ReasonCode
from common.update_states import UpdateState


class DeviceDeploymentState(StrEnum):
    """Where one device is in one deployment; values are stored and never change."""

    PENDING = "pending"
    IN_PROGRESS = "in_progress"
    COMMITTED = "committed"
    ROLLED_BACK = "rolled_back"
    FAILED = "failed"
    SUPERSEDED = "superseded"

    @property
    def terminal(self) -> bool:
        """True once the device will not move any further in this deployment."""
        return self not in (DeviceDeploymentState.PENDING, DeviceDeploymentState.IN_PROGRESS)


_STATUS_OF: dict[UpdateState, DeviceDeploymentState | None] = {
    UpdateState.DOWNLOAD: DeviceDeploymentState.IN_PROGRESS,
    UpdateState.VERIFY: DeviceDeploymentState.IN_PROGRESS,
    UpdateState.INSTALL: DeviceDeploymentState.IN_PROGRESS,
    UpdateState.BENCHMARK: DeviceDeploymentState.IN_PROGRESS,
    UpdateState.COMMIT: DeviceDeploymentState.COMMITTED,
    UpdateState.ROLLBACK: DeviceDeploymentState.ROLLED_BACK,
    UpdateState.FAILURE: DeviceDeploymentState.FAILED,
    UpdateState.IDLE: None,
}
"""The one mapping from what an agent reports to where its device stands in a deployment."""


def job_state_to_status(state: UpdateState, reason: ReasonCode) -> DeviceDeploymentState | None:
    """A job report's update state → the device's status in the deployment (None = no change).

    ``idle`` closes a job: it changes nothing after a commit or a rollback, but an ``idle``
    with a reason other than ``ok`` is a refusal before any work (bad signature, wrong
    profile), which fails the device.

    Example:
        >>> job_state_to_status(UpdateState.COMMIT, ReasonCode.OK)
        <DeviceDeploymentState.COMMITTED: 'committed'>
    """
    if state is UpdateState.IDLE and reason is not ReasonCode.OK:
        return DeviceDeploymentState.FAILED
    return _STATUS_OF[UpdateState(state)]


class ReportOutcome(StrEnum):
    """What the registry did with one device report; the fleet service counts these."""

    APPLIED = "applied"
    DUPLICATE = "duplicate"
    STALE = "stale"
    UNKNOWN_DEPLOYMENT = "unknown_deployment"
    NOT_TARGETED = "not_targeted"


class DeploymentState(StrEnum):
    """Aggregate state of a deployment across its target devices."""

    IN_PROGRESS = "in_progress"
    SUCCEEDED = "succeeded"
    PARTIAL = "partial"
    FAILED = "failed"
    ROLLED_BACK = "rolled_back"


def _json(value: str | None, default: Any = None) -> Any:
    return default if value is None or value == "" else json.loads(value)


def _dt(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


class _Record:
    def as_dict(self) -> dict[str, Any]:
        """JSON-ready dict (datetimes as ISO 8601 UTC) for the REST layer and summaries."""
        out = asdict(self)  # type: ignore[call-overload]
        for key, value in out.items():
            if isinstance(value, datetime):
                out[key] = value.isoformat()
        return out


@dataclass(frozen=True)
class ModelRecord(_Record):
    """A named model; its builds are versions."""

    id: str
    name: str
    description: str
    created_at: datetime
    created_by: str

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> ModelRecord:
        """Build from a ``models`` row."""
        return cls(row["id"], row["name"], row["description"], _dt(row["created_at"]), row["created_by"])


@dataclass(frozen=True)
class VersionRecord(_Record):
    """One immutable build of a model: the blob, how it was made, and from what."""

    id: str
    model_id: str
    parent_id: str | None
    technique: str
    config: dict[str, Any]
    format: str
    profile: str | None
    sha256: str
    size: int
    metrics: dict[str, Any]
    created_at: datetime
    created_by: str

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> VersionRecord:
        """Build from a ``versions`` row."""
        return cls(
            id=row["id"],
            model_id=row["model_id"],
            parent_id=row["parent_id"],
            technique=row["technique"],
            config=_json(row["config"], {}),
            format=row["format"],
            profile=row["profile"],
            sha256=row["sha256"],
            size=row["size"],
            metrics=_json(row["metrics"], {}),
            created_at=_dt(row["created_at"]),
            created_by=row["created_by"],
        )


@dataclass(frozen=True)
class BlobRecord(_Record):
    """A content-addressed file in the workspace."""

    sha256: str
    size: int
    path: str
    created_at: datetime


@dataclass(frozen=True)
class ArtifactRecord(_Record):
    """A signed, deployable manifest built from a version for one profile."""

    id: str
    version_id: str
    profile: str
    manifest: dict[str, Any]
    created_at: datetime

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> ArtifactRecord:
        """Build from an ``artifacts`` row."""
        return cls(row["id"], row["version_id"], row["profile"], _json(row["manifest"]), _dt(row["created_at"]))


@dataclass(frozen=True)
class DeviceRecord(_Record):
    """What the controller knows about one device, from its retained state, caps and reports."""

    id: str
    profile: str
    online: bool
    session_id: str | None
    state: dict[str, Any] | None
    caps: dict[str, Any] | None
    active: dict[str, Any] | None
    previous: dict[str, Any] | None
    last_bench: dict[str, Any] | None
    desired_deployment_id: str | None
    last_seen: datetime | None

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> DeviceRecord:
        """Build from a ``devices`` row."""
        return cls(
            id=row["id"],
            profile=row["profile"] or "",
            online=bool(row["online"]),
            session_id=row["session_id"],
            state=_json(row["state"]),
            caps=_json(row["caps"]),
            active=_json(row["active"]),
            previous=_json(row["previous"]),
            last_bench=_json(row["last_bench"]),
            desired_deployment_id=row["desired_deployment_id"],
            last_seen=_dt(row["last_seen"]),
        )


@dataclass(frozen=True)
class DeploymentDeviceRecord(_Record):
    """One device's progress in one deployment."""

    deployment_id: str
    device_id: str
    artifact_id: str
    state: DeviceDeploymentState
    reason: str
    detail: str
    last_job_state: str | None
    last_seq: int
    previous_deployment_id: str | None
    bench: dict[str, Any] | None
    updated_at: datetime

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> DeploymentDeviceRecord:
        """Build from a ``deployment_devices`` row."""
        return cls(
            deployment_id=row["deployment_id"],
            device_id=row["device_id"],
            artifact_id=row["artifact_id"],
            state=DeviceDeploymentState(row["state"]),
            reason=row["reason"],
            detail=row["detail"],
            last_job_state=row["last_job_state"],
            last_seq=row["last_seq"],
            previous_deployment_id=row["previous_deployment_id"],
            bench=_json(row["bench"]),
            updated_at=_dt(row["updated_at"]),
        )


@dataclass(frozen=True)
class DeploymentRecord(_Record):
    """A rollout of a version to a set of devices, with each device's progress.

    Each device gets the artifact built for its profile (``devices[i].artifact_id``);
    ``artifact_id``/``manifest`` name the first one, for display. A rollback deployment
    may send devices back to different earlier artifacts.
    """

    id: str
    artifact_id: str
    version_id: str
    kind: str
    rollback_of: str | None
    state: DeploymentState
    created_at: datetime
    created_by: str
    manifest: dict[str, Any]
    devices: list[DeploymentDeviceRecord] = field(default_factory=list)

    @property
    def done(self) -> bool:
        """True when every target device reached a terminal state."""
        return all(d.state.terminal for d in self.devices)

    def counts(self) -> dict[str, int]:
        """How many devices are in each per-device state."""
        out: dict[str, int] = {}
        for d in self.devices:
            out[d.state.value] = out.get(d.state.value, 0) + 1
        return out


@dataclass(frozen=True)
class AuditEntry(_Record):
    """One mutating call: who did what to which target, when (UTC)."""

    id: str
    ts: datetime
    actor: str
    action: str
    target: str
    details: dict[str, Any]

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> AuditEntry:
        """Build from an ``audit_log`` row."""
        return cls(row["id"], _dt(row["ts"]), row["actor"], row["action"], row["target"], _json(row["details"], {}))
