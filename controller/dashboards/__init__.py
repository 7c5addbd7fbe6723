"""What users' own dashboards read: the Grafana dashboard shipped for ``/metrics`` and Home Assistant discovery.

``/metrics`` itself is produced by :mod:`controller.fleet.prometheus` (prometheus_client);
``grafana/edgefleet-fleet.json`` is an importable dashboard over those names (a test checks
every metric it queries is served); :class:`HomeAssistantAnnouncer` publishes retained MQTT
discovery configs for every device, and for each new one as it appears, when
``EDGEFLEET_HA_DISCOVERY=true`` (or once, on demand, with ``edgefleet homeassistant publish``).
"""

from __future__ import annotations

from pathlib import Path

from controller.dashboards.homeassistant import HomeAssistantAnnouncer

GRAFANA_DASHBOARD = Path(__file__).parent / "grafana" / "edgefleet-fleet.json"

__all__ = ["GRAFANA_DASHBOARD", "HomeAssistantAnnouncer"]
