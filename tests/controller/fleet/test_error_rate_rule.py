"""The error-rate anomaly rule on live telemetry (failed share of real inferences since activation)."""

from __future__ import annotations

from datetime import UTC, datetime

from common.messages import Telemetry
from controller.fleet.telemetry import TelemetryStore
from controller.registry import Registry


def _tm(inferences: int, errors: int, p50: float | None = 2.0) -> Telemetry:
    return Telemetry(device_id="d1", cpu_percent=5, mem_percent=30, rss_mb=40, inferences=inferences, errors=errors,
                     latency_ms_p50=p50 if inferences > errors else None, ts=datetime.now(UTC))


def test_error_rate_after_activation_raises_one_event_per_model(tmp_path):
    reg = Registry(tmp_path / "ws")
    store = TelemetryStore(reg.db, error_rate=0.05, min_inferences=20)
    seen: list[dict] = []
    store.listeners.append(seen.append)
    store.write_batch([(_tm(50, 1), "a" * 64) for _ in range(4)])  # 2 % on the old model: fine
    assert not seen
    store.write_batch([(_tm(10, 0), "b" * 64)])  # new model, too few inferences to judge yet
    store.write_batch([(_tm(0, 0), "b" * 64)])  # idle samples count for nothing
    assert not seen
    store.write_batch([(_tm(10, 2), "b" * 64)])  # 2 of 20 = 10 % since activation
    assert len(seen) == 1 and seen[0]["kind"] == "error_rate"
    assert seen[0]["figures"] | {"rate": 0.1} == {"errors": 2, "inferences": 20, "rate": 0.1, "model_sha256": "b" * 64}
    store.write_batch([(_tm(10, 10), "b" * 64)])
    assert len(seen) == 1  # once per activation
    store.write_batch([(_tm(30, 30), "c" * 64)])  # the next model starts from zero and fails too
    assert [e["kind"] for e in seen] == ["error_rate", "error_rate"]
    assert store.events(device_id="d1")[0]["figures"]["model_sha256"] == "c" * 64
    reg.close()
