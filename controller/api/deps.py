"""``Annotated`` dependency aliases the routes declare: services, the caller, and the two auth levels.

The dependencies are ``async`` because they only look things up in memory: a sync
dependency costs a thread-pool hop per request, which under load is most of a request's
latency.

Every mutating route declares ``Writer``; every read declares ``Reader``. With keys
configured, a write needs a read-write bearer key (401 without a valid one, 403 with a
read-only one); reads need a read-only or read-write key too, unless ``EDGEFLEET_OPEN_READS`` is
on (the audit log, model downloads, device lists and ``/metrics`` name devices and leak models). With no key
configured at all the controller is in local development mode, which
:func:`controller.api.server.check_bind` only allows on a loopback interface.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from controller.api.auth import LOCAL, Principal
from controller.api.errors import ApiError
from controller.api.services import Services

_bearer = HTTPBearer(auto_error=False, description="API key: `Authorization: Bearer efk_...`")


async def get_services(request: Request) -> Services:
    """The app's :class:`Services` (built in the lifespan)."""
    return request.app.state.services


ServicesDep = Annotated[Services, Depends(get_services)]


def _principal(services: Services, creds: HTTPAuthorizationCredentials | None) -> Principal | None:
    if creds is None:
        return None
    principal = services.keys.lookup(creds.credentials)
    if principal is None:
        raise ApiError(401, "invalid API key", code="unauthorized")
    return principal


async def require_reader(services: ServicesDep,
                   creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]) -> Principal:
    """Any valid key may read; without one only when EDGEFLEET_OPEN_READS is on (or no key is configured)."""
    principal = _principal(services, creds)
    if principal is not None:
        return principal
    if len(services.keys) and not services.settings.open_reads:
        raise ApiError(401, "reads need an API key on this controller: send Authorization: Bearer <key> "
                            "(a read-only key will do), or set EDGEFLEET_OPEN_READS=true to open them")
    return LOCAL if not len(services.keys) else Principal("anonymous", LOCAL.role.READ_ONLY)


async def require_writer(services: ServicesDep,
                   creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]) -> Principal:
    """A read-write key (or local development mode with no keys configured)."""
    principal = _principal(services, creds)
    if principal is None:
        if not len(services.keys):
            return LOCAL
        raise ApiError(401, "this endpoint changes state and needs an API key: send Authorization: Bearer <key>")
    if not principal.can_write:
        raise ApiError(403, f"API key {principal.name!r} is read-only; use a read-write key for this call")
    return principal


Reader = Annotated[Principal, Depends(require_reader)]
Writer = Annotated[Principal, Depends(require_writer)]


async def require_compression_enabled(services: ServicesDep) -> None:
    """503 for new compression/conversion jobs when MODEL_COMPRESSION_ENABLED is false."""
    if not services.settings.model_compression_enabled:
        raise ApiError(503, "model compression is disabled on this controller (MODEL_COMPRESSION_ENABLED=false)",
                       code="compression_disabled")


CompressionEnabled = Depends(require_compression_enabled)
