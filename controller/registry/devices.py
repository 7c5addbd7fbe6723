"""The devices table: presence, capabilities, desired deployment, and which blobs a device may download.

The presence rule (Sparkplug-style) lives here, in one place, ordered by what the controller has
seen and by the broker's delivery, never by device clocks across sessions (a device whose clock was
once an hour ahead stayed "offline" for that hour):

* within one session ``seq`` orders messages, and the session's own will always marks it offline;
* a live birth of a session not seen before is the newest connection and wins; a message of a
  session seen before but no longer held (a late will, a re-delivered old birth) is stale;
* a live will of another session never takes an online device offline: the connection we hold
  can only end with its own will;
* a *retained* message (delivered on subscribe: the newest state the broker holds, e.g. after the
  controller was away) is applied unless its session was seen before.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from common.manifest import BlobRef, Manifest
from common.messages import DeviceCaps, DeviceState
from controller.registry.db import Database, iso_utc, utcnow
from controller.registry.errors import InvalidInputError, NotFoundError
from controller.registry.records import DeviceRecord


class DeviceRecords:
    """Devices on the registry's :class:`Database` (``registry.devices``)."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def register_device(self, *, device_id: str, profile: str = "", actor: str | None = None) -> DeviceRecord:
        """Make a device known before it first connects (idempotent; audited when created)."""
        from common.topics import TopicError, validate_id

        try:
            validate_id(device_id, "device id")
        except TopicError as exc:
            raise InvalidInputError(str(exc)) from exc
        with self.db.transaction() as conn:
            cur = conn.execute(
                "INSERT OR IGNORE INTO devices(id, profile, created_at) VALUES (?, ?, ?)",
                (device_id, profile, utcnow()),
            )
            if cur.rowcount:
                self.db.audit(conn, actor, "device.register", device_id, {"profile": profile})
            elif profile:
                conn.execute("UPDATE devices SET profile = ? WHERE id = ? AND profile = ''", (profile, device_id))
        return self.get_device(device_id=device_id)

    def record_device_state(self, *, state: DeviceState, retained: bool = False) -> bool:
        """Apply a state / last-will message; returns False when it is stale and ignored.

        ``retained``: delivered by the broker as its stored retained message (see the module docstring).
        """
        ts = iso_utc(state.ts)
        payload = state.model_dump_json()
        active = state.active.model_dump_json() if state.active else None
        previous = state.previous.model_dump_json() if state.previous else None
        with self.db.transaction() as conn:
            row = self.db.one("SELECT * FROM devices WHERE id = ?", (state.device_id,))
            if row is None:
                new = {"id": state.device_id, "profile": state.profile, "created_at": utcnow()}
                self.db.insert(conn, "devices", new)
                row = self.db.one("SELECT * FROM devices WHERE id = ?", (state.device_id,))
            seen = conn.execute("SELECT 1 FROM device_sessions WHERE device_id = ? AND session_id = ?",
                                (state.device_id, state.session_id)).fetchone() is not None
            full, accept = _state_decision(row, state, seen, retained)
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
                        utcnow(),
                        state.device_id,
                    ),
                )
            else:  # the session's own will, older than what we hold: only presence changes
                conn.execute("UPDATE devices SET online = 0, last_seen = ? WHERE id = ?", (utcnow(), state.device_id))
        return True

    def record_device_caps(self, *, caps: DeviceCaps) -> None:
        """Store a device's retained capabilities (and its profile, if we had none)."""
        with self.db.transaction() as conn:
            conn.execute(
                "INSERT OR IGNORE INTO devices(id, profile, created_at) VALUES (?, ?, ?)",
                (caps.device_id, caps.profile, utcnow()),
            )
            conn.execute(
                "UPDATE devices SET caps = ?, profile = CASE WHEN profile = '' THEN ? ELSE profile END WHERE id = ?",
                (caps.model_dump_json(), caps.profile, caps.device_id),
            )

    def get_device(self, *, device_id: str) -> DeviceRecord:
        """One device by id."""
        row = self.db.one("SELECT * FROM devices WHERE id = ?", (device_id,))
        if row is None:
            raise NotFoundError(f"no device {device_id!r}: it has never connected and was not registered")
        return DeviceRecord.from_row(row)

    def list_devices(self, *, profile: str | None = None, online: bool | None = None) -> list[DeviceRecord]:
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
            DeviceRecord.from_row(r) for r in self.db.all(f"SELECT * FROM devices {clause} ORDER BY id", tuple(params))
        ]

    def desired_deployments(self) -> dict[str, str]:
        """Device id → the deployment it should run now (what the retained ``desired`` topics say)."""
        rows = self.db.all("SELECT id, desired_deployment_id FROM devices WHERE desired_deployment_id IS NOT NULL")
        return {r["id"]: r["desired_deployment_id"] for r in rows}

    def clear_desired(self, *, device_id: str, actor: str | None = None) -> None:
        """Forget a device's desired deployment (its retained ``desired`` topic is cleared too)."""
        with self.db.transaction() as conn:
            conn.execute("UPDATE devices SET desired_deployment_id = NULL WHERE id = ?", (device_id,))
            self.db.audit(conn, actor, "device.clear_desired", device_id, {})

    def blob_for_device(self, *, device_id: str, sha256: str) -> BlobRef | None:
        """The manifest entry for a blob if some deployment to this device ships it, else None.

        This is the chunk server's authorisation check: a device can only download
        files of artifacts that were deployed to it.
        """
        rows = self.db.all(
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


def _state_decision(row: dict[str, Any], state: DeviceState, seen: bool, retained: bool) -> tuple[bool, bool]:
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
    if seen:  # a session we held before and left is over: its will or old birth is stale
        return False, False
    if state.online or retained:
        return True, True
    accept = not row["online"]  # a live will of another session cannot end the connection we hold
    return accept, accept


def _remember_session(conn: sqlite3.Connection, device_id: str, session_id: str, keep: int = 64) -> None:
    """Record a session as seen (the newest ``keep`` per device are enough to spot stale messages)."""
    conn.execute("INSERT OR IGNORE INTO device_sessions(device_id, session_id, seen_at) VALUES (?, ?, ?)",
                 (device_id, session_id, utcnow()))
    conn.execute("DELETE FROM device_sessions WHERE device_id = ? AND rowid NOT IN (SELECT rowid FROM "
                 "device_sessions WHERE device_id = ? ORDER BY rowid DESC LIMIT ?)", (device_id, device_id, keep))
