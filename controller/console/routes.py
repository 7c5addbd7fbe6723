"""The web console: page shells, htmx fragments, the SSE stream and the write actions.

Page shells (``/console/...``) hold no data, so a browser can load them without a header;
their content is fetched by htmx from ``/console/fragments/...`` with the API key the user
entered once (kept in ``sessionStorage``, sent as ``Authorization: Bearer``), through the same
``Reader``/``Writer`` checks as the REST API. Actions (``/console/actions/...``) take form
fields, call the same service functions the REST routes call, and answer with a short HTML
message plus an ``HX-Trigger`` that refreshes the affected fragments.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, StreamingResponse

from controller.api.deps import Reader, ServicesDep, Writer
from controller.api.errors import ApiError
from controller.console import queries

router = APIRouter(include_in_schema=False)
shell_router = APIRouter(include_in_schema=False)  # included last: its /console/{section} would shadow the rest
TEMPLATES = Path(__file__).parent / "templates"
Page = Annotated[int, Query(ge=1, le=100_000)]
_templates: Any = None

PAGES = {  # path → (title, fragment url, live topics, seconds between polls (0: events only))
    "": ("Overview", "/console/fragments/overview", "jobs devices deployments rollouts", 0),
    "models": ("Models", "/console/fragments/models", "", 0),
    "jobs": ("Jobs", "/console/fragments/jobs", "jobs", 0),
    # telemetry arrives every second from every device: the list follows state changes live and redraws its
    # sparklines every 10 s, so an open devices page costs the same with 10 or 1,000 devices
    "devices": ("Devices", "/console/fragments/devices", "devices", 10),
    "deployments": ("Deployments", "/console/fragments/deployments", "deployments", 0),
    "rollouts": ("Rollouts", "/console/fragments/rollouts", "rollouts deployments", 0),
}
DETAIL = {  # kind → (title, fragment url, live topics, actions fragment loaded once: forms keep what the user typed)
    "models": ("Model", "/console/fragments/models/{ref}", "jobs", ""),
    "versions": ("Version", "/console/fragments/versions/{ref}", "jobs deployments",
                 "/console/fragments/versions/{ref}/actions"),
    "devices": ("Device", "/console/fragments/devices/{ref}", "devices deployments", ""),
    "deployments": ("Deployment", "/console/fragments/deployments/{ref}", "deployments", ""),
    "rollouts": ("Rollout", "/console/fragments/rollouts/{ref}", "rollouts deployments", ""),
}


def templates() -> Any:
    """The console's Jinja2 environment (autoescaped)."""
    global _templates
    if _templates is None:
        from fastapi.templating import Jinja2Templates

        from controller.report.document import fmt

        _templates = Jinja2Templates(directory=str(TEMPLATES))
        _templates.env.filters["fmt"] = fmt
        _templates.env.filters["short"] = lambda s: (s or "")[:8]
        _templates.env.filters["mb"] = lambda n: "–" if n is None else f"{n / 1e6:.2f} MB"
        _templates.env.filters["tojson_pretty"] = lambda v: json.dumps(v, indent=2, default=str)
    return _templates


def _render(request: Request, name: str, **ctx: Any) -> HTMLResponse:
    return templates().TemplateResponse(request, name, ctx)


# ------------------------------------------------------------------ shells
@shell_router.get("/", response_model=None)
def root() -> RedirectResponse:
    """The controller's root opens the console."""
    return RedirectResponse("/console/")


@shell_router.get("/console/", response_class=HTMLResponse)
@shell_router.get("/console/{section}", response_class=HTMLResponse)
def page(request: Request, section: str = "") -> HTMLResponse:
    """A page shell: navigation, the key box, and a container htmx fills from the section's fragment."""
    if section not in PAGES:
        raise ApiError(404, f"no console page {section!r}; pages: {', '.join(p or '/' for p in PAGES)}")
    title, url, live, poll = PAGES[section]
    return _render(request, "page.html", title=title, fragment=url, live=live, section=section, poll=poll)


@shell_router.get("/console/{section}/{ref}", response_class=HTMLResponse)
def detail_page(request: Request, section: str, ref: str) -> HTMLResponse:
    """The shell of one model, version, device, deployment or rollout."""
    if section not in DETAIL or not ref.replace("-", "").replace("_", "").replace(".", "").isalnum():
        raise ApiError(404, f"no console page {section}/{ref}")
    title, url, live, actions = DETAIL[section]
    return _render(request, "page.html", title=f"{title} {ref[:36]}", fragment=url.format(ref=ref), live=live,
                   section=section, actions=actions.format(ref=ref), poll=10 if section == "devices" else 0)


# ------------------------------------------------------------------ fragments
@router.get("/console/fragments/overview", response_class=HTMLResponse)
def frag_overview(request: Request, services: ServicesDep, who: Reader) -> HTMLResponse:
    """Counts and the newest deployments."""
    return _render(request, "fragments/overview.html", o=queries.overview(services), who=who)


