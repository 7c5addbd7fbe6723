"""The dashboards users run: the shipped Grafana dashboard against what /metrics serves; HA discovery by setting."""

from __future__ import annotations

import json
import re
import threading
import time
import uuid
from datetime import UTC, datetime

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from prometheus_client.parser import text_string_to_metric_families

from common.messages import DeviceState, Telemetry
from controller.dashboards import GRAFANA_DASHBOARD, HomeAssistantAnnouncer
from controller.fleet import FleetService
from controller.fleet.prometheus import render_metrics
from controller.fleet.telemetry import TelemetryStore
from controller.jobs import JobStore
from controller.registry import Registry

pytestmark = pytest.mark.timeout(60)


def dashboard_metrics() -> set[str]:
    """Every edgefleet metric name a panel of the shipped dashboard queries."""
    dash = json.loads(GRAFANA_DASHBOARD.read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
    exprs += [v["query"] for v in dash["templating"]["list"] if v["type"] == "query"]
    return {m for e in exprs for m in re.findall(r"\bedgefleet_[a-z0-9_]+", e)}


def served_metrics(text: str) -> dict[str, list]:
    """Sample name → samples, parsed by prometheus_client's own parser (so the exposition must be valid)."""
    out: dict[str, list] = {}
    for family in text_string_to_metric_families(text):
        out.setdefault(family.name, [])
        if family.type == "counter":  # the parser strips _total from a counter family's name
            out.setdefault(family.name + "_total", [])
        for s in family.samples:
            out.setdefault(s.name, []).append(s)
    return out


def test_grafana_dashboard_uses_only_metrics_that_metrics_serves(tmp_path):
    reg = Registry(tmp_path / "ws")
    jobs = JobStore(tmp_path / "ws" / "jobs.sqlite")
    store = TelemetryStore(reg.db)
    reg.devices.record_device_state(state=DeviceState(device_id="pi-1", session_id="s1", online=True, profile="rpi4",
                                              agent_version="1.0"))
    store.write_batch([(Telemetry(device_id="pi-1", cpu_percent=12, mem_percent=40, rss_mb=50, temperature_c=51.5,
                                  latency_ms_p50=7.5, inferences=30, errors=1, ts=datetime.now(UTC)), None)])
    fleet = type("Fleet", (), {"telemetry": store, "stats": {"rx_state": 3, "rx_tm": 1}})()
    text = render_metrics(reg, fleet, None, jobs)
    served = served_metrics(text)
    wanted = dashboard_metrics()
    assert wanted, "the dashboard queries no edgefleet metric"
    missing = sorted(m for m in wanted if m not in served)
    assert not missing, f"the Grafana dashboard queries metrics /metrics does not serve: {missing}"
    families = {f.name for f in text_string_to_metric_families(text)}
    unused = sorted(f for f in families if f not in wanted and f + "_total" not in wanted)
    assert not unused, f"served but on no dashboard panel: {unused}"
    temp = served["edgefleet_device_temperature_celsius"][0]
    assert temp.value == 51.5 and temp.labels == {"device": "pi-1", "profile": "rpi4"}
    assert served["edgefleet_device_online"][0].value == 1
    assert {s.labels["kind"]: s.value for s in served["edgefleet_fleet_messages_total"]} == {"rx_state": 3, "rx_tm": 1}
    assert {s.labels["state"] for s in served["edgefleet_jobs"]} >= {"queued", "running", "succeeded"}
    jobs.close()
    reg.close()


def test_home_assistant_announcer_publishes_every_device_and_new_ones(mosquitto, tmp_path):
    fleet = f"t{uuid.uuid4().hex[:8]}"
    reg = Registry(tmp_path / "ws")
    reg.devices.register_device(device_id="pi-1", profile="rpi4")
    svc = FleetService(reg, host=mosquitto.host, port=mosquitto.port,
                       password=mosquitto.credentials.users["controller"], fleet=fleet).start()
    got: dict[str, dict] = {}
    lock = threading.Lock()
    c = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2)
    c.username_pw_set("controller", mosquitto.credentials.users["controller"])

    def on_message(client, userdata, msg):
        with lock:
            got[msg.topic] = json.loads(msg.payload)

    c.on_message = on_message
    c.on_connect = lambda cl, *a: cl.subscribe(f"homeassistant/{fleet}/#", 1)
    announcer = HomeAssistantAnnouncer(svc, prefix=f"homeassistant/{fleet}", interval_s=0.2).start()
    try:
        c.connect(mosquitto.host, mosquitto.port)
        c.loop_start()

        def devices_seen() -> set[str]:
            with lock:
                return {cfg["device"]["name"] for cfg in got.values()}

        deadline = time.monotonic() + 10
        while "pi-1" not in devices_seen() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert devices_seen() == {"pi-1"}
        reg.devices.register_device(device_id="pi-2", profile="rpi5")  # a device the controller learns about later
        deadline = time.monotonic() + 10
        while "pi-2" not in devices_seen() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert devices_seen() == {"pi-1", "pi-2"}
        announcer.stop()  # joins the thread: its counter is final
        assert announcer.published == 14 and announcer.announce_new() == 0  # each device announced once
        cfg = got[f"homeassistant/{fleet}/sensor/edgefleet_pi_2_latency_ms_p50/config"]
        assert cfg["state_topic"] == f"fl/v1/{fleet}/dev/pi-2/tm" and cfg["device"]["model"] == "rpi5"
    finally:
        announcer.stop()
        c.loop_stop()
        c.disconnect()
        svc.stop()
        reg.close()


def test_grafana_dashboard_cli_prints_the_json(capsys):
    from controller.cli import main

    assert main(["grafana-dashboard"]) == 0
    assert json.loads(capsys.readouterr().out)["uid"] == "edgefleet-fleet"
    assert main(["homeassistant", "publish", "--url", "http://127.0.0.1:9"]) == 1  # nothing listens there
    assert "cannot reach the controller" in capsys.readouterr().err
