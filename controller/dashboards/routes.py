"""``POST /api/v1/fleet/homeassistant`` (publish discovery now) and ``GET /api/v1/fleet/grafana-dashboard``."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Query

from controller.api.deps import Reader, ServicesDep, Writer
from controller.api.envelope import ERROR_RESPONSES, Envelope, ok

router = APIRouter(prefix="/fleet", tags=["dashboards"], responses=ERROR_RESPONSES)


@router.post("/homeassistant", response_model=Envelope[dict[str, Any]], summary="Publish Home Assistant discovery")
def publish_homeassistant(services: ServicesDep, who: Writer,
                          prefix: Annotated[str, Query(pattern=r"^[A-Za-z0-9_/-]{1,64}$")] = "homeassistant") -> dict:
    """Retained MQTT discovery configs for every known device (503 without a broker); audited."""
    fleet = services.require_fleet()
    n = fleet.publish_ha_discovery(prefix=prefix)
    devices = len(services.registry.devices.list_devices())
    services.registry.audit(action="homeassistant.publish", target=prefix, actor=who.name,
                            details={"configs": n, "devices": devices})
    return ok({"configs": n, "devices": devices, "prefix": prefix},
              f"published {n} discovery configs for {devices} device(s) under {prefix}/")


@router.get("/grafana-dashboard", response_model=Envelope[dict[str, Any]], summary="The Grafana dashboard JSON")
def grafana_dashboard(_: Reader) -> dict:
    """The dashboard shipped for ``/metrics`` (import it in Grafana, pick the Prometheus data source)."""
    from controller.dashboards import GRAFANA_DASHBOARD

    return ok(json.loads(GRAFANA_DASHBOARD.read_text()))
