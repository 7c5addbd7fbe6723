"""Persisted rollout state: the rollout, its devices (wave, deployment, attempts, outcome) and its decisions.

Lives in the registry's SQLite file (same WAL, same write lock) so a controller restart
mid-rollout finds everything it needs: which wave runs, which deployment each device is on,
when it started (wall clock, so timeouts survive a restart) and every decision taken with
the figures and the reason (``rollout_events``, append-only).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from controller.registry import DeviceDeploymentState
from controller.registry.db import Database, dump_loose, new_id, utcnow
from controller.rollout.errors import RolloutNotFoundError
from controller.rollout.plan import RolloutPlan

DDL = """
CREATE TABLE IF NOT EXISTS rollouts (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    target TEXT NOT NULL,
    plan TEXT NOT NULL,
    state TEXT NOT NULL,
    wave INTEGER NOT NULL DEFAULT 0,
    phase TEXT NOT NULL DEFAULT 'deploy',
    bake_until REAL,
    reason TEXT NOT NULL DEFAULT '',
    rollback_deployments TEXT NOT NULL DEFAULT '[]',
    created_at TEXT NOT NULL,
    created_by TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS rollouts_state ON rollouts(state);
CREATE TABLE IF NOT EXISTS rollout_devices (
    rollout_id TEXT NOT NULL REFERENCES rollouts(id),
    device_id TEXT NOT NULL,
    wave INTEGER NOT NULL,
    variant TEXT NOT NULL DEFAULT '',
    deployment_id TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    started_at REAL,
    prior_deployment_id TEXT,
    outcome TEXT NOT NULL DEFAULT 'pending',
    PRIMARY KEY (rollout_id, device_id)
);
CREATE INDEX IF NOT EXISTS rollout_devices_device ON rollout_devices(device_id);
CREATE TABLE IF NOT EXISTS rollout_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    rollout_id TEXT NOT NULL,
    ts TEXT NOT NULL,
    kind TEXT NOT NULL,
    reason TEXT NOT NULL,
    figures TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS rollout_events_rollout ON rollout_events(rollout_id, id);
CREATE TRIGGER IF NOT EXISTS rollout_events_append_only BEFORE UPDATE ON rollout_events
BEGIN SELECT RAISE(ABORT, 'rollout decisions are append-only'); END;
"""

class RolloutState(StrEnum):
    """Where a rollout (or A/B test) stands; values are stored and never change."""

    RUNNING = "running"
    PAUSED = "paused"
    ROLLING_BACK = "rolling_back"
    SUCCEEDED = "succeeded"
    ROLLED_BACK = "rolled_back"
    CANCELLED = "cancelled"
    SUPERSEDED = "superseded"
    FAILED = "failed"


class DeviceOutcome(StrEnum):
    """Where one device stands in a rollout; values are stored and never change."""

    PENDING = "pending"
    IN_PROGRESS = "in_progress"
    COMMITTED = "committed"
    REGRESSED = "regressed"
    ROLLED_BACK = "rolled_back"
    FAILED = "failed"
    SUPERSEDED = "superseded"
    TIMED_OUT = "timed_out"
    SKIPPED = "skipped"
    SENT_BACK = "sent_back"


ACTIVE_STATES = (RolloutState.RUNNING, RolloutState.PAUSED, RolloutState.ROLLING_BACK)
FINAL_STATES = (
    RolloutState.SUCCEEDED, RolloutState.ROLLED_BACK, RolloutState.CANCELLED, RolloutState.SUPERSEDED,
    RolloutState.FAILED,
)
BAD_OUTCOMES = frozenset({DeviceOutcome.FAILED, DeviceOutcome.REGRESSED, DeviceOutcome.ROLLED_BACK,
                          DeviceOutcome.TIMED_OUT})
FINAL_OUTCOMES = BAD_OUTCOMES | {DeviceOutcome.COMMITTED, DeviceOutcome.SUPERSEDED}
_OUTCOME_OF: dict[DeviceDeploymentState, DeviceOutcome | None] = {
    DeviceDeploymentState.PENDING: None,
    DeviceDeploymentState.IN_PROGRESS: None,
    DeviceDeploymentState.COMMITTED: DeviceOutcome.COMMITTED,
    DeviceDeploymentState.ROLLED_BACK: DeviceOutcome.ROLLED_BACK,
    DeviceDeploymentState.FAILED: DeviceOutcome.FAILED,
    DeviceDeploymentState.SUPERSEDED: DeviceOutcome.SUPERSEDED,
}


def outcome_of(state: str, reason: str) -> DeviceOutcome | None:
    """A device's deployment status → its rollout outcome (None = still running): the one mapping.

    A rollback whose reason is a regression code is a ``regressed`` outcome, which the abort
    criteria count like any failure but the operator reads as "the gate said no".

    Example:
        >>> outcome_of("rolled_back", "regression_latency")
        <DeviceOutcome.REGRESSED: 'regressed'>
    """
    outcome = _OUTCOME_OF[DeviceDeploymentState(state)]
    if outcome is DeviceOutcome.ROLLED_BACK and reason.startswith("regression"):
        return DeviceOutcome.REGRESSED
    return outcome


@dataclass(frozen=True)
class RolloutDevice:
    """One target device's place in a rollout."""

    device_id: str
    wave: int
    variant: str
    deployment_id: str | None
    attempts: int
    started_at: float | None
    outcome: DeviceOutcome
    prior_deployment_id: str | None = None


@dataclass(frozen=True)
class Rollout:
    """A rollout (or A/B test) with its devices; ``target`` holds what is rolled out."""

    id: str
    kind: str
    target: dict[str, Any]
    plan: RolloutPlan
    state: RolloutState
    wave: int
    phase: str
    bake_until: float | None
    reason: str
    created_at: str
    rollback_deployments: list[str] = field(default_factory=list)
    devices: list[RolloutDevice] = field(default_factory=list)

    @property
    def waves(self) -> int:
        """Number of waves."""
        return 1 + max((d.wave for d in self.devices), default=0)

    def in_wave(self, wave: int) -> list[RolloutDevice]:
        """Devices of one wave."""
        return [d for d in self.devices if d.wave == wave]

    def outcomes(self) -> dict[str, int]:
        """Device count per outcome."""
        out: dict[str, int] = {}
        for d in self.devices:
            out[d.outcome] = out.get(d.outcome, 0) + 1
        return out

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready view for the REST API and benchmark results."""
        return {
            "id": self.id,
            "kind": self.kind,
            "target": self.target,
            "plan": self.plan.model_dump(),
            "state": self.state,
            "wave": self.wave,
            "waves": self.waves,
            "phase": self.phase,
            "reason": self.reason,
            "created_at": self.created_at,
            "outcomes": self.outcomes(),
            "devices": [d.__dict__ for d in self.devices],
        }


class RolloutStore:
    """Rollout tables on the registry's :class:`Database` (created on first use)."""

    def __init__(self, db: Database) -> None:
        self.db = db
        db.register_schema(DDL)

    def create(
        self,
        *,
        kind: str,
        target: dict[str, Any],
        plan: RolloutPlan,
        waves: list[list[str]],
        variants: dict[str, str] | None = None,
        actor: str = "controller",
    ) -> str:
        """Insert a rollout with its devices in waves; audited."""
        rid = new_id()
        now = utcnow()
        db = self.db
        with db.transaction() as conn:
            db.insert(
                conn,
                "rollouts",
                {
                    "id": rid,
                    "kind": kind,
                    "target": json.dumps(target, sort_keys=True),
                    "plan": plan.model_dump_json(),
                    "state": RolloutState.RUNNING.value,
                    "created_at": now,
                    "created_by": actor,
                    "updated_at": now,
                },
            )
            for wave, devices in enumerate(waves):
                for device in devices:
                    db.insert(
                        conn,
                        "rollout_devices",
                        {
                            "rollout_id": rid,
                            "device_id": device,
                            "wave": wave,
                            "variant": (variants or {}).get(device, ""),
                        },
                    )
            db.audit(conn, actor, f"rollout.{kind}", rid, {"target": target, "waves": [len(w) for w in waves]})
        return rid

    def get(self, rollout_id: str) -> Rollout:
        """A rollout with its devices."""
        row = self.db.one("SELECT * FROM rollouts WHERE id = ?", (rollout_id,))
        if row is None:
            raise RolloutNotFoundError(f"no rollout with id {rollout_id!r}")
        devs = self.db.all(
            "SELECT * FROM rollout_devices WHERE rollout_id = ? ORDER BY wave, device_id", (rollout_id,)
        )
        return Rollout(
            id=row["id"],
            kind=row["kind"],
            target=json.loads(row["target"]),
            plan=RolloutPlan.model_validate_json(row["plan"]),
            state=RolloutState(row["state"]),
            wave=row["wave"],
            phase=row["phase"],
            bake_until=row["bake_until"],
            reason=row["reason"],
            created_at=row["created_at"],
            rollback_deployments=json.loads(row["rollback_deployments"]),
            devices=[
                RolloutDevice(
                    d["device_id"], d["wave"], d["variant"], d["deployment_id"], d["attempts"], d["started_at"],
                    DeviceOutcome(d["outcome"]), d["prior_deployment_id"],
                )
                for d in devs
            ],
        )

    def list(self, *, states: tuple[str, ...] | None = None, kind: str | None = None) -> list[Rollout]:
        """Rollouts newest first, optionally filtered by state and kind."""
        where, params = [], []
        if states:
            where.append(f"state IN ({', '.join('?' for _ in states)})")
            params.extend(states)
        if kind:
            where.append("kind = ?")
            params.append(kind)
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        rows = self.db.all(f"SELECT id FROM rollouts {clause} ORDER BY created_at DESC", tuple(params))
        return [self.get(r["id"]) for r in rows]

    def active_for_devices(self, device_ids: list[str]) -> list[str]:
        """Ids of active rollouts that target any of these devices (what a new rollout supersedes)."""
        if not device_ids:
            return []
        marks = ", ".join("?" for _ in device_ids)
        rows = self.db.all(
            f"SELECT DISTINCT r.id FROM rollouts r JOIN rollout_devices rd ON rd.rollout_id = r.id "
            f"WHERE r.state IN ('running', 'paused') AND rd.device_id IN ({marks})",
            tuple(device_ids),
        )
        return [r["id"] for r in rows]

    def update(self, rollout_id: str, **fields: Any) -> None:
        """Change rollout columns (state, wave, phase, bake_until, reason)."""
        fields["updated_at"] = utcnow()
        sets = ", ".join(f"{k} = ?" for k in fields)
        with self.db.transaction() as conn:
            conn.execute(f"UPDATE rollouts SET {sets} WHERE id = ?", (*fields.values(), rollout_id))

    def set_devices(self, rollout_id: str, device_ids: list[str], **fields: Any) -> None:
        """Change per-device columns (deployment_id, attempts, started_at, outcome) for several devices."""
        if not device_ids:
            return
        sets = ", ".join(f"{k} = ?" for k in fields)
        with self.db.transaction() as conn:
            conn.executemany(
                f"UPDATE rollout_devices SET {sets} WHERE rollout_id = ? AND device_id = ?",
                [(*fields.values(), rollout_id, d) for d in device_ids],
            )

    def start_devices(
        self, rollout_id: str, device_ids: list[str], deployment_id: str, prior: dict[str, str] | None = None
    ) -> None:
        """Devices handed a (new) deployment: attempts + 1, clock restarted.

        ``prior`` (device → the deployment it had before the rollout's first attempt) is kept
        from the first attempt only: it is what a rollout rollback sends the device back to.
        """
        now = time.time()
        prior = prior or {}
        with self.db.transaction() as conn:
            conn.executemany(
                "UPDATE rollout_devices SET deployment_id = ?, attempts = attempts + 1, started_at = ?, "
                "outcome = 'in_progress', prior_deployment_id = CASE WHEN attempts = 0 THEN ? "
                "ELSE prior_deployment_id END WHERE rollout_id = ? AND device_id = ?",
                [(deployment_id, now, prior.get(d), rollout_id, d) for d in device_ids],
            )

    def event(self, rollout_id: str, kind: str, reason: str, figures: dict[str, Any] | None = None) -> None:
        """Store one decision with its figures (append-only) and audit it."""
        with self.db.transaction() as conn:
            conn.execute(
                "INSERT INTO rollout_events(rollout_id, ts, kind, reason, figures) VALUES (?, ?, ?, ?, ?)",
                (rollout_id, utcnow(), kind, reason, dump_loose(figures or {})),
            )
            self.db.audit(conn, "rollout-engine", f"rollout.{kind}", rollout_id, {"reason": reason})

    def events(self, rollout_id: str) -> list[dict[str, Any]]:
        """Decisions of a rollout, oldest first."""
        rows = self.db.all("SELECT * FROM rollout_events WHERE rollout_id = ? ORDER BY id", (rollout_id,))
        return [{**r, "figures": json.loads(r["figures"])} for r in rows]
