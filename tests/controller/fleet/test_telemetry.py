"""Telemetry store (batched writes, retention + downsampling, drift anomaly) and HA discovery configs."""

from __future__ import annotations

import json
import threading
import uuid
from datetime import UTC, datetime, timedelta

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from common.messages import Telemetry
from controller.fleet import FleetService
from controller.fleet.prometheus import render_metrics
from controller.fleet.telemetry import TelemetryStore
from controller.registry import Registry

pytestmark = pytest.mark.timeout(60)


def _tm(dev: str, ts: datetime, p50: float | None = 5.0, cpu: float = 10.0) -> Telemetry:
    return Telemetry(device_id=dev, cpu_percent=cpu, mem_percent=40, rss_mb=50, latency_ms_p50=p50, inferences=3,
                     ts=ts)


def test_batches_retention_and_rollups(tmp_path):
    reg = Registry(tmp_path / "ws")
    store = TelemetryStore(reg.db, raw_retention_s=600, bucket_s=60)
    old = (datetime.now(UTC) - timedelta(hours=2)).replace(minute=0, second=0, microsecond=0)
    batch = [(_tm("d1", old + timedelta(seconds=i * 10), cpu=float(i)), None) for i in range(12)]  # 2 minutes
    batch += [(_tm("d1", datetime.now(UTC)), None)]
    store.write_batch(batch)
    assert store.stored == 13 and len(store.metrics(device_id="d1")) == 13
    result = store.maintain()
    assert result == {"rolled_up": 12, "buckets": 2, "raw_deleted": 12, "rollups_deleted": 0}
    rollups = store.metrics(device_id="d1", resolution="rollup")
    assert [r["samples"] for r in rollups] == [6, 6]
    assert rollups[0]["cpu_avg"] == pytest.approx(2.5) and rollups[1]["cpu_max"] == 11
    assert rollups[0]["inferences"] == 18
    assert len(store.metrics(device_id="d1")) == 1  # only the recent raw sample is left
    assert "edgefleet_device_cpu_percent{device=\"d1\"" in render_metrics(reg, type("F", (), {"telemetry": store})())
    reg.close()


def test_latency_drift_after_activation_raises_event(tmp_path):
    reg = Registry(tmp_path / "ws")
    store = TelemetryStore(reg.db, drift_ratio=1.5, min_samples=5)
    seen: list[dict] = []
    store.listeners.append(seen.append)
    now = datetime.now(UTC)
    store.write_batch([(_tm("d1", now, p50=5.0), "a" * 64) for _ in range(6)])
    store.write_batch([(_tm("d1", now, p50=5.5), "b" * 64) for _ in range(6)])  # new model, within 1.5x
    assert not seen
    store.write_batch([(_tm("d1", now, p50=9.0), "c" * 64) for _ in range(6)])  # 9.0 vs 5.5 → drift
    assert len(seen) == 1 and seen[0]["kind"] == "latency_drift" and seen[0]["figures"]["ratio"] > 1.5
    assert store.events(device_id="d1")[0]["figures"]["model_sha256"] == "c" * 64
    store.write_batch([(_tm("d1", now, p50=9.5), "c" * 64) for _ in range(6)])
    assert len(seen) == 1  # one event per activation
    reg.close()


def test_home_assistant_discovery_configs_are_retained(mosquitto, tmp_path):
    fleet = f"t{uuid.uuid4().hex[:8]}"
    reg = Registry(tmp_path / "ws")
    reg.devices.register_device(device_id="pi-7", profile="rpi4")
    svc = FleetService(reg, host=mosquitto.host, port=mosquitto.port,
                       password=mosquitto.credentials.users["controller"], fleet=fleet).start()
    got: dict[str, dict] = {}
    done = threading.Event()
    try:
        assert svc.publish_ha_discovery(prefix=f"homeassistant/{fleet}") == 7
        c = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2)
        c.username_pw_set("controller", mosquitto.credentials.users["controller"])

        def on_message(client, userdata, msg):
            got[msg.topic] = json.loads(msg.payload)
            if len(got) == 7:
                done.set()

        c.on_message = on_message
        c.on_connect = lambda cl, *a: cl.subscribe(f"homeassistant/{fleet}/#", 1)
        c.connect(mosquitto.host, mosquitto.port)
        c.loop_start()
        assert done.wait(10), got
        c.loop_stop()
        c.disconnect()
        cfg = got[f"homeassistant/{fleet}/sensor/edgefleet_pi_7_temperature_c/config"]
        assert cfg["state_topic"] == f"fl/v1/{fleet}/dev/pi-7/tm" and cfg["device_class"] == "temperature"
        assert cfg["availability_topic"] == f"fl/v1/{fleet}/dev/pi-7/state" and cfg["device"]["model"] == "rpi4"
    finally:
        svc.stop()
        reg.close()
