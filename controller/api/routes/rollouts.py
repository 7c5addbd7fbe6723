"""Rollouts, A/B deployments, device metrics and the Prometheus endpoint (issue 6).

Thin routes over :mod:`controller.rollout` and :mod:`controller.fleet.telemetry`; domain
errors carry ``http_status`` and are mapped once by ``controller.api.errors``. The rollout
engine is created on first use beside the app's fleet service (``services.extra["rollouts"]``)
and resumes any rollout persisted in the registry.

Registration (in ``controller/api/app.py``): ``rollouts`` in the router loop, plus
``app.include_router(rollouts.prometheus_router)`` for ``GET /metrics`` at the root.
"""

from __future__ import annotations

import threading
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel, ConfigDict, Field

from controller.api.deps import Reader, ServicesDep, Writer
from controller.api.envelope import ERROR_RESPONSES, Envelope, ok
from controller.fleet.prometheus import render_metrics
from controller.rollout import RolloutEngine, RolloutPlan, ab

router = APIRouter(prefix="/rollouts", tags=["rollouts"], responses=ERROR_RESPONSES)
metrics_router = APIRouter(prefix="/devices", tags=["devices"], responses=ERROR_RESPONSES)
# errors are JSON envelopes even though the route's own type is text/plain (a read needs a key: 401)
prometheus_router = APIRouter(tags=["metrics"], responses={
    code: {**spec, "content": {"application/json": {}}} for code, spec in ERROR_RESPONSES.items()})
Obj = dict[str, Any]
RolloutId = Annotated[str, Path(min_length=1, max_length=64)]
_engine_lock = threading.Lock()


class RolloutRequest(BaseModel):
    """Start a rollout of a version (artifact per profile) or an artifact, to devices or a profile."""

    model_config = ConfigDict(extra="forbid")
    version_id: str | None = None
    artifact_id: str | None = None
    device_ids: list[str] | None = Field(None, max_length=10_000)
    profile: str | None = None
    per_profile: dict[str, str] | None = Field(None, max_length=64)
    """Profile id → version or artifact id for that profile's devices (e.g. TFLite for android-arm64)."""
    plan: RolloutPlan = RolloutPlan()


class ABRequest(BaseModel):
    """Two versions or artifacts split across devices; ``ratio`` = share of devices on B."""

    model_config = ConfigDict(extra="forbid")
    a: str
    b: str
    device_ids: list[str] = Field(min_length=2, max_length=10_000)
    ratio: float = Field(0.5, gt=0, lt=1)
    plan: RolloutPlan = RolloutPlan(strategy="all_at_once")


class CancelRequest(BaseModel):
    """Cancel; ``rollback`` also sends every started device back."""

    model_config = ConfigDict(extra="forbid")
    rollback: bool = False
    reason: str = Field("cancelled by operator", max_length=500)


def engine_for(services: Any) -> RolloutEngine:
    """The app's rollout engine (started on first use, resuming persisted rollouts)."""
    with _engine_lock:
        engine = services.extra.get("rollouts")
        if engine is None:
            engine = RolloutEngine(services.require_fleet()).start()
            services.extra["rollouts"] = engine
        return engine


@router.post("", status_code=201, response_model=Envelope[Obj], summary="Start a rollout")
def create_rollout(body: RolloutRequest, services: ServicesDep, who: Writer) -> dict:
    """Canary then waves (or all at once) with abort criteria, timeouts, retries and the fleet gate."""
    r = engine_for(services).create(version_id=body.version_id, artifact_id=body.artifact_id,
                                    device_ids=body.device_ids, profile=body.profile, plan=body.plan,
                                    per_profile=body.per_profile, actor=who.name)
    return ok(r.as_dict(), f"rollout {r.id} started: {r.waves} wave(s)")


@router.get("", response_model=Envelope[list[Obj]], summary="List rollouts")
def list_rollouts(services: ServicesDep, _: Reader,
                  state: Annotated[str | None, Query(max_length=32)] = None) -> dict:
    """Newest first; filter by state (running, paused, succeeded, rolled_back, ...)."""
    rollouts = engine_for(services).store.list(states=(state,) if state else None)
    return ok([r.as_dict() | {"devices": len(r.devices)} for r in rollouts])