@router.get("/console/fragments/models", response_class=HTMLResponse)
def frag_models(request: Request, services: ServicesDep, _: Reader, page: Page = 1,
                q: Annotated[str | None, Query(max_length=128)] = None) -> HTMLResponse:
    """One page of models."""
    return _render(request, "fragments/models.html", d=queries.models_page(services, page=page, q=q))


@router.get("/console/fragments/models/{name}", response_class=HTMLResponse)
def frag_model(request: Request, name: str, services: ServicesDep, _: Reader, page: Page = 1) -> HTMLResponse:
    """A model's versions as a lineage tree."""
    return _render(request, "fragments/model.html", d=queries.model_detail(services, name, page=page))


@router.get("/console/fragments/versions/{version_id}", response_class=HTMLResponse)
def frag_version(request: Request, version_id: str, services: ServicesDep, _: Reader) -> HTMLResponse:
    """Lineage graph, figures, config and the deployments that carried it."""
    return _render(request, "fragments/version.html", d=queries.version_detail(services, version_id))


@router.get("/console/fragments/versions/{version_id}/actions", response_class=HTMLResponse)
def frag_version_actions(request: Request, version_id: str, services: ServicesDep, who: Reader) -> HTMLResponse:
    """The compress and deploy forms (read-write keys only); not live-refreshed, so input is never lost."""
    from controller.compression import techniques

    if not who.can_write:
        return HTMLResponse('<p class="muted">Actions need a read-write key.</p>')
    version = services.registry.get_version(version_id=version_id)
    devices = [{"id": d.id, "profile": d.profile, "online": d.online}
               for d in services.registry.devices.list_devices()][:500]
    return _render(request, "fragments/version_actions.html", v={"id": version.id}, devices=devices,
                   techniques=sorted(techniques()), fleet=services.fleet is not None)


@router.get("/console/fragments/jobs", response_class=HTMLResponse)
def frag_jobs(request: Request, services: ServicesDep, _: Reader, page: Page = 1) -> HTMLResponse:
    """Jobs with live progress bars."""
    return _render(request, "fragments/jobs.html", d=queries.jobs_page(services, page=page))


@router.get("/console/fragments/devices", response_class=HTMLResponse)
def frag_devices(request: Request, services: ServicesDep, _: Reader, page: Page = 1,
                 profile: Annotated[str | None, Query(max_length=64)] = None) -> HTMLResponse:
    """Devices with live state and sparklines."""
    return _render(request, "fragments/devices.html", d=queries.devices_page(services, page=page, profile=profile))


@router.get("/console/fragments/devices/{device_id}", response_class=HTMLResponse)
def frag_device(request: Request, device_id: str, services: ServicesDep, _: Reader) -> HTMLResponse:
    """One device with its telemetry chart (uPlot, data from the metrics endpoint)."""
    return _render(request, "fragments/device.html", d=queries.device_detail(services, device_id),
                   fleet=services.fleet is not None)


@router.get("/console/fragments/deployments", response_class=HTMLResponse)
def frag_deployments(request: Request, services: ServicesDep, _: Reader) -> HTMLResponse:
    """Newest deployments."""
    return _render(request, "fragments/deployments.html", d=queries.deployments_page(services))


@router.get("/console/fragments/deployments/{deployment_id}", response_class=HTMLResponse)
def frag_deployment(request: Request, deployment_id: str, services: ServicesDep, who: Reader) -> HTMLResponse:
    """Per-device states, reasons and figures; roll back."""
    return _render(request, "fragments/deployment.html", d=queries.deployment_detail(services, deployment_id),
                   can_write=who.can_write)


@router.get("/console/fragments/rollouts", response_class=HTMLResponse)
def frag_rollouts(request: Request, services: ServicesDep, _: Reader) -> HTMLResponse:
    """Rollouts with state and outcomes."""
    return _render(request, "fragments/rollouts.html", d=queries.rollouts_page(services))


@router.get("/console/fragments/rollouts/{rollout_id}", response_class=HTMLResponse)
def frag_rollout(request: Request, rollout_id: str, services: ServicesDep, who: Reader) -> HTMLResponse:
    """Waves, events with reasons, A/B verdict; pause / resume / abort / promote."""
    return _render(request, "fragments/rollout.html", d=queries.rollout_detail(services, rollout_id),
                   can_write=who.can_write)


# ------------------------------------------------------------------ live updates
@router.post("/console/stream-ticket")
def stream_ticket(services: ServicesDep, _: Reader) -> dict[str, Any]:
    """A one-use ticket for the event stream (EventSource cannot send an Authorization header)."""
    from controller.console.live import feed_for

    return {"status": "ok", "data": {"ticket": feed_for(services).issue_ticket()}, "message": ""}


