"""Fleet-service errors, mapped once by the REST layer (``http_status``)."""

from __future__ import annotations

from common.errors import UnavailableError


class FleetError(UnavailableError, RuntimeError):
    """The fleet service cannot do what was asked: no broker connection, the broker refused us, ...

    Registry problems (unknown device, wrong profile) stay registry errors (404/409/422);
    this one means "the MQTT side is unavailable", hence 503.
    """

    code = "fleet_unavailable"
    http_status = 503
