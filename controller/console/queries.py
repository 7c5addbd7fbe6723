"""What each console page shows, read from the registry, job store, fleet and rollout store.

Pages are paginated and every query is bounded, so a page costs the same with 10 or 10,000
versions (``benchmarks/api.py`` measures it). The few aggregate reads the registry has no
method for (version counts per model, the change stamps of ``live.py``) are plain SQL through
the registry's public ``Database`` seam (``registry.db.all``), kept here in one place; a failing
one reads as empty, and ``tests/controller/console/test_live.py`` checks every stamp still moves.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

PAGE = 50


def _sql(registry: Any, sql: str, params: tuple = ()) -> list[dict[str, Any]]:
    try:
        return registry.db.all(sql, params)
    except Exception:  # noqa: BLE001 - a table another package creates lazily (rollouts) may not exist yet
        return []


def _one(registry: Any, sql: str, params: tuple = ()) -> dict[str, Any]:
    rows = _sql(registry, sql, params)
    return rows[0] if rows else {}


# ------------------------------------------------------------------ change stamps (live.py)
def stamps(services: Any) -> dict[str, Any]:
    """One cheap value per topic that changes whenever something on that topic's pages changes."""
    reg = services.registry
    fleet_stats = services.fleet.stats if services.fleet is not None else {}
    rx = sum(v for k, v in fleet_stats.items() if k.startswith("rx_") and k != "rx_tm")
    jobs = tuple((j.id, j.state.value, round(j.progress, 1), j.stage) for j in services.runner.list(limit=30)[0])
    return {
        "devices": (rx, tuple(_one(reg, "SELECT count(*) AS n, total(online) AS o, max(last_seen) AS s, "
                                        "total(state_seq) AS q, max(session_ts) AS t FROM devices").values())),
        "telemetry": (fleet_stats.get("rx_tm", 0), _one(reg, "SELECT max(id) AS m FROM telemetry").get("m")),
        "jobs": jobs,
        "deployments": tuple(_one(reg, "SELECT count(*) AS n, max(updated_at) AS u FROM deployment_devices").values())
        + tuple(_one(reg, "SELECT count(*) AS n FROM deployments").values()),
        "rollouts": tuple(_one(reg, "SELECT count(*) AS n, max(id) AS m FROM rollout_events").values())
        + tuple(_one(reg, "SELECT count(*) AS n, max(updated_at) AS u FROM rollouts").values()),
    }


# ------------------------------------------------------------------ overview
def overview(services: Any) -> dict[str, Any]:
    """Counts for the landing page."""
    reg = services.registry
    dev = _one(reg, "SELECT count(*) AS n, total(online) AS online FROM devices")
    jobs = services.runner.store.counts() if hasattr(services.runner, "store") else {}
    rollouts = {r["state"]: r["n"] for r in _sql(reg, "SELECT state, count(*) AS n FROM rollouts GROUP BY state")}
    return {"devices": int(dev.get("n") or 0), "online": int(dev.get("online") or 0),
            "models": int(_one(reg, "SELECT count(*) AS n FROM models").get("n") or 0),
            "versions": int(_one(reg, "SELECT count(*) AS n FROM versions").get("n") or 0),
            "jobs": jobs, "rollouts": rollouts, "fleet": services.fleet is not None,
            "deployments": [_deployment_row(d) for d in reg.deployments.list_deployments(limit=8)]}


