"""Telemetry intake and storage: batched writes, retention, downsampling, anomaly detection.

A fleet of 1,000 devices at 1 msg/s is 1,000 SQLite transactions per second if each sample
is written where it arrives (paho's network thread) — that thread then falls behind and
QoS1 reports queue up behind QoS0 telemetry. So samples go to a queue and one writer
thread stores them in batches (one transaction per ``flush_s``), and the lag from the
device's timestamp to "stored" is measured for every sample.

Retention: raw samples older than ``raw_retention_s`` are rolled up into per-device buckets
of ``bucket_s`` (averages, maxima, sums in ``telemetry_rollup``) and deleted; rollups older
than ``rollup_retention_s`` are deleted.

Anomaly detection: latency drift after activation — per device, the model's p50 latency
in telemetry compared with the same device's figure before the active model changed
(or its on-device benchmark). A drift beyond ``drift_ratio`` over ``min_samples`` samples
raises an event (stored + callbacks), which the rollout policy can turn into a rollback.
"""

from __future__ import annotations

import json
import logging
import queue
import statistics
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from common.messages import Telemetry
from controller.registry.db import Database

log = logging.getLogger(__name__)

DDL = """
CREATE TABLE IF NOT EXISTS telemetry_rollup (
    device_id TEXT NOT NULL,
    bucket_start TEXT NOT NULL,
    bucket_s INTEGER NOT NULL,
    samples INTEGER NOT NULL,
    cpu_avg REAL, cpu_max REAL, mem_avg REAL, rss_max REAL, temp_max REAL,
    latency_p50_avg REAL, latency_p50_max REAL, inferences INTEGER, errors INTEGER,
    PRIMARY KEY (device_id, bucket_start, bucket_s)
);
CREATE TABLE IF NOT EXISTS telemetry_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    device_id TEXT NOT NULL,
    ts TEXT NOT NULL,
    kind TEXT NOT NULL,
    detail TEXT NOT NULL,
    figures TEXT NOT NULL
);
"""


def _iso(ts: datetime) -> str:
    return (ts if ts.tzinfo else ts.replace(tzinfo=UTC)).astimezone(UTC).isoformat()


@dataclass
class _DeviceWindow:
    model_sha: str | None = None
    before: deque[float] = field(default_factory=lambda: deque(maxlen=60))
    after: deque[float] = field(default_factory=lambda: deque(maxlen=60))
    flagged: bool = False


