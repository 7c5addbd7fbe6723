"""Fleet service: the controller's MQTT client (presence, desired state, chunk server, reports).

Kept import-light: paho is imported only when :class:`FleetService` is used, so
``edgefleet --help`` and the REST layer's startup stay fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from controller.fleet.errors import FleetError

if TYPE_CHECKING:
    from controller.fleet.service import DeploymentSummary, FleetService

__all__ = ["DeploymentSummary", "FleetError", "FleetService"]


def __getattr__(name: str) -> Any:
    if name in ("DeploymentSummary", "FleetService"):
        from controller.fleet import service

        return getattr(service, name)
    raise AttributeError(name)
