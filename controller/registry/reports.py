"""Job and benchmark reports: stored idempotently, and what they do to a device's deployment status.

Job reports are idempotent on (deployment, device, seq) and a lower ``seq`` never moves
a device backwards; benchmark reports on (deployment, device, candidate blob). A report
for an unknown deployment, or from a device the deployment does not target, is answered
with its :class:`ReportOutcome` and changes nothing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from common.errors import ReasonCode
from common.messages import BenchReport, JobReport
from controller.registry.db import Database, iso_utc, utcnow
from controller.registry.deployments import refresh_deployment_state
from controller.registry.records import DeviceDeploymentState, ReportOutcome, job_state_to_status

S = DeviceDeploymentState


@dataclass(frozen=True)
class ReportResult:
    """Outcome of recording one report: what happened and where the device now stands."""

    outcome: ReportOutcome
    device_state: DeviceDeploymentState | None = None
    deployment_done: bool = False


class ReportRecords:
    """Reports on the registry's :class:`Database` (``registry.reports``)."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def _report_target(
        self, deployment_id: str, device_id: str
    ) -> tuple[ReportResult | None, dict[str, Any]]:
        """The deployment-device row a report is about, or the outcome saying why the report is ignored."""
        if self.db.one("SELECT 1 AS x FROM deployments WHERE id = ?", (deployment_id,)) is None:
            return ReportResult(ReportOutcome.UNKNOWN_DEPLOYMENT), {}
        dd = self.db.one(
            "SELECT * FROM deployment_devices WHERE deployment_id = ? AND device_id = ?", (deployment_id, device_id)
        )
        if dd is None:
            return ReportResult(ReportOutcome.NOT_TARGETED), {}
        return None, dd

    def record_job_report(self, *, report: JobReport) -> ReportResult:
        """Store one job report and advance the device's status; idempotent on (deployment, device, seq)."""
        with self.db.transaction() as conn:
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
                    report.state.value,
                    report.reason.value,
                    report.detail,
                    iso_utc(report.ts),
                    utcnow(),
                ),
            )
            current = S(dd["state"])
            if not cur.rowcount:
                return ReportResult(ReportOutcome.DUPLICATE, current)
            if report.seq <= dd["last_seq"]:
                return ReportResult(ReportOutcome.STALE, current)
            new = job_state_to_status(report.state, report.reason)
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
                    report.state.value,
                    report.seq,
                    utcnow(),
                    report.deployment_id,
                    report.device_id,
                ),
            )
            done = refresh_deployment_state(conn, report.deployment_id)
        return ReportResult(ReportOutcome.APPLIED, new_state, done)

    def record_bench_report(self, *, report: BenchReport) -> ReportResult:
        """Store a benchmark report (idempotent per deployment, device and candidate blob)."""
        text = report.model_dump_json()
        with self.db.transaction() as conn:
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
                    iso_utc(report.ts),
                    utcnow(),
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
                (text, new_state.value, reason, detail, utcnow(), report.deployment_id, report.device_id),
            )
            done = refresh_deployment_state(conn, report.deployment_id)
        return ReportResult(ReportOutcome.APPLIED, new_state, done)

    def bench_reports(self, *, deployment_id: str | None = None, device_id: str | None = None) -> list[dict]:
        """Stored benchmark reports (as the protocol's JSON), oldest first."""
        where, params = [], []
        if deployment_id:
            where.append("deployment_id = ?")
            params.append(deployment_id)
        if device_id:
            where.append("device_id = ?")
            params.append(device_id)
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        rows = self.db.all(f"SELECT report FROM bench_reports {clause} ORDER BY received_at, rowid", tuple(params))
        return [json.loads(r["report"]) for r in rows]

    def job_reports(self, *, deployment_id: str, device_id: str | None = None) -> list[dict[str, Any]]:
        """Stored job reports of a deployment, in seq order."""
        params: tuple = (deployment_id,) if device_id is None else (deployment_id, device_id)
        clause = "" if device_id is None else " AND device_id = ?"
        return self.db.all(f"SELECT * FROM job_reports WHERE deployment_id = ?{clause} ORDER BY device_id, seq", params)


def _bench_reason(reasons: list[str]) -> str:
    """The first reason code in an agent's human-readable reasons (``"regression_latency: p95 ..."``)."""
    codes = {c.value for c in ReasonCode} - {ReasonCode.OK.value}
    for text in reasons:
        code = text.split(":", 1)[0].strip()
        if code in codes:
            return code
    return "regression"