@router.get("/console/stream")
async def stream(services: ServicesDep, ticket: Annotated[str, Query(max_length=64)]) -> StreamingResponse:
    """Server-sent events: ``event: <topic>`` whenever that topic's data changed."""
    from controller.console.live import feed_for

    feed = feed_for(services)
    if not feed.redeem(ticket):
        raise ApiError(401, "stream ticket unknown or expired: POST /console/stream-ticket with your key first")

    async def events() -> Any:
        yield "retry: 2000\n\n"
        async for topic in feed.subscribe():
            yield f"event: {topic}\ndata: {topic}\n\n"

    return StreamingResponse(events(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


# ------------------------------------------------------------------ actions (read-write key)
def _done(message: str, *topics: str) -> HTMLResponse:
    from html import escape

    resp = HTMLResponse(f'<div class="flash ok" role="status">{escape(message)}</div>')
    resp.headers["HX-Trigger"] = json.dumps({f"ef:{t}": True for t in topics} | {"ef:flash": message})
    return resp


@router.post("/console/actions/compress", response_class=HTMLResponse)
def act_compress(services: ServicesDep, who: Writer, version_id: Annotated[str, Form(max_length=64)],
                 technique: Annotated[str, Form(max_length=64)],
                 config: Annotated[str, Form(max_length=4000)] = "{}") -> HTMLResponse:
    """Queue a compression job (the family is derived from the technique)."""
    from controller.api.services import submit_job
    from controller.compression import techniques as installed

    try:
        params = json.loads(config or "{}")
    except json.JSONDecodeError as exc:
        raise ApiError(422, f"config must be a JSON object: {exc}") from exc
    if not isinstance(params, dict):
        raise ApiError(422, "config must be a JSON object, e.g. {\"calibration_samples\": 64}")
    cls = installed().get(technique)
    if cls is None:
        raise ApiError(422, f"unknown technique {technique!r}; installed: {', '.join(sorted(installed()))}")
    job = submit_job(services, "compression", {"family": cls.family.value, "version_id": version_id,
                                                "technique": technique, "config": params}, who.name)
    return _done(f"{technique} job {job.id} queued", "jobs")


@router.post("/console/actions/deploy", response_class=HTMLResponse)
def act_deploy(services: ServicesDep, who: Writer, version_id: Annotated[str, Form(max_length=64)],
               device_ids: Annotated[list[str], Form()], strategy: Annotated[str, Form(max_length=32)] = "all_at_once",
               canary_count: Annotated[int, Form(ge=0, le=10_000)] = 1,
               waves: Annotated[int, Form(ge=1, le=20)] = 1) -> HTMLResponse:
    """Start a rollout of a version to the chosen devices (canary + waves or all at once)."""
    from controller.api.routes.rollouts import engine_for
    from controller.rollout import RolloutPlan

    plan = RolloutPlan(strategy=strategy, canary_count=canary_count if strategy == "canary" else None, waves=waves)
    r = engine_for(services).create(version_id=version_id, device_ids=device_ids, plan=plan, actor=who.name)
    resp = _done(f"rollout {r.id} started on {len(device_ids)} device(s)", "rollouts", "deployments")
    resp.headers["HX-Redirect"] = f"/console/rollouts/{r.id}"
    return resp


@router.post("/console/actions/rollouts/{rollout_id}/verdict", response_class=HTMLResponse)
def act_verdict(rollout_id: str, services: ServicesDep, _: Reader) -> HTMLResponse:
    """Compute and record the A/B verdict now (what ``GET /rollouts/{id}/verdict`` does; a read)."""
    from controller.api.routes.rollouts import engine_for
    from controller.rollout import ab

    out = ab.verdict(engine_for(services), rollout_id)
    return _done(f"winner {out['winner'] or 'none'}: {out['reason']}", "rollouts")


@router.post("/console/actions/rollouts/{rollout_id}/{action}", response_class=HTMLResponse)
def act_rollout(rollout_id: str, action: str, services: ServicesDep, who: Writer,
                reason: Annotated[str, Form(max_length=500)] = "") -> HTMLResponse:
    """``pause``, ``resume``, ``abort`` (cancel and roll every started device back) or ``promote`` (A/B winner)."""
    from controller.api.routes.rollouts import engine_for
    from controller.rollout import ab

    engine = engine_for(services)
    if action == "pause":
        engine.pause(rollout_id, f"paused by {who.name}")
    elif action == "resume":
        engine.resume(rollout_id, f"resumed by {who.name}")
    elif action == "abort":
        engine.cancel(rollout_id, rollback=True, reason=f"{reason or 'aborted from the console'} ({who.name})")
    elif action == "promote":
        r = ab.promote_winner(engine, rollout_id)
        return _done(f"winner promoted by rollout {r.id}", "rollouts")
    else:
        raise ApiError(404, f"unknown rollout action {action!r}: pause, resume, abort or promote")
    return _done(f"rollout {rollout_id[:8]}: {action} done", "rollouts", "deployments")


@router.post("/console/actions/deployments/{deployment_id}/rollback", response_class=HTMLResponse)
def act_rollback(deployment_id: str, services: ServicesDep, who: Writer,
                 reason: Annotated[str, Form(max_length=500)] = "") -> HTMLResponse:
    """Send every device of a deployment back to what it ran before."""
    fleet = services.require_fleet()
    services.registry.deployments.get_deployment(deployment_id=deployment_id)
    fleet.rollback(deployment_id=deployment_id, reason=reason or "rolled back from the console", actor=who.name)
    return _done(f"deployment {deployment_id[:8]} rolled back", "deployments", "devices")
