"""``…/report`` endpoints: HTML (default), JSON, or one chart as SVG/PNG, for any job, version, deployment or rollout.

A finished job's stored report is served as written at the end of the job; everything else
(versions, deployments, rollouts still moving) is rendered on request from the registry, so a
report is never stale. Reads need what any read needs (``Reader``).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from fastapi.responses import HTMLResponse, JSONResponse, Response

from controller.api.deps import Reader, ServicesDep
from controller.api.envelope import ERROR_RESPONSES, ok
from controller.report import Report, ReportError, report_dir, resolve

router = APIRouter(tags=["reports"], responses=ERROR_RESPONSES)
Ref = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")]
Format = Annotated[str, Query(pattern="^(html|json)$", description="html (default) or json")]
_HTML = {200: {"content": {"text/html": {}}, "description": "the self-contained HTML report"}}


def _respond(report: Report, format: str) -> Response:  # noqa: A002
    if format == "json":
        from fastapi.encoders import jsonable_encoder

        return JSONResponse(jsonable_encoder(ok(report.as_dict())))
    return HTMLResponse(report.html())


def _stored_job_html(services: Any, job_id: str) -> str | None:
    path = report_dir(services.settings.compression_workspace, "jobs", job_id) / "report.html"
    return path.read_text() if path.is_file() else None


@router.get("/reports/{ref}", responses=_HTML, response_model=None, summary="Report of any job, version, "
            "deployment or rollout")
def any_report(ref: Ref, services: ServicesDep, _: Reader, format: Format = "html") -> Response:  # noqa: A002
    """Resolves the id (job, then version, deployment, rollout); 404 naming what was tried."""
    if format == "html" and (html := _stored_job_html(services, ref)) is not None:
        return HTMLResponse(html)
    return _respond(resolve(services, ref), format)


@router.get("/reports/{ref}/charts/{name}.{ext}", response_model=None, summary="One chart of a report",
            responses={200: {"content": {"image/svg+xml": {}, "image/png": {}}}})
def report_chart(ref: Ref, name: Annotated[str, Path(max_length=80, pattern=r"^[A-Za-z0-9_.-]+$")],
                 ext: Annotated[str, Path(pattern="^(svg|png)$")], services: ServicesDep, _: Reader) -> Response:
    """The chart as SVG (for docs) or PNG (for slides)."""
    chart = resolve(services, ref).chart(name)
    if ext == "svg":
        return Response(chart.svg, media_type="image/svg+xml")
    return Response(chart.png, media_type="image/png")


@router.get("/compression/jobs/{ref}/report", responses=_HTML, response_model=None, summary="A job's report")
def job_report(ref: Ref, services: ServicesDep, _: Reader, format: Format = "html") -> Response:  # noqa: A002
    """The report the job wrote when it finished, or one rendered now (queued/running jobs, older jobs)."""
    from controller.report import job_report as build

    if format == "html" and (html := _stored_job_html(services, ref)) is not None:
        return HTMLResponse(html)
    return _respond(build(services.registry, services.runner.get(ref)), format)


@router.get("/compression/models/{model}/versions/{ref}/report", responses=_HTML, response_model=None,
            summary="A version's report")
def version_report(model: Annotated[str, Path(max_length=128)], ref: Ref, services: ServicesDep, _: Reader,
                   format: Format = "html") -> Response:  # noqa: A002
    """Summary against the reference, latency, size breakdown, per-layer drift, devices, lineage, reproduce."""
    from controller.api.services import resolve_model, resolve_version
    from controller.report import version_report as build

    version = resolve_version(services.registry, resolve_model(services.registry, model), ref)
    return _respond(build(services.registry, version.id), format)


@router.get("/deployments/{ref}/report", responses=_HTML, response_model=None, summary="A deployment's report")
def deployment_report(ref: Ref, services: ServicesDep, _: Reader, format: Format = "html") -> Response:  # noqa: A002
    """Per-device decisions with reasons and the agents' figures."""
    from controller.report import deployment_report as build

    return _respond(build(services.registry, ref), format)


@router.get("/rollouts/{ref}/report", responses=_HTML, response_model=None, summary="A rollout's report")
def rollout_report(ref: Ref, services: ServicesDep, _: Reader, format: Format = "html") -> Response:  # noqa: A002
    """Timeline of canary and waves, per-device decisions with reasons and figures, promote or abort."""
    from controller.report import rollout_report as build
    from controller.report import rollout_store

    return _respond(build(services.registry, rollout_store(services), ref), format)


__all__ = ["ReportError", "router"]
