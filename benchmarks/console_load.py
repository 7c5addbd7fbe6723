"""Console pages on a large registry, and how fast a device's new state reaches an open console.

1. ``console_pages_large_registry``: a workspace with 1,000 devices (each with 30 telemetry
   samples, so the devices page draws real sparklines), 10,000 model versions (100 models x
   100 versions in lineage chains, plus one model with the rest); a real controller process
   (``edgefleet controller``, fleet service on a real mosquitto) serves
   it; p95 of every console fragment and page shell, each requested ``--console-requests`` times.
   Target p95 < 300 ms.
2. ``live_device_state``: a device publishes a new retained state (as its agent does, with its
   own login); the time until a console client subscribed to ``/console/stream`` receives the
   ``devices`` event and its devices fragment shows the new state: what a browser does, without
   the browser's own paint time. Target < 2 s.

Called by ``benchmarks/api.py --console`` (results merged into ``benchmarks/results/api.{json,md}``).
"""

from __future__ import annotations

import json
import os
import statistics
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx


def pct(values: list[float], q: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, int(round(q / 100 * len(ordered))) - 1))]


def populate(workspace: Path, *, devices: int, versions: int, samples: int = 30) -> dict:
    """Fill a registry directly (far faster than 10,000 REST calls); returns ids to request."""
    from common.messages import DeviceState, Telemetry
    from controller.fleet.telemetry import TelemetryStore
    from controller.registry import Registry

    t0 = time.monotonic()
    reg = Registry(workspace)
    blob = workspace.parent / "blob.onnx"
    blob.write_bytes(os.urandom(4096))
    ids: dict = {"devices": [], "versions": [], "models": []}
    per_model, models = 100, max(1, (versions // 2) // 100)
    made = 0
    for m in range(models):
        model = reg.create_model(name=f"model-{m:03d}", description="benchmark lineage")
        ids["models"].append(model.name)
        parent = None
        for v in range(per_model):
            parent = None if v % 10 == 0 else parent  # chains of 10: a root, 9 derived versions
            rec = reg.add_version(model_id=model.id, path=blob, technique="int8-static" if parent else "fp32",
                                  config={"technique": "int8-static", "calibration_samples": 64} if parent else {},
                                  parent_id=parent, metrics={"quality_score": 0.99, "size_ratio": 0.27,
                                                             "latency_ratio": 0.5})
            parent = rec.id
            made += 1
            if v == 9:
                ids["versions"].append(rec.id)
    big = reg.create_model(name="big-model", description="one model holding the rest of the versions")
    ids["models"].append(big.name)
    parent = None
    while made < versions:
        rec = reg.add_version(model_id=big.id, path=blob, technique="fp16", parent_id=parent, metrics={})
        parent = rec.id if made % 10 else None
        made += 1
    now = datetime.now(UTC)
    store = TelemetryStore(reg.db)
    batch = []
    for i in range(devices):
        dev = f"dev-{i:04d}"
        ids["devices"].append(dev)
        reg.devices.record_device_state(state=DeviceState(device_id=dev, session_id=f"s{i}", online=i % 7 != 0,
                                                  profile=("rpi4", "rpi5", "jetson-orin-nano")[i % 3],
                                                  agent_version="1.0"))
        batch += [(Telemetry(device_id=dev, cpu_percent=10 + k % 40, mem_percent=40, rss_mb=60,
                             latency_ms_p50=20 + (i + k) % 9, inferences=100, errors=k % 5 == 0,
                             ts=now - timedelta(seconds=samples - k)), None) for k in range(samples)]
        if len(batch) > 5000:
            store.write_batch(batch)
            batch = []
    store.write_batch(batch)
    reg.close()
    ids["populate_s"] = round(time.monotonic() - t0, 1)
    return ids


def page_paths(ids: dict) -> list[str]:
    """Every console page a user opens: shells and the fragments htmx loads into them."""
    frag = "/console/fragments"
    paths = ["/console/", "/console/devices", f"{frag}/overview", f"{frag}/models", f"{frag}/models?page=2",
             f"{frag}/models/{ids['models'][0]}", f"{frag}/models/big-model", f"{frag}/models/big-model?page=50",
             f"{frag}/versions/{ids['versions'][0]}", f"{frag}/jobs", f"{frag}/devices", f"{frag}/devices?page=20",
             f"{frag}/devices/{ids['devices'][1]}", f"{frag}/deployments", f"{frag}/rollouts"]
    return paths


def measure_pages(url: str, key: str, paths: list[str], requests: int) -> dict:
    """p50/p95 per page and over all pages (sequential requests, one client)."""
    per: dict[str, list[float]] = {p: [] for p in paths}
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=60) as c:
        for p in paths:  # warm-up (templates compiled, caches filled)
            c.get(p).raise_for_status()
        for _ in range(requests):
            for p in paths:
                t = time.perf_counter()
                r = c.get(p)
                per[p].append((time.perf_counter() - t) * 1000)
                r.raise_for_status()
    every = [v for vs in per.values() for v in vs]
    return {"requests": len(every), "p50_ms": round(statistics.median(every), 1), "p95_ms": round(pct(every, 95), 1),
            "max_ms": round(max(every), 1),
            "pages": {p: {"p50_ms": round(statistics.median(v), 1), "p95_ms": round(pct(v, 95), 1)}
                      for p, v in per.items()}}


def live_state_latency(url: str, key: str, broker: object, fleet: str, device: str, password: str,
                       trials: int) -> dict:
    """Publish a new retained state as the device; time until an SSE client sees it in the devices fragment."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    from common import topics
    from common.messages import DeviceState

    headers = {"Authorization": f"Bearer {key}"}
    events: list[float] = []
    got = threading.Event()
    stop = threading.Event()

    def listen() -> None:
        ticket = httpx.post(url + "/console/stream-ticket", headers=headers).json()["data"]["ticket"]
        with httpx.stream("GET", url + "/console/stream", params={"ticket": ticket}, timeout=None) as r:
            for line in r.iter_lines():
                if stop.is_set():
                    return
                if line == "event: devices":
                    events.append(time.monotonic())
                    got.set()

    threading.Thread(target=listen, daemon=True).start()
    time.sleep(1.0)
    client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id=device)
    client.username_pw_set(device, password)
    client.connect(broker.host, broker.port)
    client.loop_start()
    seen, to_event = [], []
    states = ("download", "verify", "install", "benchmark", "idle")
    with httpx.Client(base_url=url, headers=headers, timeout=30) as c:
        for i in range(trials):
            state = f"{states[i % len(states)]}"
            marker = f"bench-{i}"
            msg = DeviceState(device_id=device, session_id="bench", seq=1000 + i, online=True, profile="rpi4",
                              agent_version=marker, update_state=state)
            got.clear()
            t0 = time.monotonic()
            client.publish(topics.state(fleet, device), msg.model_dump_json().encode(), qos=1, retain=True)
            deadline = t0 + 10
            while time.monotonic() < deadline:  # what the page does: wait for the event, then fetch the fragment
                if not got.wait(0.05):
                    continue
                got.clear()
                frag = c.get(f"/console/fragments/devices/{device}").text
                if marker in frag:
                    break
            seen.append(time.monotonic() - t0)
            to_event.append((events[-1] - t0) if events and events[-1] >= t0 else float("nan"))
            time.sleep(0.3)
    stop.set()
    client.loop_stop()
    client.disconnect()
    return {"trials": trials, "p50_s": round(statistics.median(seen), 3), "p95_s": round(pct(seen, 95), 3),
            "max_s": round(max(seen), 3), "event_p50_s": round(statistics.median([x for x in to_event if x == x]), 3)}


def run(tmp: Path, make_controller, *, devices: int = 1000, versions: int = 10_000, requests: int = 20,
        trials: int = 20) -> dict:
    """Both scenarios on one controller; returns the results dict."""
    from controller.broker import Credentials, start_mosquitto

    creds = Credentials()
    broker = start_mosquitto(tmp / "broker", creds)
    try:
        base = make_controller(tmp, EDGEFLEET_BROKER_HOST=broker.host, EDGEFLEET_BROKER_PORT=str(broker.port),
                               EDGEFLEET_BROKER_PASSWORD=creds.users["controller"], EDGEFLEET_FLEET="bench",
                               EDGEFLEET_JOB_PLUGINS="")
        ids = populate(base.workspace, devices=devices, versions=versions)
        password = broker.add_user(ids["devices"][3])
        ctl = base.start(timeout=120)
        try:
            load_before = os.getloadavg()[0]
            pages = measure_pages(ctl.url, ctl.keys["viewer"], page_paths(ids), requests)
            pages.update({"devices": devices, "versions": versions, "populate_s": ids["populate_s"],
                          "loadavg_1m_before_after": [round(load_before, 2), round(os.getloadavg()[0], 2)],
                          "target_p95_ms": 300.0})
            pages["pass"] = pages["p95_ms"] < 300.0
            live = live_state_latency(ctl.url, ctl.keys["viewer"], broker, "bench", ids["devices"][3], password,
                                      trials)
            live["target_s"] = 2.0
            live["pass"] = live["max_s"] < 2.0
            return {"console_pages_large_registry": pages, "live_device_state": live}
        finally:
            ctl.stop()
    finally:
        broker.stop()


if __name__ == "__main__":  # pragma: no cover - see benchmarks/api.py --console
    print(json.dumps(run.__doc__))
