"""Deployments: roll a model version out to devices through the fleet service, follow it, roll it back."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query

from controller.api.deps import Reader, ServicesDep, Writer
from controller.api.envelope import ERROR_RESPONSES, Envelope, ok
from controller.api.schemas import DeploymentRequest, DeploymentRollbackRequest

router = APIRouter(prefix="/deployments", tags=["deployments"], responses=ERROR_RESPONSES)
DeploymentId = Annotated[str, Path(min_length=1, max_length=64)]
Obj = dict[str, Any]


def deployment_view(record: Any) -> Obj:
    """A deployment with per-device state and counts (the manifest's signature is left out)."""
    out = record.as_dict()
    out.pop("manifest", None)
    out["counts"] = record.counts()
    out["done"] = record.done
    return out


@router.get("", response_model=Envelope[list[Obj]], summary="List deployments")
def list_deployments(services: ServicesDep, _: Reader,
                     state: Annotated[str | None, Query(max_length=32)] = None,
                     device_id: Annotated[str | None, Query(max_length=64)] = None,
                     limit: Annotated[int, Query(ge=1, le=500)] = 50) -> dict:
    """Newest first."""
    return ok([deployment_view(d) for d in services.registry.deployments.list_deployments(
        state=state, device_id=device_id, limit=limit)])


@router.post("", status_code=202, response_model=Envelope[Obj], summary="Deploy a version to devices")
def create_deployment(body: DeploymentRequest, services: ServicesDep, who: Writer) -> dict:
    """Builds/signs an artifact per device profile and publishes the devices' desired state (503 without a broker)."""
    fleet = services.require_fleet()
    record = fleet.deploy(version_id=body.version_id, device_ids=body.device_ids, thresholds=body.thresholds,
                          actor=who.name)
    return ok(deployment_view(record), f"deployment {record.id} started on {len(record.devices)} device(s)")


@router.get("/{deployment_id}", response_model=Envelope[Obj], summary="One deployment, per-device state")
def get_deployment(deployment_id: DeploymentId, services: ServicesDep, _: Reader) -> dict:
    """Aggregate state plus every device's state, reason and benchmark."""
    return ok(deployment_view(services.registry.deployments.get_deployment(deployment_id=deployment_id)))


@router.post("/{deployment_id}/rollback", status_code=202, response_model=Envelope[Obj],
             summary="Roll a deployment back")
def rollback_deployment(deployment_id: DeploymentId, body: DeploymentRollbackRequest, services: ServicesDep,
                        who: Writer) -> dict:
    """Send every device of the deployment back to what it ran before (409 if already rolled back)."""
    fleet = services.require_fleet()
    services.registry.deployments.get_deployment(deployment_id=deployment_id)
    record = fleet.rollback(deployment_id=deployment_id, reason=body.reason, actor=who.name)
    return ok(deployment_view(record) if record is not None else {"id": deployment_id},
              f"deployment {deployment_id} rolled back")
