"""Health and the audit log."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from controller.api.deps import Reader, ServicesDep
from controller.api.envelope import ERROR_RESPONSES, Envelope, ok

router = APIRouter(tags=["system"], responses=ERROR_RESPONSES)


@router.get("/health", response_model=Envelope[dict[str, Any]], summary="Liveness + job counts")
def health(services: ServicesDep) -> dict:
    """Always open (no key): load balancers and ``edgefleet controller`` start-up checks call it."""
    store = getattr(services.runner, "store", None)
    return ok({"jobs": store.counts() if store is not None else {}, "fleet": services.fleet is not None,
               "max_compression_jobs": services.settings.max_compression_jobs,
               "compression_enabled": services.settings.model_compression_enabled})


@router.get("/audit", response_model=Envelope[list[dict[str, Any]]], summary="Audit log, newest first")
def audit(services: ServicesDep, _: Reader,
          target: Annotated[str | None, Query(max_length=128)] = None,
          action: Annotated[str | None, Query(max_length=64)] = None,
          limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> dict:
    """Who did what to which target, when (UTC)."""
    return ok([e.as_dict() for e in services.registry.audit_log(target=target, action=action, limit=limit)])
