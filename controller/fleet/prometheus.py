"""Prometheus text exposition of the fleet: per-device telemetry gauges, presence, counters, rollouts.

No client library needed: the format is a few lines of text, and rendering from the
registry on each scrape keeps one source of truth (no second set of in-memory gauges).
"""

from __future__ import annotations

from typing import Any

from controller.registry import Registry

_GAUGES = (
    ("cpu_percent", "edgefleet_device_cpu_percent", "CPU utilisation reported by the agent"),
    ("mem_percent", "edgefleet_device_memory_percent", "memory utilisation reported by the agent"),
    ("rss_mb", "edgefleet_device_agent_rss_mb", "agent resident memory (MB)"),
    ("temperature_c", "edgefleet_device_temperature_celsius", "highest temperature sensor"),
    ("latency_ms_p50", "edgefleet_device_inference_latency_p50_ms", "active model p50 latency (ms)"),
    ("inferences", "edgefleet_device_inferences", "inferences in the last telemetry interval"),
    ("errors", "edgefleet_device_inference_errors", "inference errors in the last telemetry interval"),
)


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def render_metrics(registry: Registry, fleet: Any = None, engine: Any = None) -> str:
    """The whole exposition as text (``text/plain; version=0.0.4``).

    Example:
        >>> "edgefleet_device_online" in render_metrics(reg)  # doctest: +SKIP
        True
    """
    lines: list[str] = []
    devices = registry.devices.list_devices()
    profiles = {d.id: d.profile for d in devices}
    lines += ["# HELP edgefleet_device_online 1 while the device's session is up",
              "# TYPE edgefleet_device_online gauge"]
    lines += [f'edgefleet_device_online{{device="{_label(d.id)}",profile="{_label(d.profile)}"}} {int(d.online)}'
              for d in devices]
    latest = fleet.telemetry.latest() if fleet is not None and hasattr(fleet, "telemetry") else {}
    for key, name, help_text in _GAUGES:
        lines += [f"# HELP {name} {help_text}", f"# TYPE {name} gauge"]
        for dev, sample in sorted(latest.items()):
            if sample.get(key) is not None:
                lines.append(f'{name}{{device="{_label(dev)}",profile="{_label(profiles.get(dev, ""))}"}} '
                             f"{float(sample[key]):g}")
    if fleet is not None and hasattr(fleet, "stats"):
        lines += ["# HELP edgefleet_fleet_messages_total controller MQTT counters by kind",
                  "# TYPE edgefleet_fleet_messages_total counter"]
        lines += [f'edgefleet_fleet_messages_total{{kind="{_label(k)}"}} {v}' for k, v in sorted(fleet.stats.items())]
    if engine is not None:
        counts: dict[str, int] = {}
        for r in engine.store.list():
            counts[r.state] = counts.get(r.state, 0) + 1
        lines += ["# HELP edgefleet_rollouts rollouts by state", "# TYPE edgefleet_rollouts gauge"]
        lines += [f'edgefleet_rollouts{{state="{_label(s)}"}} {n}' for s, n in sorted(counts.items())]
    return "\n".join(lines) + "\n"
