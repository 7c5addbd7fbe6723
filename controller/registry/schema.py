"""The registry's SQLite schema, created idempotently on open.

Immutability is enforced by the database itself (triggers), not only by the
Python API, so a future REST handler or a hand-written SQL fix cannot rewrite
a version's lineage or the audit trail by accident.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from controller.registry.db import Database

SCHEMA_VERSION = 1

DDL = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);

CREATE TABLE IF NOT EXISTS models (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    description TEXT NOT NULL DEFAULT '',
    created_at TEXT NOT NULL,
    created_by TEXT NOT NULL
);

CREATE TABLE IF NOT EXISTS blobs (
    sha256 TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    created_at TEXT NOT NULL
);

CREATE TABLE IF NOT EXISTS versions (
    id TEXT PRIMARY KEY,
    model_id TEXT NOT NULL REFERENCES models(id),
    parent_id TEXT REFERENCES versions(id),
    technique TEXT NOT NULL,
    config TEXT NOT NULL,
    format TEXT NOT NULL,
    profile TEXT,
    sha256 TEXT NOT NULL REFERENCES blobs(sha256),
    size INTEGER NOT NULL,
    metrics TEXT NOT NULL,
    created_at TEXT NOT NULL,
    created_by TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS versions_model ON versions(model_id, created_at);
CREATE INDEX IF NOT EXISTS versions_parent ON versions(parent_id);
CREATE TRIGGER IF NOT EXISTS versions_immutable BEFORE UPDATE ON versions
BEGIN SELECT RAISE(ABORT, 'model versions are immutable: create a new version instead'); END;

CREATE TABLE IF NOT EXISTS version_metrics (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    version_id TEXT NOT NULL REFERENCES versions(id),
    source TEXT NOT NULL,
    metrics TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS version_metrics_version ON version_metrics(version_id);

CREATE TABLE IF NOT EXISTS tags (
    model_id TEXT NOT NULL REFERENCES models(id),
    tag TEXT NOT NULL,
    version_id TEXT NOT NULL REFERENCES versions(id),
    updated_at TEXT NOT NULL,
    updated_by TEXT NOT NULL,
    PRIMARY KEY (model_id, tag)
);
CREATE TABLE IF NOT EXISTS tag_history (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    model_id TEXT NOT NULL,
    tag TEXT NOT NULL,
    version_id TEXT NOT NULL,
    action TEXT NOT NULL,
    ts TEXT NOT NULL,
    actor TEXT NOT NULL
);

CREATE TABLE IF NOT EXISTS artifacts (
    id TEXT PRIMARY KEY,
    version_id TEXT NOT NULL REFERENCES versions(id),
    profile TEXT NOT NULL,
    manifest TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS artifacts_version ON artifacts(version_id, profile);
CREATE TABLE IF NOT EXISTS artifact_blobs (
    artifact_id TEXT NOT NULL REFERENCES artifacts(id),
    sha256 TEXT NOT NULL REFERENCES blobs(sha256),
    role TEXT NOT NULL,
    PRIMARY KEY (artifact_id, sha256)
);
CREATE INDEX IF NOT EXISTS artifact_blobs_sha ON artifact_blobs(sha256);

CREATE TABLE IF NOT EXISTS devices (
    id TEXT PRIMARY KEY,
    profile TEXT NOT NULL DEFAULT '',
    online INTEGER NOT NULL DEFAULT 0,
    session_id TEXT,
    session_ts TEXT,
    state_seq INTEGER NOT NULL DEFAULT 0,
    state TEXT,
    caps TEXT,
    active TEXT,
    previous TEXT,
    last_bench TEXT,
    desired_deployment_id TEXT,
    last_seen TEXT,
    created_at TEXT NOT NULL
);

CREATE TABLE IF NOT EXISTS device_sessions (
    device_id TEXT NOT NULL,
    session_id TEXT NOT NULL,
    seen_at TEXT NOT NULL,
    PRIMARY KEY (device_id, session_id)
);

CREATE TABLE IF NOT EXISTS deployments (
    id TEXT PRIMARY KEY,
    artifact_id TEXT NOT NULL REFERENCES artifacts(id),
    version_id TEXT NOT NULL REFERENCES versions(id),
    kind TEXT NOT NULL,
    rollback_of TEXT REFERENCES deployments(id),
    state TEXT NOT NULL,
    created_at TEXT NOT NULL,
    created_by TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS deployment_devices (
    deployment_id TEXT NOT NULL REFERENCES deployments(id),
    device_id TEXT NOT NULL REFERENCES devices(id),
    artifact_id TEXT NOT NULL REFERENCES artifacts(id),
    state TEXT NOT NULL,
    reason TEXT NOT NULL DEFAULT 'ok',
    detail TEXT NOT NULL DEFAULT '',
    last_job_state TEXT,
    last_seq INTEGER NOT NULL DEFAULT -1,
    previous_deployment_id TEXT,
    bench TEXT,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (deployment_id, device_id)
);
CREATE INDEX IF NOT EXISTS deployment_devices_device ON deployment_devices(device_id);
CREATE INDEX IF NOT EXISTS deployment_devices_artifact ON deployment_devices(artifact_id);

CREATE TABLE IF NOT EXISTS job_reports (
    deployment_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    state TEXT NOT NULL,
    reason TEXT NOT NULL,
    detail TEXT NOT NULL,
    ts TEXT NOT NULL,
    received_at TEXT NOT NULL,
    PRIMARY KEY (deployment_id, device_id, seq)
);
CREATE TRIGGER IF NOT EXISTS job_reports_immutable BEFORE UPDATE ON job_reports
BEGIN SELECT RAISE(ABORT, 'job reports are immutable'); END;

CREATE TABLE IF NOT EXISTS bench_reports (
    deployment_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    candidate_sha256 TEXT NOT NULL,
    decision TEXT NOT NULL,
    report TEXT NOT NULL,
    ts TEXT NOT NULL,
    received_at TEXT NOT NULL,
    PRIMARY KEY (deployment_id, device_id, candidate_sha256)
);

CREATE TABLE IF NOT EXISTS telemetry (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    device_id TEXT NOT NULL,
    ts TEXT NOT NULL,
    payload TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS telemetry_device_ts ON telemetry(device_id, ts);

CREATE TABLE IF NOT EXISTS audit_log (
    id TEXT PRIMARY KEY,
    ts TEXT NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    details TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_target ON audit_log(target, ts);
CREATE TRIGGER IF NOT EXISTS audit_no_update BEFORE UPDATE ON audit_log
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_no_delete BEFORE DELETE ON audit_log
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
"""


def create_schema(db: Database) -> None:
    """Create every table, index and trigger if missing, and stamp the schema version."""
    db.register_schema(DDL)
    with db.transaction() as conn:
        conn.execute("INSERT OR IGNORE INTO meta(key, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