class TelemetryStore:
    """Batched telemetry writer + queries + retention + anomaly detection on one registry.

    Args:
        db: the registry's database (raw samples go to its ``telemetry`` table, which this store owns).
        flush_s: longest time a sample waits before it is written.
        raw_retention_s, bucket_s, rollup_retention_s: retention and downsampling.
        drift_ratio, min_samples: latency drift anomaly rule.
    """

    def __init__(
        self,
        db: Database,
        *,
        flush_s: float = 0.25,
        raw_retention_s: float = 3600.0,
        bucket_s: int = 60,
        rollup_retention_s: float = 30 * 86400.0,
        drift_ratio: float = 1.5,
        min_samples: int = 5,
    ) -> None:
        self.db = db
        self.flush_s = flush_s
        self.raw_retention_s = raw_retention_s
        self.bucket_s = bucket_s
        self.rollup_retention_s = rollup_retention_s
        self.drift_ratio = drift_ratio
        self.min_samples = min_samples
        self.lag_s: deque[float] = deque(maxlen=100_000)
        self.stored = 0
        self.listeners: list[Callable[[dict[str, Any]], None]] = []
        self._queue: queue.Queue[tuple[Telemetry, str | None] | None] = queue.Queue()
        self._windows: dict[str, _DeviceWindow] = {}
        self._thread: threading.Thread | None = None
        db.register_schema(DDL)

    # ------------------------------------------------------------------ intake
    def start(self) -> TelemetryStore:
        """Start the writer thread."""
        self._thread = threading.Thread(target=self._run, name="telemetry-writer", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Flush what is queued and stop."""
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(10)
            self._thread = None

    def put(self, sample: Telemetry, active_sha: str | None = None) -> None:
        """Queue one sample (any thread; never blocks)."""
        self._queue.put((sample, active_sha))

    def _run(self) -> None:
        last_maintenance = time.monotonic()
        while True:
            batch: list[tuple[Telemetry, str | None]] = []
            stop = False
            deadline = time.monotonic() + self.flush_s
            while time.monotonic() < deadline and len(batch) < 20_000:
                try:
                    item = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
                if item is None:
                    stop = True
                    break
                batch.append(item)
            if batch:
                try:
                    self.write_batch(batch)
                except Exception:  # noqa: BLE001 - telemetry must never take the controller down
                    log.exception("writing %d telemetry samples failed", len(batch))
            if time.monotonic() - last_maintenance > 60:
                last_maintenance = time.monotonic()
                try:
                    self.maintain()
                except Exception:  # noqa: BLE001
                    log.exception("telemetry retention failed")
            if stop:
                return

    def write_batch(self, batch: list[tuple[Telemetry, str | None]]) -> None:
        """Store samples in one transaction, then run the anomaly rule on them."""
        rows = [(t.device_id, _iso(t.ts), t.model_dump_json()) for t, _ in batch]
        with self.db.transaction() as conn:
            conn.executemany("INSERT INTO telemetry(device_id, ts, payload) VALUES (?, ?, ?)", rows)
        now = datetime.now(UTC)
        for t, sha in batch:
            ts = t.ts if t.ts.tzinfo else t.ts.replace(tzinfo=UTC)
            self.lag_s.append((now - ts).total_seconds())
            self._observe(t, sha)
        self.stored += len(batch)

    def lag(self) -> dict[str, float]:
        """Device timestamp → stored (seconds): p50 / p99 / max over the last 100k samples."""
        lags = sorted(self.lag_s)
        if not lags:
            return {"samples": 0}
        return {"samples": len(lags), "p50": lags[len(lags) // 2],
                "p99": lags[min(len(lags) - 1, int(len(lags) * 0.99))], "max": lags[-1]}

    # ------------------------------------------------------------------ anomaly detection
    def _observe(self, t: Telemetry, active_sha: str | None) -> None:
        if t.latency_ms_p50 is None:
            return
        w = self._windows.setdefault(t.device_id, _DeviceWindow(model_sha=active_sha))
        if active_sha != w.model_sha:  # activation: what we saw so far is the "before"
            if w.after:
                w.before = deque(w.after, maxlen=60)
            w.after.clear()
            w.model_sha, w.flagged = active_sha, False
        w.after.append(t.latency_ms_p50)
        if w.flagged or len(w.before) < self.min_samples or len(w.after) < self.min_samples:
            return
        before, after = statistics.median(w.before), statistics.median(list(w.after)[-self.min_samples:])
        if before > 0 and after > before * self.drift_ratio:
            w.flagged = True
            self.raise_event(t.device_id, "latency_drift",
                             f"p50 latency {after:.2f} ms after activation vs {before:.2f} ms before "
                             f"(> {self.drift_ratio}x)",
                             {"before_ms": before, "after_ms": after, "ratio": after / before,
                              "model_sha256": active_sha, "samples": [len(w.before), len(w.after)]})

    def raise_event(self, device_id: str, kind: str, detail: str, figures: dict[str, Any]) -> dict[str, Any]:
        """Store an anomaly event and tell every listener (e.g. the rollout engine's rollback policy)."""
        event = {"device_id": device_id, "ts": datetime.now(UTC).isoformat(), "kind": kind, "detail": detail,
                 "figures": figures}
        with self.db.transaction() as conn:
            conn.execute("INSERT INTO telemetry_events(device_id, ts, kind, detail, figures) VALUES (?, ?, ?, ?, ?)",
                         (device_id, event["ts"], kind, detail, json.dumps(figures, default=str)))
        log.warning("telemetry anomaly on %s: %s", device_id, detail)
        for listener in list(self.listeners):
            try:
                listener(event)
            except Exception:  # noqa: BLE001
                log.exception("telemetry event listener failed")
        return event

    def events(self, *, device_id: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        """Stored anomaly events, newest first."""
        clause, params = ("WHERE device_id = ?", (device_id,)) if device_id else ("", ())
        rows = self.db.all(f"SELECT * FROM telemetry_events {clause} ORDER BY id DESC LIMIT ?",
                                  (*params, limit))
        return [{**r, "figures": json.loads(r["figures"])} for r in rows]

    # ------------------------------------------------------------------ retention + queries
    def maintain(self, now: float | None = None) -> dict[str, int]:
        """Roll raw samples older than the raw retention up into buckets, delete them and old rollups."""
        now = now or time.time()
        raw_cut = datetime.fromtimestamp(now - self.raw_retention_s, UTC).isoformat()
        rollup_cut = datetime.fromtimestamp(now - self.rollup_retention_s, UTC).isoformat()
        rows = self.db.all("SELECT device_id, ts, payload FROM telemetry WHERE ts < ?", (raw_cut,))
        buckets: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for r in rows:
            ts = datetime.fromisoformat(r["ts"]).timestamp()
            start = datetime.fromtimestamp(ts - ts % self.bucket_s, UTC).isoformat()
            buckets.setdefault((r["device_id"], start), []).append(json.loads(r["payload"]))
        with self.db.transaction() as conn:
            for (device, start), samples in buckets.items():
                conn.execute(
                    "INSERT OR REPLACE INTO telemetry_rollup VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (device, start, self.bucket_s, *_rollup(samples)),
                )
            deleted = conn.execute("DELETE FROM telemetry WHERE ts < ?", (raw_cut,)).rowcount
            dropped = conn.execute("DELETE FROM telemetry_rollup WHERE bucket_start < ?", (rollup_cut,)).rowcount
        return {"rolled_up": len(rows), "buckets": len(buckets), "raw_deleted": deleted, "rollups_deleted": dropped}

    def metrics(self, *, device_id: str, since: str | None = None, resolution: str = "raw",
                limit: int = 1000) -> list[dict[str, Any]]:
        """A device's samples (``resolution="raw"``) or rolled-up buckets (``"rollup"``), oldest first."""
        since = since or "0"
        if resolution == "rollup":
            return self.db.all(
                "SELECT * FROM telemetry_rollup WHERE device_id = ? AND bucket_start >= ? ORDER BY bucket_start "
                "LIMIT ?", (device_id, since, limit))
        rows = self.db.all(
            "SELECT payload FROM telemetry WHERE device_id = ? AND ts >= ? ORDER BY ts DESC LIMIT ?",
            (device_id, since, limit))
        return [json.loads(r["payload"]) for r in reversed(rows)]

    def latest(self) -> dict[str, dict[str, Any]]:
        """Newest sample per device (for the Prometheus endpoint)."""
        rows = self.db.all(
            "SELECT t.device_id, t.payload FROM telemetry t JOIN (SELECT device_id, MAX(id) AS id FROM telemetry "
            "GROUP BY device_id) m ON m.id = t.id")
        return {r["device_id"]: json.loads(r["payload"]) for r in rows}


def _rollup(samples: list[dict[str, Any]]) -> tuple[Any, ...]:
    def vals(key: str) -> list[float]:
        return [s[key] for s in samples if s.get(key) is not None]

    def avg(key: str) -> float | None:
        v = vals(key)
        return sum(v) / len(v) if v else None

    def mx(key: str) -> float | None:
        v = vals(key)
        return max(v) if v else None

    return (len(samples), avg("cpu_percent"), mx("cpu_percent"), avg("mem_percent"), mx("rss_mb"),
            mx("temperature_c"), avg("latency_ms_p50"), mx("latency_ms_p50"), int(sum(vals("inferences"))),
            int(sum(vals("errors"))))
