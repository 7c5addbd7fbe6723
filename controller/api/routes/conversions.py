"""Conversions: a model version to a target format for a device profile, run as a job."""

from __future__ import annotations

from fastapi import APIRouter

from controller.api.deps import CompressionEnabled, ServicesDep, Writer
from controller.api.envelope import ERROR_RESPONSES, Envelope, ok
from controller.api.schemas import ConversionRequest
from controller.api.services import submit_job
from controller.jobs import Job

router = APIRouter(prefix="/conversions", tags=["conversions"], responses=ERROR_RESPONSES)


@router.post("", status_code=202, dependencies=[CompressionEnabled],
             response_model=Envelope[Job], summary="Convert a version (a job)")
def convert(body: ConversionRequest, services: ServicesDep, who: Writer) -> dict:
    """Queue a conversion; follow it at ``GET /compression/jobs/{id}``."""
    job = submit_job(services, "conversion", body.model_dump(), who.name)
    return ok(job, f"conversion job {job.id} queued")
