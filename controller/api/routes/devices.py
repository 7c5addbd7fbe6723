"""Devices: what the controller knows from each agent's retained state, caps and reports."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query

from controller.api.deps import Reader, ServicesDep, Writer
from controller.api.envelope import ERROR_RESPONSES, Envelope, ok
from controller.api.schemas import DeviceRegisterRequest
from controller.api.services import validate_profile

router = APIRouter(prefix="/devices", tags=["devices"], responses=ERROR_RESPONSES)
Obj = dict[str, Any]


def device_view(record: Any) -> Obj:
    """A device as served: online state, profile, active/previous model, last benchmark."""
    return record.as_dict()


@router.get("", response_model=Envelope[list[Obj]], summary="List devices")
def list_devices(services: ServicesDep, _: Reader,
                 profile: Annotated[str | None, Query(max_length=64)] = None,
                 online: bool | None = None) -> dict:
    """Sorted by id; filter by profile and presence."""
    return ok([device_view(d) for d in services.registry.devices.list_devices(profile=profile, online=online)])


@router.post("", status_code=201, response_model=Envelope[Obj], summary="Register a device before it connects")
def register_device(body: DeviceRegisterRequest, services: ServicesDep, who: Writer) -> dict:
    """Idempotent; the profile must be a known one."""
    profile = validate_profile(body.profile) if body.profile else ""
    record = services.registry.devices.register_device(device_id=body.id, profile=profile or "", actor=who.name)
    return ok(device_view(record), f"device {record.id} registered")


@router.get("/{device_id}", response_model=Envelope[Obj], summary="One device")
def get_device(device_id: Annotated[str, Path(min_length=1, max_length=64)], services: ServicesDep,
               _: Reader) -> dict:
    """Online state, profile, active and previous model, last benchmark, recent deployments."""
    out = device_view(services.registry.devices.get_device(device_id=device_id))
    out["deployments"] = [{"id": d.id, "state": d.state.value, "version_id": d.version_id}
                          for d in services.registry.deployments.list_deployments(device_id=device_id, limit=10)]
    return ok(out)
