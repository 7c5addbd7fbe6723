"""Fleet-side tables of the registry: devices, deployments, per-device status, reports, telemetry.

Kept beside the model registry (same SQLite file, same transactions) because a
deployment references an artifact and a version, and "refuse to delete a
version while it is deployed" must be one query, not a cross-store dance.

The rules that make reports safe to replay live here, in one place:

* presence (Sparkplug-style), ordered by what the controller has seen, never by device
  clocks across sessions (a device whose clock was once an hour ahead stayed "offline" for
  that hour): a birth of a session not seen before is the newest connection and wins; a
  message of a session seen before but no longer held (a late will, a re-delivered old
  birth) is stale; the will of a session never seen is news we missed and is applied;
  within one session ``seq`` orders messages, and the session's own will always marks it
  offline;
* job reports are idempotent on (deployment, device, seq) and a lower ``seq``
  never moves a device backwards; terminal states (committed, rolled back, failed,
  superseded) are final.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from common.errors import ReasonCode
from common.manifest import BlobRef, Manifest
from common.messages import BenchReport, DeviceCaps, DeviceState, JobReport, Telemetry
from controller.registry.errors import ConflictError, InvalidInputError, NotFoundError
from controller.registry.records import (
    DeploymentDeviceRecord,
    DeploymentRecord,
    DeploymentState,
    DeviceDeploymentState,
    DeviceRecord,
    ReportOutcome,
)

if TYPE_CHECKING:
    from controller.registry.store import Registry

S = DeviceDeploymentState
COMMITTED_JOB_STATES = frozenset({"commit", "committed"})
ROLLED_BACK_JOB_STATES = frozenset({"rollback", "rolled_back"})
FAILED_JOB_STATES = frozenset({"failure", "failed", "rejected"})
TELEMETRY_KEEP_PER_DEVICE = 2000


def _iso(ts: datetime) -> str:
    """Timestamps from devices may be naive; they are UTC by protocol."""
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=UTC)
    return ts.astimezone(UTC).isoformat()


def job_state_to_status(state: str, reason: str) -> DeviceDeploymentState | None:
    """Map an agent's update-state name to the controller's per-device status (None = no change).

    The agent's state names are its own (``agent/update``); the controller only needs
    to know which ones end a deployment and how.
    """
    if state in COMMITTED_JOB_STATES:
        return S.COMMITTED
    if state in ROLLED_BACK_JOB_STATES:
        return S.ROLLED_BACK
    if state in FAILED_JOB_STATES:
        return S.FAILED
    if state == "idle":
        return S.FAILED if reason != "ok" else None
    return S.IN_PROGRESS


@dataclass(frozen=True)
class ReportResult:
    """Outcome of recording one report: what happened and where the device now stands."""

    outcome: ReportOutcome
    device_state: DeviceDeploymentState | None = None
    deployment_done: bool = False


class FleetRecords:
    """Mixin for :class:`controller.registry.Registry` holding the device and deployment tables."""

    # ------------------------------------------------------------------ devices
    def register_device(self: Registry, *, device_id: str, profile: str = "", actor: str | None = None) -> DeviceRecord:
        """Make a device known before it first connects (idempotent; audited when created)."""
        from common.topics import TopicError, validate_id

        try:
            validate_id(device_id, "device id")
        except TopicError as exc:
            raise InvalidInputError(str(exc)) from exc
        with self._tx() as conn:
            cur = conn.execute(
                "INSERT OR IGNORE INTO devices(id, profile, created_at) VALUES (?, ?, ?)",
                (device_id, profile, _now()),
            )
            if cur.rowcount:
                self._audit(conn, actor, "device.register", device_id, {"profile": profile})
            elif profile:
                conn.execute("UPDATE devices SET profile = ? WHERE id = ? AND profile = ''", (profile, device_id))
        return self.get_device(device_id=device_id)

    def record_device_state(self: Registry, *, state: DeviceState) -> bool:
        """Apply a retained state / last-will message; returns False when it is stale and ignored."""
        ts = _iso(state.ts)
        payload = state.model_dump_json()
        active = state.active.model_dump_json() if state.active else None
        previous = state.previous.model_dump_json() if state.previous else None
        with self._tx() as conn:
            row = self._one("SELECT * FROM devices WHERE id = ?", (state.device_id,))
            if row is None:
                self._insert(conn, "devices", {"id": state.device_id, "profile": state.profile, "created_at": _now()})
                row = self._one("SELECT * FROM devices WHERE id = ?", (state.device_id,))
            seen = conn.execute("SELECT 1 FROM device_sessions WHERE device_id = ? AND session_id = ?",
                                (state.device_id, state.session_id)).fetchone() is not None
            full, accept = _state_decision(row, state, seen)
            if not accept:
                return False
            if not seen:
                _remember_session(conn, state.device_id, state.session_id)
            if full:
                session_ts = ts if row["session_id"] != state.session_id else min(row["session_ts"] or ts, ts)
                conn.execute(
                    "UPDATE devices SET online = ?, session_id = ?, session_ts = ?, state_seq = ?, state = ?, "
                    "active = ?, previous = ?, profile = CASE WHEN ? != '' THEN ? ELSE profile END, last_seen = ? "
                    "WHERE id = ?",
                    (
                        int(state.online),
                        state.session_id,
                        session_ts,
                        state.seq,
                        payload,
                        active,
                        previous,
                        state.profile,
                        state.profile,
                        _now(),
                        state.device_id,
                    ),
                )
            else:  # the session's own will, older than what we hold: only presence changes
                conn.execute("UPDATE devices SET online = 0, last_seen = ? WHERE id = ?", (_now(), state.device_id))
        return True

    def record_device_caps(self: Registry, *, caps: DeviceCaps) -> None:
        """Store a device's retained capabilities (and its profile, if we had none)."""
        with self._tx() as conn:
            conn.execute(
                "INSERT OR IGNORE INTO devices(id, profile, created_at) VALUES (?, ?, ?)",
                (caps.device_id, caps.profile, _now()),
            )
            conn.execute(
                "UPDATE devices SET caps = ?, profile = CASE WHEN profile = '' THEN ? ELSE profile END WHERE id = ?",
                (caps.model_dump_json(), caps.profile, caps.device_id),
            )

    def get_device(self: Registry, *, device_id: str) -> DeviceRecord:
        """One device by id."""
        row = self._one("SELECT * FROM devices WHERE id = ?", (device_id,))
        if row is None:
            raise NotFoundError(f"no device {device_id!r}: it has never connected and was not registered")
        return DeviceRecord.from_row(row)

    def list_devices(self: Registry, *, profile: str | None = None, online: bool | None = None) -> list[DeviceRecord]:
        """Devices sorted by id, optionally filtered by profile or presence."""
        where, params = [], []
        if profile:
            where.append("profile = ?")
            params.append(profile)
        if online is not None:
            where.append("online = ?")
            params.append(int(online))
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        return [
            DeviceRecord.from_row(r) for r in self._all(f"SELECT * FROM devices {clause} ORDER BY id", tuple(params))
        ]

    # ------------------------------------------------------------------ deployments
    def create_deployment(
        self: Registry,
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
        artifacts = {a: self.get_artifact(artifact_id=a) for a in dict.fromkeys(mapping.values())}
        devices = [self.get_device(device_id=d) for d in device_ids]
        wrong = [
            f"{d.id} ({d.profile})" for d in devices if d.profile and d.profile != artifacts[mapping[d.id]].profile
        ]
        if wrong and not allow_profile_mismatch:
            raise InvalidInputError(
                f"devices {', '.join(wrong)} have another profile than the artifact sent to them; "
                "build an artifact per profile"
            )
        primary = artifacts[mapping[device_ids[0]]]
        dep_id = _new_id()
        now = _now()
        with self._tx() as conn:
            self._insert(
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
                    "created_by": self._actor(actor),
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
                    _refresh_deployment_state(conn, prev)
                self._insert(
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
            self._audit(
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

    def get_deployment(self: Registry, *, deployment_id: str) -> DeploymentRecord:
        """A deployment with every target device's status."""
        # Devices first: a report updates a device and the aggregate state in one transaction, so a
        # deployment row read *after* its devices is never older than them. Read the other way round,
        # a report committing in between gave "every device terminal" with state still in_progress.
        devs = self._all(
            "SELECT * FROM deployment_devices WHERE deployment_id = ? ORDER BY device_id", (deployment_id,)
        )
        row = self._one(
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
        self: Registry, *, state: str | None = None, device_id: str | None = None, limit: int = 100, offset: int = 0
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
        rows = self._all(
            f"SELECT id FROM deployments {clause} ORDER BY created_at DESC, rowid DESC LIMIT ? OFFSET ?",
            (*params, limit, offset),
        )
        return [self.get_deployment(deployment_id=r["id"]) for r in rows]

    def deployment_manifest(self: Registry, *, deployment_id: str, device_id: str | None = None) -> Manifest:
        """The signed manifest a deployment ships (to one device, or its first device)."""
        dep = self.get_deployment(deployment_id=deployment_id)
        if device_id is None:
            return Manifest.model_validate(dep.manifest)
        for d in dep.devices:
            if d.device_id == device_id:
                return self.manifest(artifact_id=d.artifact_id)
        raise NotFoundError(f"device {device_id!r} is not a target of deployment {deployment_id}")

    def desired_deployments(self: Registry) -> dict[str, str]:
        """Device id → the deployment it should run now (what the retained ``desired`` topics say)."""
        rows = self._all("SELECT id, desired_deployment_id FROM devices WHERE desired_deployment_id IS NOT NULL")
        return {r["id"]: r["desired_deployment_id"] for r in rows}

    def mark_deployment_rolled_back(
        self: Registry, *, deployment_id: str, reason: str = "", actor: str | None = None
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
            prev = None
            if d.previous_deployment_id:
                row = self._one(
                    "SELECT artifact_id FROM deployment_devices WHERE deployment_id = ? AND device_id = ?",
                    (d.previous_deployment_id, d.device_id),
                )
                prev = row["artifact_id"] if row else None
            plan[d.device_id] = prev
        with self._tx() as conn:
            conn.execute(
                "UPDATE deployments SET state = ? WHERE id = ?", (DeploymentState.ROLLED_BACK.value, deployment_id)
            )
            self._audit(conn, actor, "deployment.rollback", deployment_id, {"reason": reason, "plan": plan})
        return plan

    def clear_desired(self: Registry, *, device_id: str, actor: str | None = None) -> None:
        """Forget a device's desired deployment (its retained ``desired`` topic is cleared too)."""
        with self._tx() as conn:
            conn.execute("UPDATE devices SET desired_deployment_id = NULL WHERE id = ?", (device_id,))
            self._audit(conn, actor, "device.clear_desired", device_id, {})

    # ------------------------------------------------------------------ reports
    def _report_target(
        self: Registry, deployment_id: str, device_id: str
    ) -> tuple[ReportResult | None, dict[str, Any]]:
        """The deployment-device row a report is about, or the outcome saying why the report is ignored."""
        if self._one("SELECT 1 AS x FROM deployments WHERE id = ?", (deployment_id,)) is None:
            return ReportResult(ReportOutcome.UNKNOWN_DEPLOYMENT), {}
        dd = self._one(
            "SELECT * FROM deployment_devices WHERE deployment_id = ? AND device_id = ?", (deployment_id, device_id)
        )
        if dd is None:
            return ReportResult(ReportOutcome.NOT_TARGETED), {}
        return None, dd

    def record_job_report(self: Registry, *, report: JobReport) -> ReportResult:
        """Store one job report and advance the device's status; idempotent on (deployment, device, seq)."""
        with self._tx() as conn:
            ignored, dd = self._report_target(report.deployment_id, report.device_id)
            if ignored is not None:
                return ignored
            cur = conn.execute(
                "INSERT OR IGNORE INTO job_reports(deployment_id, device_id, seq, state, reason, detail, ts,"
                " received_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    report.deployment_id,
                    report.device_id,
                    report.seq,
                    report.state,
                    report.reason.value,
                    report.detail,
                    _iso(report.ts),
                    _now(),
                ),
            )
            current = S(dd["state"])
            if not cur.rowcount:
                return ReportResult(ReportOutcome.DUPLICATE, current)
            if report.seq <= dd["last_seq"]:
                return ReportResult(ReportOutcome.STALE, current)
            new = job_state_to_status(report.state, report.reason.value)
            if current.terminal or new is None:
                new_state, reason, detail = current, dd["reason"], dd["detail"]
            else:
                new_state, reason, detail = new, report.reason.value, report.detail
            conn.execute(
                "UPDATE deployment_devices SET state = ?, reason = ?, detail = ?, last_job_state = ?, last_seq = ?, "
                "updated_at = ? WHERE deployment_id = ? AND device_id = ?",
                (
                    new_state.value,
                    reason,
                    detail,
                    report.state,
                    report.seq,
                    _now(),
                    report.deployment_id,
                    report.device_id,
                ),
            )
            done = _refresh_deployment_state(conn, report.deployment_id)
        return ReportResult(ReportOutcome.APPLIED, new_state, done)

    def record_bench_report(self: Registry, *, report: BenchReport) -> ReportResult:
        """Store a benchmark report (idempotent per deployment, device and candidate blob)."""
        text = report.model_dump_json()
        with self._tx() as conn:
            ignored, dd = self._report_target(report.deployment_id, report.device_id)
            if ignored is not None:
                return ignored
            cur = conn.execute(
                "INSERT OR IGNORE INTO bench_reports(deployment_id, device_id, candidate_sha256, decision, report, ts,"
                " received_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    report.deployment_id,
                    report.device_id,
                    report.candidate.sha256,
                    report.decision,
                    text,
                    _iso(report.ts),
                    _now(),
                ),
            )
            current = S(dd["state"])
            if not cur.rowcount:
                return ReportResult(ReportOutcome.DUPLICATE, current)
            conn.execute("UPDATE devices SET last_bench = ? WHERE id = ?", (text, report.device_id))
            new_state, reason, detail = current, dd["reason"], dd["detail"]
            if report.decision == "rollback" and not current.terminal:
                new_state, reason = S.ROLLED_BACK, _bench_reason(report.reasons)
                detail = "; ".join(r for r in report.reasons if not r.startswith("ok:"))
            conn.execute(
                "UPDATE deployment_devices SET bench = ?, state = ?, reason = ?, detail = ?, updated_at = ? "
                "WHERE deployment_id = ? AND device_id = ?",
                (text, new_state.value, reason, detail, _now(), report.deployment_id, report.device_id),
            )
            done = _refresh_deployment_state(conn, report.deployment_id)
        return ReportResult(ReportOutcome.APPLIED, new_state, done)

    def bench_reports(self: Registry, *, deployment_id: str | None = None, device_id: str | None = None) -> list[dict]:
        """Stored benchmark reports (as the protocol's JSON), oldest first."""
        where, params = [], []
        if deployment_id:
            where.append("deployment_id = ?")
            params.append(deployment_id)
        if device_id:
            where.append("device_id = ?")
            params.append(device_id)
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        rows = self._all(f"SELECT report FROM bench_reports {clause} ORDER BY received_at, rowid", tuple(params))
        return [json.loads(r["report"]) for r in rows]

    def job_reports(self: Registry, *, deployment_id: str, device_id: str | None = None) -> list[dict[str, Any]]:
        """Stored job reports of a deployment, in seq order."""
        params: tuple = (deployment_id,) if device_id is None else (deployment_id, device_id)
        clause = "" if device_id is None else " AND device_id = ?"
        return self._all(f"SELECT * FROM job_reports WHERE deployment_id = ?{clause} ORDER BY device_id, seq", params)

    def record_telemetry(
        self: Registry, *, telemetry: Telemetry, keep_per_device: int = TELEMETRY_KEEP_PER_DEVICE
    ) -> None:
        """Store a telemetry sample, keeping only the newest ``keep_per_device`` rows per device."""
        with self._tx() as conn:
            cur = conn.execute(
                "INSERT INTO telemetry(device_id, ts, payload) VALUES (?, ?, ?)",
                (telemetry.device_id, _iso(telemetry.ts), telemetry.model_dump_json()),
            )
            if cur.lastrowid and cur.lastrowid % 100 == 0:
                conn.execute(
                    "DELETE FROM telemetry WHERE device_id = ? AND id NOT IN "
                    "(SELECT id FROM telemetry WHERE device_id = ? ORDER BY id DESC LIMIT ?)",
                    (telemetry.device_id, telemetry.device_id, keep_per_device),
                )

    def telemetry(self: Registry, *, device_id: str, limit: int = 100) -> list[dict[str, Any]]:
        """Newest telemetry samples of a device, newest first."""
        rows = self._all(
            "SELECT payload FROM telemetry WHERE device_id = ? ORDER BY id DESC LIMIT ?", (device_id, limit)
        )
        return [json.loads(r["payload"]) for r in rows]

    def blob_for_device(self: Registry, *, device_id: str, sha256: str) -> BlobRef | None:
        """The manifest entry for a blob if some deployment to this device ships it, else None.

        This is the chunk server's authorisation check: a device can only download
        files of artifacts that were deployed to it.
        """
        rows = self._all(
            "SELECT a.manifest FROM deployment_devices dd JOIN deployments d ON d.id = dd.deployment_id "
            "JOIN artifact_blobs ab ON ab.artifact_id = dd.artifact_id JOIN artifacts a ON a.id = dd.artifact_id "
            "WHERE dd.device_id = ? AND ab.sha256 = ? ORDER BY d.created_at DESC LIMIT 1",
            (device_id, sha256),
        )
        if not rows:
            return None
        for ref in Manifest.model_validate_json(rows[0]["manifest"]).files:
            if ref.sha256 == sha256:
                return ref
        return None


def _bench_reason(reasons: list[str]) -> str:
    """The first reason code in an agent's human-readable reasons (``"regression_latency: p95 ..."``)."""
    codes = {c.value for c in ReasonCode} - {ReasonCode.OK.value}
    for text in reasons:
        code = text.split(":", 1)[0].strip()
        if code in codes:
            return code
    return "regression"


def _state_decision(row: dict[str, Any], state: DeviceState, seen: bool) -> tuple[bool, bool]:
    """(full update?, accept?) for an incoming state message against the stored device row.

    ``seen``: this session id was applied before. Device timestamps are not compared across
    sessions: clocks skew and jump, and one birth stamped an hour ahead pinned the device offline.
    """
    if row["session_id"] is None:
        return True, True
    if row["session_id"] == state.session_id:
        if not state.online:
            return state.seq >= row["state_seq"], True
        newer = state.seq > row["state_seq"] or (state.seq == row["state_seq"] and bool(row["online"]))
        return newer, newer
    accept = not seen  # a session we held before and left is over: its will or old birth is stale
    return accept, accept


def _remember_session(conn: sqlite3.Connection, device_id: str, session_id: str, keep: int = 64) -> None:
    """Record a session as seen (the newest ``keep`` per device are enough to spot stale messages)."""
    conn.execute("INSERT OR IGNORE INTO device_sessions(device_id, session_id, seen_at) VALUES (?, ?, ?)",
                 (device_id, session_id, _now()))
    conn.execute("DELETE FROM device_sessions WHERE device_id = ? AND rowid NOT IN (SELECT rowid FROM "
                 "device_sessions WHERE device_id = ? ORDER BY rowid DESC LIMIT ?)", (device_id, device_id, keep))


def _refresh_deployment_state(conn: sqlite3.Connection, deployment_id: str) -> bool:
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


def _now() -> str:
    from controller.registry.store import utcnow

    return utcnow()


def _new_id() -> str:
    from controller.registry.store import new_id

    return new_id()