# ------------------------------------------------------------------ models and versions
def models_page(services: Any, *, page: int = 1, q: str | None = None) -> dict[str, Any]:
    """One page of models with version counts, tags and latest version."""
    reg = services.registry
    models = reg.list_models(name_contains=q or None, limit=PAGE, offset=(page - 1) * PAGE)
    ids = tuple(m.id for m in models)
    counts: dict[str, dict[str, Any]] = {}
    if ids:
        marks = ",".join("?" for _ in ids)
        for r in _sql(reg, f"SELECT model_id, count(*) AS n, max(created_at) AS latest, group_concat(DISTINCT format) "
                           f"AS formats FROM versions WHERE model_id IN ({marks}) GROUP BY model_id", ids):
            counts[r["model_id"]] = r
    where, params = ("WHERE name LIKE ?", (f"%{q}%",)) if q else ("", ())
    total = int(_one(reg, f"SELECT count(*) AS n FROM models {where}", params).get("n") or 0)
    rows = [{"id": m.id, "name": m.name, "description": m.description, "tags": reg.tags.list_tags(model_id=m.id),
             "versions": int((counts.get(m.id) or {}).get("n") or 0),
             "formats": (counts.get(m.id) or {}).get("formats") or "",
             "latest": (counts.get(m.id) or {}).get("latest")} for m in models]
    return {"items": rows, "page": page, "pages": max(1, -(-total // PAGE)), "total": total, "q": q or ""}


def model_detail(services: Any, name: str, *, page: int = 1) -> dict[str, Any]:
    """A model, its tags and one page of its versions with depth in the lineage tree."""
    from controller.api.services import resolve_model

    reg = services.registry
    model = resolve_model(reg, name)
    total = int(_one(reg, "SELECT count(*) AS n FROM versions WHERE model_id = ?", (model.id,)).get("n") or 0)
    versions = reg.list_versions(model_id=model.id, limit=PAGE, offset=(page - 1) * PAGE)
    tags = reg.tags.list_tags(model_id=model.id)
    by_version: dict[str, list[str]] = {}
    for tag, vid in tags.items():
        by_version.setdefault(vid, []).append(tag)
    depth: dict[str, int] = {}
    rows = []
    for v in versions:
        depth[v.id] = depth.get(v.parent_id, -1) + 1 if v.parent_id in depth else (0 if not v.parent_id else 1)
        rows.append(_version_row(v, by_version.get(v.id, []), depth[v.id]))
    return {"model": model.as_dict(), "tags": tags, "versions": rows, "page": page,
            "pages": max(1, -(-total // PAGE)), "total": total}


def _version_row(v: Any, tags: list[str], depth: int = 0) -> dict[str, Any]:
    m = v.metrics or {}
    return {"id": v.id, "parent_id": v.parent_id, "technique": v.technique, "format": v.format,
            "profile": v.profile or "", "size": v.size, "quality": m.get("quality_score"),
            "latency_ratio": m.get("latency_ratio"), "size_ratio": m.get("size_ratio"), "tags": tags,
            "created_at": v.created_at, "depth": depth}


def version_detail(services: Any, version_id: str) -> dict[str, Any]:
    """A version with its lineage chain, children, config and the deployments that carried it."""
    reg = services.registry
    v = reg.get_version(version_id=version_id)
    model = reg.get_model(model_id=v.model_id)
    tags = reg.tags.list_tags(model_id=v.model_id)
    lineage = reg.lineage(version_id=v.id)
    children = reg.children(version_id=v.id)
    deployments = [_deployment_row(d) for d in reg.deployments.list_deployments(limit=100) if d.version_id == v.id][:10]
    return {"version": _version_row(v, [t for t, x in tags.items() if x == v.id]), "model": model.as_dict(),
            "config": json.dumps(v.config or {}, indent=2), "metrics": v.metrics or {},
            "lineage": [_version_row(x, [t for t, y in tags.items() if y == x.id], i) for i, x in enumerate(lineage)],
            "children": [_version_row(c, [t for t, y in tags.items() if y == c.id]) for c in children],
            "deployments": deployments}


# ------------------------------------------------------------------ jobs
def jobs_page(services: Any, *, page: int = 1) -> dict[str, Any]:
    """Jobs newest first with progress."""
    items, total = services.runner.list(limit=PAGE, offset=(page - 1) * PAGE)
    rows = [{"id": j.id, "kind": j.kind, "state": j.state.value, "progress": j.progress, "stage": j.stage or "",
             "technique": j.spec.get("technique") or ", ".join(s.get("technique", "") for s in j.spec.get("steps", []))
             or j.spec.get("zoo") or j.spec.get("target_format") or "", "version_id": j.spec.get("version_id"),
             "output": (j.result or {}).get("version_id"), "error": j.error or "", "created_at": j.created_at,
             "duration_s": j.duration_s, "actor": j.actor or ""} for j in items]
    return {"items": rows, "page": page, "pages": max(1, -(-total // PAGE)), "total": total}


# ------------------------------------------------------------------ devices
def _age(ts: Any) -> str:
    if ts is None:
        return "never"
    if isinstance(ts, str):
        ts = datetime.fromisoformat(ts)
    secs = (datetime.now(UTC) - (ts if ts.tzinfo else ts.replace(tzinfo=UTC))).total_seconds()
    if secs < 120:
        return f"{secs:.0f} s ago"
    return f"{secs / 60:.0f} min ago" if secs < 7200 else f"{secs / 3600:.0f} h ago"


def device_row(d: Any) -> dict[str, Any]:
    """What the devices table shows for one device."""
    active = d.active or {}
    state = d.state or {}
    return {"id": d.id, "profile": d.profile, "online": d.online, "active_version": active.get("version"),
            "active_sha": (active.get("sha256") or "")[:10], "previous_version": (d.previous or {}).get("version"),
            "update_state": state.get("update_state", ""), "deployment_id": state.get("deployment_id"),
            "agent_version": state.get("agent_version", ""), "last_seen": _age(d.last_seen),
            "desired": d.desired_deployment_id}


def devices_page(services: Any, *, page: int = 1, profile: str | None = None) -> dict[str, Any]:
    """One page of devices with latency and error sparklines from their recent telemetry."""
    from controller.console.sparkline import sparkline

    devices = services.registry.devices.list_devices(profile=profile or None)
    total = len(devices)
    rows = []
    telemetry = getattr(services.fleet, "telemetry", None)
    for d in devices[(page - 1) * PAGE: page * PAGE]:
        row = device_row(d)
        samples = telemetry.metrics(device_id=d.id, limit=30) if telemetry is not None else []
        lat = [s.get("latency_ms_p50") for s in samples]
        errs = [s.get("errors") for s in samples]
        row["latency_spark"] = sparkline(lat, colour="#4269d0")
        row["error_spark"] = sparkline(errs, colour="#ff725c", zero_floor=True)
        row["latency_now"] = next((x for x in reversed(lat) if x is not None), None)
        row["errors_now"] = sum(e or 0 for e in errs)
        rows.append(row)
    return {"items": rows, "page": page, "pages": max(1, -(-total // PAGE)), "total": total,
            "profile": profile or ""}


def device_detail(services: Any, device_id: str) -> dict[str, Any]:
    """One device: state, caps, profile, last benchmark, deployments, telemetry events."""
    reg = services.registry
    d = reg.devices.get_device(device_id=device_id)
    telemetry = getattr(services.fleet, "telemetry", None)
    recent = reg.deployments.list_deployments(device_id=device_id, limit=10)
    return {"device": device_row(d), "caps": d.caps or {}, "state": d.state or {}, "last_bench": d.last_bench or {},
            "deployments": [_deployment_row(x) for x in recent],
            "events": telemetry.events(device_id=device_id, limit=10) if telemetry is not None else []}


# ------------------------------------------------------------------ deployments and rollouts
def _deployment_row(d: Any) -> dict[str, Any]:
    return {"id": d.id, "state": d.state.value, "kind": d.kind, "version_id": d.version_id, "counts": d.counts(),
            "devices": len(d.devices), "created_at": str(d.created_at), "created_by": d.created_by,
            "rollback_of": d.rollback_of}


def deployments_page(services: Any) -> dict[str, Any]:
    """The newest deployments."""
    return {"items": [_deployment_row(d) for d in services.registry.deployments.list_deployments(limit=PAGE)]}


def deployment_detail(services: Any, deployment_id: str) -> dict[str, Any]:
    """A deployment with every device's state, reason and figures."""
    from controller.report.builders import device_row as bench_row

    d = services.registry.deployments.get_deployment(deployment_id=deployment_id)
    rows = [bench_row(x.device_id, x.state.value, x.reason, x.bench, detail=x.detail or "",
                      updated=str(x.updated_at)) for x in d.devices]
    return {"deployment": _deployment_row(d), "devices": rows}


def rollouts_page(services: Any) -> dict[str, Any]:
    """Rollouts newest first (summaries only)."""
    from controller.report import rollout_store

    store = rollout_store(services)
    rows = []
    for r in store.list()[:PAGE]:
        rows.append({"id": r.id, "kind": r.kind, "state": r.state, "phase": r.phase, "wave": r.wave, "waves": r.waves,
                     "devices": len(r.devices), "outcomes": r.outcomes(), "reason": r.reason,
                     "created_at": r.created_at, "target": r.target})
    return {"items": rows}


def rollout_detail(services: Any, rollout_id: str) -> dict[str, Any]:
    """A rollout: devices per wave with outcomes, every event with its reason, the A/B verdict when it is one."""
    from controller.report import rollout_store

    store = rollout_store(services)
    r = store.get(rollout_id)
    waves: list[dict[str, Any]] = []
    for w in range(r.waves):
        devs = r.in_wave(w)
        waves.append({"wave": w, "label": "canary" if w == 0 and r.plan.strategy == "canary" else f"wave {w}",
                      "devices": [d.__dict__ for d in devs],
                      "outcomes": {o: sum(1 for d in devs if d.outcome == o) for o in {d.outcome for d in devs}}})
    events = store.events(rollout_id)
    verdict = None
    if r.kind == "ab":  # the last verdict computed (GET …/verdict or the console's button): a page view never
        # computes one itself, since computing records an event, which would refresh every open page again
        last = next((e for e in reversed(events) if e["kind"] == "ab_verdict"), None)
        verdict = last["figures"] if last else {"reason": "no verdict computed yet"}
    return {"rollout": {"id": r.id, "kind": r.kind, "state": r.state, "phase": r.phase, "wave": r.wave,
                        "waves": r.waves, "reason": r.reason, "created_at": r.created_at, "target": r.target,
                        "outcomes": r.outcomes(), "plan": r.plan.model_dump()},
            "waves": waves, "events": events, "verdict": verdict,
            "active": r.state in ("running", "paused")}
