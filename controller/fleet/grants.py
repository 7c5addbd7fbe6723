"""Issue the signed grants a ``Desired`` carries (see :mod:`common.grant`), with their counters.

Counters live in their own small SQLite file beside the registry (``grants.sqlite``): the version
counter of each (fleet, model, version), the per-fleet grant serial, and the grant issued for each
(deployment, device), so a re-published desired carries the same grant (re-signed only once it
nears its expiry). Both counters are anchored so that losing or restoring an old copy of this file
never makes devices refuse new work: a version's counter is its creation time in milliseconds (from
the registry, so versions keep their creation order), and a new serial is at least the controller's
clock in ms.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from common.grant import Grant, manifest_digest, sign_grant
from common.manifest import Manifest

if TYPE_CHECKING:
    from controller.registry import Registry

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS version_counters (
    fleet TEXT NOT NULL, model_id TEXT NOT NULL, version TEXT NOT NULL, counter INTEGER NOT NULL,
    PRIMARY KEY (fleet, model_id, version));
CREATE TABLE IF NOT EXISTS serials (fleet TEXT PRIMARY KEY, serial INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS issued (
    deployment_id TEXT NOT NULL, device_id TEXT NOT NULL, grant TEXT NOT NULL,
    PRIMARY KEY (deployment_id, device_id));
"""


class GrantIssuer:
    """Signs one grant per (deployment, device) and keeps the counters monotonic across restarts.

    Args:
        path: the SQLite file (``<COMPRESSION_WORKSPACE>/grants.sqlite``).
        signing_key: the controller key agents pin (the one that signs manifests).
        ttl: how long a grant is valid; a re-publish re-signs a grant past half its life.
    """

    def __init__(self, path: Path, signing_key: Ed25519PrivateKey, ttl: timedelta = timedelta(days=7)) -> None:
        self.signing_key = signing_key
        self.ttl = ttl
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.executescript(_SCHEMA)

    @classmethod
    def for_key(cls, registry: Registry, key: Ed25519PrivateKey | None, ttl: timedelta) -> GrantIssuer | None:
        """The issuer beside the registry (``grants.sqlite``), or None (and a warning) without a signing key."""
        if key is None:
            log.warning("fleet service without a signing key: desired states carry no grant, and current agents "
                        "refuse them (pass signing_key= or an artifact_builder)")
            return None
        return cls(registry.workspace / "grants.sqlite", key, ttl=ttl)

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._conn.close()

    def grant(self, *, fleet: str, device_id: str, deployment_id: str, manifest: Manifest, kind: str,
              profile: str | None = None, version_created_ms: int = 0, rollback_to: str | None = None) -> Grant:
        """The grant for one device of a deployment: the stored one while fresh, else a new one.

        ``rollback_to`` (the manifest's model sha256, for fleet rollbacks and deliberate downgrades)
        is the controller's signed permission to go below the device's version floor. ``version_created_ms`` (the
        version's creation time) anchors a new version's counter, so versions keep their creation
        order even if this file is lost.
        """
        now = datetime.now(UTC)
        with self._lock:
            row = self._conn.execute("SELECT grant FROM issued WHERE deployment_id = ? AND device_id = ?",
                                     (deployment_id, device_id)).fetchone()
            if row is not None:
                held = Grant.model_validate_json(row[0])
                if held.manifest_sha256 == manifest_digest(manifest) and held.rollback_to == rollback_to \
                        and held.expires_at - now > self.ttl / 2:
                    return held
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                counter = self._version_counter(fleet, manifest.model_id, manifest.version, version_created_ms)
                serial = self._next_serial(fleet)
                grant = sign_grant(Grant(
                    fleet=fleet, device_id=device_id, profile=profile, deployment_id=deployment_id,
                    kind=kind,  # type: ignore[arg-type]
                    model_id=manifest.model_id, version=manifest.version, counter=counter, serial=serial,
                    rollback_to=rollback_to,
                    manifest_sha256=manifest_digest(manifest), issued_at=now, expires_at=now + self.ttl,
                ), self.signing_key)
                self._conn.execute("INSERT OR REPLACE INTO issued(deployment_id, device_id, grant) VALUES (?, ?, ?)",
                                   (deployment_id, device_id, grant.model_dump_json()))
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            return grant

    def _version_counter(self, fleet: str, model_id: str, version: str, created_ms: int) -> int:
        row = self._conn.execute("SELECT counter FROM version_counters WHERE fleet = ? AND model_id = ? AND "
                                 "version = ?", (fleet, model_id, version)).fetchone()
        if row is not None:
            return int(row[0])
        top = self._conn.execute("SELECT MAX(counter) FROM version_counters WHERE fleet = ? AND model_id = ?",
                                 (fleet, model_id)).fetchone()[0]
        counter = created_ms if created_ms > 0 else int(top or 0) + 1  # creation order when the registry knows it
        self._conn.execute("INSERT INTO version_counters(fleet, model_id, version, counter) VALUES (?, ?, ?, ?)",
                           (fleet, model_id, version, counter))
        return counter

    def _next_serial(self, fleet: str) -> int:
        self._conn.execute("INSERT OR IGNORE INTO serials(fleet, serial) VALUES (?, 0)", (fleet,))
        now_ms = int(datetime.now(UTC).timestamp() * 1000)
        self._conn.execute("UPDATE serials SET serial = MAX(serial + 1, ?) WHERE fleet = ?", (now_ms, fleet))
        return int(self._conn.execute("SELECT serial FROM serials WHERE fleet = ?", (fleet,)).fetchone()[0])
