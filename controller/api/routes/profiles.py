"""Device profiles (read-only: they are data files under ``profiles/``)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path

from controller.api.deps import Reader
from controller.api.envelope import ERROR_RESPONSES, Envelope, ok
from controller.api.errors import ApiError

router = APIRouter(prefix="/profiles", tags=["profiles"], responses=ERROR_RESPONSES)


@router.get("", response_model=Envelope[list[dict[str, Any]]], summary="Every device profile")
def list_profiles(_: Reader) -> dict:
    """All valid profiles, sorted by id."""
    from common.profiles import list_profiles as _list

    return ok([p.model_dump(mode="json") for p in _list()])


@router.get("/{profile_id}", response_model=Envelope[dict[str, Any]], summary="One device profile")
def get_profile(profile_id: Annotated[str, Path(min_length=1, max_length=64)], _: Reader) -> dict:
    """404 naming the known profiles when the id is unknown."""
    from common.profiles import list_profiles as _list

    profiles = {p.id: p for p in _list()}
    if profile_id not in profiles:
        raise ApiError(404, f"unknown profile {profile_id!r}; known profiles: {', '.join(sorted(profiles))}")
    return ok(profiles[profile_id].model_dump(mode="json"))
