"""Deployments and each target device's status in them.

Kept beside the model registry (same SQLite file, same transactions) because a
deployment references an artifact and a version, and "refuse to delete a version while
it is deployed" must be one query, not a cross-store dance. Terminal per-device states
(committed, rolled back, failed, superseded) are final; the aggregate state of a
deployment is recomputed in the same transaction as every change of its devices.
"""

from __future__ import annotations

import json
import sqlite3
from datetime import datetime

from common.manifest import Manifest
from controller.registry.db import Database, new_id, utcnow
from controller.registry.devices import DeviceRecords
from controller.registry.errors import ConflictError, InvalidInputError, NotFoundError
from controller.registry.records import (
    ArtifactRecord,
    DeploymentDeviceRecord,
    DeploymentRecord,
    DeploymentState,
    DeviceDeploymentState,
)

S = DeviceDeploymentState


class DeploymentRecords:
    """Deployments on the registry's :class:`Database` (``registry.deployments``).

    Args:
        db: the registry's database; artifacts are read from the same file.
        devices: the device records (targets must be known devices).
    """

    def __init__(self, db: Database, devices: DeviceRecords) -> None:
        self.db = db
        self.devices = devices

    def create_deployment(
        self,
        *,
        device_ids: list[str],
        artifact_id: str | None = None,
        device_artifacts: dict[str, str] | None = None,
        actor: str | None = None,
        kind: str = "deploy",
        rollback_of: str | None = None,
        allow_profile_mismatch: bool = False,
    ) -> DeploymentRecord:
        """Record a deployment to devices, superseding their unfinished ones.

        Give one ``artifact_id`` for every device, or ``device_artifacts`` (device id →
        artifact id) when devices of several profiles get the artifact built for theirs.
        Each device remembers the deployment it was asked to run before, which is what a
        fleet-level rollback sends it back to.
        """
        if not device_ids or len(set(device_ids)) != len(device_ids):
            raise InvalidInputError("device_ids must be a non-empty list without duplicates")
        if (artifact_id is None) == (device_artifacts is None):
            raise InvalidInputError("give exactly one of artifact_id= or device_artifacts=")
        mapping = device_artifacts or dict.fromkeys(device_ids, artifact_id)
        if set(mapping) != set(device_ids):
            raise InvalidInputError("device_artifacts must name an artifact for exactly the target devices")
        artifacts = {a: _artifact(self.db, a) for a in dict.fromkeys(mapping.values())}
        devices = [self.devices.get_device(device_id=d) for d in device_ids]
        wrong = [
            f"{d.id} ({d.profile})" for d in devices if d.profile and d.profile != artifacts[mapping[d.id]].profile
        ]
        if wrong and not allow_profile_mismatch:
            raise InvalidInputError(
                f"devices {', '.join(wrong)} have another profile than the artifact sent to them; "
                "build an artifact per profile"
            )
        primary = artifacts[mapping[device_ids[0]]]
        dep_id = new_id()
        now = utcnow()
        with self.db.transaction() as conn:
            self.db.insert(
                conn,
                "deployments",
                {
                    "id": dep_id,
                    "artifact_id": primary.id,
                    "version_id": primary.version_id,
                    "kind": kind,
                    "rollback_of": rollback_of,
                    "state": DeploymentState.IN_PROGRESS.value,
                    "created_at": now,
                    "created_by": self.db.actor(actor),
                },
            )
            for device in devices:
                prev = device.desired_deployment_id
                if prev:
                    conn.execute(
                        "UPDATE deployment_devices SET state = ?, reason = 'superseded', detail = ?, updated_at = ? "
                        "WHERE deployment_id = ? AND device_id = ? AND state IN ('pending', 'in_progress')",
                        (S.SUPERSEDED.value, f"superseded by deployment {dep_id}", now, prev, device.id),
                    )
                    refresh_deployment_state(conn, prev)
                self.db.insert(
                    conn,
                    "deployment_devices",
                    {
                        "deployment_id": dep_id,
                        "device_id": device.id,
                        "artifact_id": mapping[device.id],
                        "state": S.PENDING.value,
                        "previous_deployment_id": prev,
                        "updated_at": now,
                    },
                )
                conn.execute("UPDATE devices SET desired_deployment_id = ? WHERE id = ?", (dep_id, device.id))
            self.db.audit(
                conn,
                actor,
                f"deployment.{kind}",
                dep_id,
                {
                    "version_id": primary.version_id,
                    "artifacts": mapping,
                    "rollback_of": rollback_of,
                },
            )
        return self.get_deployment(deployment_id=dep_id)

    def get_deployment(self, *, deployment_id: str) -> DeploymentRecord:
        """A deployment with every target device's status."""
        # Devices first: a report updates a device and the aggregate state in one transaction, so a
        # deployment row read *after* its devices is never older than them. Read the other way round,
        # a report committing in between gave "every device terminal" with state still in_progress.
        devs = self.db.all(
            "SELECT * FROM deployment_devices WHERE deployment_id = ? ORDER BY device_id", (deployment_id,)
        )
        row = self.db.one(
            "SELECT d.*, a.manifest FROM deployments d JOIN artifacts a ON a.id = d.artifact_id WHERE d.id = ?",
            (deployment_id,),
        )
        if row is None:
            raise NotFoundError(f"no deployment with id {deployment_id!r}")
        return DeploymentRecord(
            id=row["id"],
            artifact_id=row["artifact_id"],
            version_id=row["version_id"],
            kind=row["kind"],
            rollback_of=row["rollback_of"],
            state=DeploymentState(row["state"]),
            created_at=datetime.fromisoformat(row["created_at"]),
            created_by=row["created_by"],
            manifest=json.loads(row["manifest"]),
            devices=[DeploymentDeviceRecord.from_row(d) for d in devs],
        )

    def list_deployments(
        self, *, state: str | None = None, device_id: str | None = None, limit: int = 100, offset: int = 0
    ) -> list[DeploymentRecord]:
        """Deployments newest first, optionally by aggregate state or target device."""
        where, params = [], []
        if state:
            where.append("state = ?")
            params.append(state)
        if device_id:
            where.append("id IN (SELECT deployment_id FROM deployment_devices WHERE device_id = ?)")
            params.append(device_id)
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        rows = self.db.all(
            f"SELECT id FROM deployments {clause} ORDER BY created_at DESC, rowid DESC LIMIT ? OFFSET ?",
            (*params, limit, offset),
        )
        return [self.get_deployment(deployment_id=r["id"]) for r in rows]

    def deployment_manifest(self, *, deployment_id: str, device_id: str | None = None) -> Manifest:
        """The signed manifest a deployment ships (to one device, or its first device)."""
        dep = self.get_deployment(deployment_id=deployment_id)
        if device_id is None:
            return Manifest.model_validate(dep.manifest)
        for d in dep.devices:
            if d.device_id == device_id:
                return Manifest.model_validate(_artifact(self.db, d.artifact_id).manifest)
        raise NotFoundError(f"device {device_id!r} is not a target of deployment {deployment_id}")

    def mark_deployment_rolled_back(
        self, *, deployment_id: str, reason: str = "", actor: str | None = None
    ) -> dict[str, str | None]:
        """Flag a deployment as rolled back; returns device id → the artifact it ran before (or None).

        "Before" is the artifact of the deployment each device was asked to run previously.
        Devices that had none map to ``None``: there is nothing to send them back to, so the
        caller clears their desired state and they keep what they run.
        """
        dep = self.get_deployment(deployment_id=deployment_id)
        if dep.state is DeploymentState.ROLLED_BACK:
            raise ConflictError(f"deployment {deployment_id} is already rolled back")
        plan: dict[str, str | None] = {}
        for d in dep.devices:
            prev = d.previous_deployment_id
            plan[d.device_id] = self.device_artifact(deployment_id=prev, device_id=d.device_id) if prev else None
        with self.db.transaction() as conn:
            conn.execute(
                "UPDATE deployments SET state = ? WHERE id = ?", (DeploymentState.ROLLED_BACK.value, deployment_id)
            )
            self.db.audit(conn, actor, "deployment.rollback", deployment_id, {"reason": reason, "plan": plan})
        return plan

    def device_artifact(self, *, deployment_id: str, device_id: str) -> str | None:
        """The artifact one deployment sent to one device (None if the device was not a target)."""
        row = self.db.one(
            "SELECT artifact_id FROM deployment_devices WHERE deployment_id = ? AND device_id = ?",
            (deployment_id, device_id),
        )
        return row["artifact_id"] if row else None

    def device_statuses(self, *, deployment_ids: set[str | None]) -> dict[tuple[str, str], tuple[str, str]]:
        """(deployment id, device id) → (per-device state, reason) for several deployments in one light query.

        The rollout engine polls this every tick for up to thousands of devices, so it reads
        only these four columns instead of whole deployment records.
        """
        ids = sorted(i for i in deployment_ids if i)
        if not ids:
            return {}
        rows = self.db.select(
            "deployment_devices", where={"deployment_id": tuple(ids)},
            columns="deployment_id, device_id, state, reason", order_by="deployment_id, device_id",
        )
        return {(r["deployment_id"], r["device_id"]): (r["state"], r["reason"]) for r in rows}


