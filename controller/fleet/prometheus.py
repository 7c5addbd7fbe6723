"""Prometheus exposition of the fleet, built with ``prometheus_client``: devices, telemetry, counters, rollouts, jobs.

A custom collector reads the registry, the fleet service and the rollout engine on each
scrape, so there is one source of truth and no second set of in-memory gauges to keep in
step; ``prometheus_client`` does the escaping, typing and format. Families are always
declared (``# HELP``/``# TYPE``), even with no sample yet, so dashboards and the test that
checks the shipped Grafana dashboard see the same names on an empty controller. The names
are listed in ``docs/dashboards.md``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from controller.registry import Registry

TELEMETRY_GAUGES = (
    ("cpu_percent", "edgefleet_device_cpu_percent", "CPU utilisation reported by the agent"),
    ("mem_percent", "edgefleet_device_memory_percent", "memory utilisation reported by the agent"),
    ("rss_mb", "edgefleet_device_agent_rss_mb", "agent resident memory (MB)"),
    ("temperature_c", "edgefleet_device_temperature_celsius", "highest temperature sensor"),
    ("latency_ms_p50", "edgefleet_device_inference_latency_p50_ms", "active model p50 latency (ms)"),
    ("inferences", "edgefleet_device_inferences", "inferences in the last telemetry interval"),
    ("errors", "edgefleet_device_inference_errors", "inference errors in the last telemetry interval"),
)
_GAUGES = TELEMETRY_GAUGES  # the name older code imported


class FleetCollector:
    """A ``prometheus_client`` collector over the registry, fleet, rollout engine and job store."""

    def __init__(self, registry: Registry, fleet: Any = None, engine: Any = None, jobs: Any = None) -> None:
        self.registry, self.fleet, self.engine, self.jobs = registry, fleet, engine, jobs

    def collect(self) -> Iterator[Any]:
        """Every family, read now."""
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        devices = self.registry.devices.list_devices()
        profiles = {d.id: d.profile for d in devices}
        online = GaugeMetricFamily("edgefleet_device_online", "1 while the device's session is up",
                                   labels=["device", "profile"])
        info = GaugeMetricFamily("edgefleet_device_info", "1 per device, labelled with what it runs",
                                 labels=["device", "profile", "active_version", "agent_version", "update_state"])
        seen = GaugeMetricFamily("edgefleet_device_last_seen_timestamp_seconds",
                                 "when the controller last heard from the device (Unix time)", labels=["device"])
        for d in devices:
            online.add_metric([d.id, d.profile], int(d.online))
            state = d.state or {}
            info.add_metric([d.id, d.profile, (d.active or {}).get("version", ""), state.get("agent_version", ""),
                             state.get("update_state", "")], 1)
            if d.last_seen is not None:
                seen.add_metric([d.id], d.last_seen.timestamp())
        yield from (online, info, seen)
        telemetry = getattr(self.fleet, "telemetry", None)
        latest = telemetry.latest() if telemetry is not None else {}
        for key, name, help_text in TELEMETRY_GAUGES:
            family = GaugeMetricFamily(name, help_text, labels=["device", "profile"])
            for dev, sample in sorted(latest.items()):
                if sample.get(key) is not None:
                    family.add_metric([dev, profiles.get(dev, "")], float(sample[key]))
            yield family
        messages = CounterMetricFamily("edgefleet_fleet_messages", "controller MQTT counters by kind", labels=["kind"])
        for kind, n in sorted((getattr(self.fleet, "stats", None) or {}).items()):
            messages.add_metric([kind], n)
        yield messages
        rollouts = GaugeMetricFamily("edgefleet_rollouts", "rollouts by state", labels=["state"])
        if self.engine is not None:
            counts: dict[str, int] = {}
            for r in self.engine.store.list():
                counts[r.state] = counts.get(r.state, 0) + 1
            for state, n in sorted(counts.items()):
                rollouts.add_metric([state], n)
        yield rollouts
        jobs = GaugeMetricFamily("edgefleet_jobs", "compression / conversion jobs by state", labels=["state"])
        for state, n in sorted((self.jobs.counts() if self.jobs is not None else {}).items()):
            jobs.add_metric([state], n)
        yield jobs


def render_metrics(registry: Registry, fleet: Any = None, engine: Any = None, jobs: Any = None) -> str:
    """The whole exposition as text (``text/plain; version=0.0.4``).

    Example:
        >>> "edgefleet_device_online" in render_metrics(reg)  # doctest: +SKIP
        True
    """
    from prometheus_client import CollectorRegistry, generate_latest

    reg = CollectorRegistry(auto_describe=False)
    reg.register(FleetCollector(registry, fleet, engine, jobs))
    return generate_latest(reg).decode()