@router.get("/{rollout_id}", response_model=Envelope[Obj], summary="One rollout with its decisions")
def get_rollout(rollout_id: RolloutId, services: ServicesDep, _: Reader) -> dict:
    """Devices with wave, attempts and outcome; every decision with figures and reason."""
    engine = engine_for(services)
    return ok(engine.get(rollout_id).as_dict() | {"events": engine.events(rollout_id)})


@router.post("/{rollout_id}/pause", response_model=Envelope[Obj], summary="Pause (no new wave starts)")
def pause_rollout(rollout_id: RolloutId, services: ServicesDep, who: Writer) -> dict:
    """Devices already updating finish; 409 unless running."""
    return ok(engine_for(services).pause(rollout_id, f"paused by {who.name}").as_dict())


@router.post("/{rollout_id}/resume", response_model=Envelope[Obj], summary="Resume a paused rollout")
def resume_rollout(rollout_id: RolloutId, services: ServicesDep, who: Writer) -> dict:
    """409 unless paused."""
    return ok(engine_for(services).resume(rollout_id, f"resumed by {who.name}").as_dict())


@router.post("/{rollout_id}/cancel", response_model=Envelope[Obj], summary="Cancel (optionally rolling back)")
def cancel_rollout(rollout_id: RolloutId, body: CancelRequest, services: ServicesDep, who: Writer) -> dict:
    """With ``rollback: true`` every started device is sent back to what it ran before."""
    r = engine_for(services).cancel(rollout_id, rollback=body.rollback, reason=f"{body.reason} ({who.name})")
    return ok(r.as_dict())


@router.post("/ab", status_code=201, response_model=Envelope[Obj], summary="Start an A/B deployment")
def create_ab(body: ABRequest, services: ServicesDep, who: Writer) -> dict:
    """Variants A and B (version or artifact ids) split across the devices by ratio."""
    r = ab.start_ab(engine_for(services), a=body.a, b=body.b, device_ids=body.device_ids, ratio=body.ratio,
                    plan=body.plan, actor=who.name)
    return ok(r.as_dict(), f"A/B deployment {r.id} started")


@router.get("/{rollout_id}/verdict", response_model=Envelope[Obj], summary="A/B verdict")
def ab_verdict(rollout_id: RolloutId, services: ServicesDep, _: Reader) -> dict:
    """Per-variant aggregates from agent bench reports, sample sizes, difference B − A, winner."""
    return ok(ab.verdict(engine_for(services), rollout_id))


@router.post("/{rollout_id}/promote", status_code=201, response_model=Envelope[Obj], summary="Promote the winner")
def ab_promote(rollout_id: RolloutId, services: ServicesDep, _: Writer) -> dict:
    """Roll the winning variant out to the whole A/B group; 409 when the verdict is inconclusive."""
    r = ab.promote_winner(engine_for(services), rollout_id)
    return ok(r.as_dict(), f"winner promoted by rollout {r.id}")


@metrics_router.get("/{device_id}/metrics", response_model=Envelope[Obj], summary="A device's telemetry")
def device_metrics(device_id: Annotated[str, Path(min_length=1, max_length=64)], services: ServicesDep, _: Reader,
                   since: Annotated[str | None, Query(max_length=40)] = None,
                   resolution: Annotated[str, Query(pattern="^(raw|rollup)$")] = "raw",
                   limit: Annotated[int, Query(ge=1, le=10_000)] = 1000) -> dict:
    """Raw samples (recent) or per-minute rollups (older, after downsampling), oldest first, plus anomaly events."""
    fleet = services.require_fleet()
    services.registry.devices.get_device(device_id=device_id)  # 404 for an unknown device
    samples = fleet.telemetry.metrics(device_id=device_id, since=since, resolution=resolution, limit=limit)
    return ok({"device_id": device_id, "resolution": resolution, "samples": samples,
               "events": fleet.telemetry.events(device_id=device_id, limit=20)})


@prometheus_router.get("/metrics", response_class=PlainTextResponse, summary="Prometheus metrics")
def prometheus(services: ServicesDep, _: Reader) -> PlainTextResponse:
    """Text exposition format: per-device telemetry gauges, presence, fleet counters, rollouts by state."""
    engine = services.extra.get("rollouts")
    return PlainTextResponse(render_metrics(services.registry, services.fleet, engine,
                                            getattr(services.runner, "store", None)),
                             media_type="text/plain; version=0.0.4")
