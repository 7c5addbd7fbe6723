"""Home Assistant MQTT discovery: one retained config per device sensor, so a dashboard needs no setup.

Home Assistant reads ``<prefix>/sensor/<unique id>/config`` and then follows the topics the
config names: our agents' QoS0 telemetry (``dev/<id>/tm``, JSON) for the value and their
retained state (``dev/<id>/state``) for availability — nothing new is published per sample.
The HA broker login needs read access to ``fl/v1/+/dev/+/tm`` and ``…/state``.
"""

from __future__ import annotations

import json
import re

from common import topics

SENSORS: tuple[tuple[str, str, str | None, str | None], ...] = (
    ("cpu_percent", "CPU", "%", None),
    ("mem_percent", "Memory", "%", None),
    ("rss_mb", "Agent RSS", "MB", "data_size"),
    ("temperature_c", "Temperature", "°C", "temperature"),
    ("latency_ms_p50", "Inference latency p50", "ms", "duration"),
    ("inferences", "Inferences", None, None),
    ("errors", "Inference errors", None, None),
)


def _uid(device_id: str, key: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", f"edgefleet_{device_id}_{key}")


def discovery_messages(
    fleet: str, device_id: str, *, profile: str = "", prefix: str = "homeassistant"
) -> list[tuple[str, bytes]]:
    """(topic, retained payload) for every sensor of one device.

    Example:
        >>> topic, payload = discovery_messages("demo", "pi-1")[0]
        >>> topic
        'homeassistant/sensor/edgefleet_pi_1_cpu_percent/config'
    """
    device = {"identifiers": [_uid(device_id, "device")], "name": device_id, "manufacturer": "edgefleet",
              "model": profile or "edge device"}
    out = []
    for key, name, unit, device_class in SENSORS:
        uid = _uid(device_id, key)
        config: dict[str, object] = {
            "name": name,
            "unique_id": uid,
            "object_id": uid,
            "state_topic": topics.telemetry(fleet, device_id),
            "value_template": "{{ value_json." + key + " }}",
            "state_class": "measurement",
            "availability_topic": topics.state(fleet, device_id),
            "availability_template": "{{ 'online' if value_json.online else 'offline' }}",
            "device": device,
        }
        if unit:
            config["unit_of_measurement"] = unit
        if device_class:
            config["device_class"] = device_class
        out.append((f"{prefix}/sensor/{uid}/config", json.dumps(config, ensure_ascii=False).encode()))
    return out
