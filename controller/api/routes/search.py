"""Automatic optimisation: start a search (a job per version × profile, one group), follow it, read the front."""

from __future__ import annotations

import uuid
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path
from pydantic import BaseModel, ConfigDict, Field

from controller.api.deps import CompressionEnabled, Reader, ServicesDep, Writer
from controller.api.envelope import ERROR_RESPONSES, ok
from controller.api.errors import ApiError
from controller.api.services import submit_job

router = APIRouter(prefix="/compression/search", tags=["optimize"], responses=ERROR_RESPONSES)
SearchId = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")]
_ACTIVE = ("queued", "running")


class SearchRequest(BaseModel):
    """Search the best build of each version for each profile (see docs/optimize.md)."""

    model_config = ConfigDict(extra="forbid")
    version_ids: list[str] = Field(min_length=1, max_length=16, description="input model versions")
    profiles: list[str] = Field(min_length=1, max_length=8, description="device profile ids")
    quality_floor: float = Field(0.99, ge=0, le=1.5, description="minimum quality (FP32 = 1.0)")
    metric: str | None = Field(None, max_length=32, description="cosine, top1, accuracy (default: the model's)")
    strategy: Literal["nsga2", "tpe", "random", "rl"] = "nsga2"
    trials: int | None = Field(None, ge=1, le=500, description="trial budget per search (default 20)")
    time_budget_s: float | None = Field(None, gt=0, le=7 * 86400, description="wall-clock budget per search")
    objectives: list[Literal["quality", "latency", "size", "memory"]] = ["quality", "latency", "size", "memory"]
    dimensions: list[Literal["arch", "precision"]] = ["arch", "precision"]
    archs: list[str] | None = Field(None, max_length=32)
    precisions: list[str] | None = Field(None, max_length=8)
    finetune_epochs: int = Field(3, ge=0, le=50)
    latency_scale: float = Field(1.0, gt=0, le=1000, description="host → device factor before the [slo] check")
    seed: int = 0


def _group_jobs(services: Any, search_id: str) -> list[Any]:
    jobs, _ = services.runner.list(kind="optimize", limit=500)
    found = [j for j in jobs if j.spec.get("group") == search_id]
    if not found:
        raise ApiError(404, f"no search with id {search_id!r}", code="not_found")
    return sorted(found, key=lambda j: j.created_at)


def _summary(search_id: str, jobs: list[Any]) -> dict[str, Any]:
    latest = {(j.spec["version_id"], j.spec["profile"]): j for j in sorted(jobs, key=lambda j: j.created_at)}
    jobs = list(latest.values())  # a resumed pair shows its newest job
    states = [j.state.value for j in jobs]
    state = "running" if any(s in _ACTIVE for s in states) else (
        "succeeded" if all(s == "succeeded" for s in states) else "failed" if "failed" in states else states[0])
    items = []
    for j in jobs:
        result = j.result or {}
        items.append({"job_id": j.id, "version_id": j.spec["version_id"], "profile": j.spec["profile"],
                      "state": j.state.value, "progress": j.progress, "stage": j.stage, "error": j.error,
                      "message": result.get("message"), "recommended": result.get("recommended"),
                      "front": result.get("front"), "failed": result.get("failed"), "closest": result.get("closest"),
                      "meta": result.get("meta")})
    return {"search_id": search_id, "state": state, "progress": sum(j.progress for j in jobs) / len(jobs),
            "searches": items}


@router.post("", status_code=202, dependencies=[CompressionEnabled], summary="Start an optimisation search")
def start_search(body: SearchRequest, services: ServicesDep, who: Writer) -> dict:
    """One job per version × profile, grouped under one search id; poll ``GET /compression/search/{id}``."""
    from controller.optimize.job import _validate

    search_id = uuid.uuid4().hex[:12]
    specs = []
    for version_id in body.version_ids:
        for profile in body.profiles:
            spec = {**body.model_dump(exclude={"version_ids", "profiles"}), "version_id": version_id,
                    "profile": profile, "group": search_id}
            _validate(spec, services)  # all or nothing: a bad pair refuses the whole request (422)
            specs.append(spec)
    jobs = [submit_job(services, "optimize", spec, who.name) for spec in specs]
    return ok(_summary(search_id, jobs), f"search {search_id} queued ({len(jobs)} job(s))")


@router.get("/{search_id}", summary="A search: progress, and per version × profile the front and the recommendation")
async def get_search(search_id: SearchId, services: ServicesDep, _: Reader) -> dict:
    """State of every job of the search; finished ones carry the front (registry versions) and the recommendation."""
    return ok(_summary(search_id, _group_jobs(services, search_id)))


@router.post("/{search_id}/resume", status_code=202, dependencies=[CompressionEnabled],
             summary="Resume the interrupted / failed searches of a group")
def resume_search(search_id: SearchId, services: ServicesDep, who: Writer) -> dict:
    """Resubmit the group's jobs that did not succeed; their stored trials are kept, only the rest is run."""
    jobs = _group_jobs(services, search_id)
    if any(j.state.value in _ACTIVE for j in jobs):
        raise ApiError(409, f"search {search_id} is still running", code="conflict")
    again = [submit_job(services, "optimize", dict(j.spec), who.name) for j in jobs if j.state.value != "succeeded"]
    return ok(_summary(search_id, [*jobs, *again]), f"resumed {len(again)} search job(s)")