def refresh_deployment_state(conn: sqlite3.Connection, deployment_id: str) -> bool:
    """Recompute a deployment's aggregate state; returns True once every device is terminal."""
    # aggregated in SQL: this runs once per report, and a 1,000-device deployment made it a
    # Python loop over every device for every report (quadratic in fleet size)
    states = [
        S(r[0])
        for r in conn.execute(
            "SELECT state FROM deployment_devices WHERE deployment_id = ? GROUP BY state", (deployment_id,)
        )
    ]
    current = conn.execute("SELECT state FROM deployments WHERE id = ?", (deployment_id,)).fetchone()[0]
    done = all(s.terminal for s in states)
    if current == DeploymentState.ROLLED_BACK.value:
        return done
    if not done:
        new = DeploymentState.IN_PROGRESS
    elif all(s is S.COMMITTED for s in states):
        new = DeploymentState.SUCCEEDED
    elif any(s is S.COMMITTED for s in states):
        new = DeploymentState.PARTIAL
    else:
        new = DeploymentState.FAILED
    conn.execute("UPDATE deployments SET state = ? WHERE id = ?", (new.value, deployment_id))
    return done


def _artifact(db: Database, artifact_id: str) -> ArtifactRecord:
    """An artifact row (deployments reference artifacts, which the model registry owns)."""
    row = db.one("SELECT * FROM artifacts WHERE id = ?", (artifact_id,))
    if row is None:
        raise NotFoundError(f"no artifact with id {artifact_id!r}")
    return ArtifactRecord.from_row(row)
