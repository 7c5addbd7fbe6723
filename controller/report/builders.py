"""Build a :class:`Report` from what the controller stored: a version, a job, a deployment, a rollout.

Only public registry / rollout-store reads: the report never changes anything, so it can be
made at the end of a job, on an API request, or by the demo, from the same data.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

from controller.report import charts
from controller.report.document import Report, ReportError, Section, Table


def _mb(n: Any) -> str:
    if n is None:
        return "–"
    return f"{float(n) / 1e6:.2f} MB" if float(n) >= 1e5 else f"{float(n) / 1e3:.1f} KB"


def _ratio(x: Any) -> str:
    return "–" if x is None else f"×{float(x):.3g}"


def _get(d: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(d, dict):
            return None
        d = d.get(key)
    return d


# ------------------------------------------------------------------------------------------------ versions
def version_sections(registry: Any, version: Any, *, label: str = "") -> tuple[list[Section], dict[str, Any]]:
    """Summary, latency, size, per-layer drift, devices, lineage and the config of one version."""
    lineage = registry.lineage(version_id=version.id)
    root = lineage[0]
    parent = lineage[-2] if len(lineage) > 1 else None
    m = version.metrics or {}
    prefix = f"{label}: " if label else ""
    sections = [_summary_section(version, root, parent, m, prefix)]
    lat = _latency_section(version, m, prefix)
    if lat is not None:
        sections.append(lat)
    size, drift = _file_sections(registry, version, root, prefix)
    sections += [s for s in (size, drift) if s is not None]
    devices = _device_section(registry, version, prefix)
    if devices is not None:
        sections.append(devices)
    sections.append(_lineage_section(lineage, prefix))
    sections.append(_reproduce_section(registry, version, parent, prefix))
    data = {"version": version.as_dict(), "lineage": [v.id for v in lineage]}
    return sections, data


def _summary_section(version: Any, root: Any, parent: Any, m: dict[str, Any], prefix: str) -> Section:
    ref_size = _get(m, "size_bytes", "reference") if isinstance(m.get("size_bytes"), dict) else root.size
    figures = [("technique", version.technique), ("format", version.format),
               ("size", f"{_mb(version.size)} ({_ratio(version.size / ref_size if ref_size else None)})"),
               ("FP32 root size", _mb(root.size))]
    q = m.get("quality_score")
    if q is not None:
        figures.append((f"quality ({m.get('metric', 'score')}) vs reference", f"{q:.4f}"))
    if m.get("latency_ratio") is not None:
        figures.append(("latency p50 vs reference", _ratio(m["latency_ratio"])))
    if m.get("memory_ratio") is not None:
        figures.append(("peak memory vs reference", _ratio(m["memory_ratio"])))
    acc = m.get("accuracy")
    if isinstance(acc, dict):
        figures.append(("task accuracy (ref → cand)", f"{acc.get('reference', 0):.4f} → {acc.get('candidate', 0):.4f}"))
    if _get(m, "check") is not None:  # conversions: cross-runtime check against the ONNX input
        check = m["check"]
        figures.append(("cross-runtime check", fmt_check(check)))
    if m.get("precision"):
        figures.append(("precision", str(m["precision"])))
    notes = []
    if parent is not None:
        notes.append(f"Figures were measured by the job against its input version {parent.id} ({parent.technique}), on "
                     f"{m.get('eval_data', 'the model’s evaluation data')}; the FP32 root is {root.id}.")
    notes += [f"warning: {w}" for w in m.get("warnings", [])] + [f"note: {n}" for n in m.get("notes", [])]
    ratios: dict[str, float | None] = {"size": version.size / ref_size if ref_size else None}
    first = next((v for v in (m.get("latency") or {}).values() if isinstance(v, dict) and "ratio_p50" in v), None)
    if first:
        ratios["latency p50"] = first.get("ratio_p50")
        ratios["latency p95"] = first.get("ratio_p95")
    ratios["peak memory"] = m.get("memory_ratio")
    if q is not None:
        ratios["quality (1 = same as FP32)"] = q
    section = Section(f"{prefix}summary against the reference", figures=figures, notes=notes)
    if sum(v is not None for v in ratios.values()) >= 2:
        section.charts.append(charts.summary_ratios(f"summary-{version.id[:8]}", ratios,
                                                    title=f"{version.technique}: candidate / reference"))
    return section


def fmt_check(check: Any) -> str:
    """A conversion's cross-runtime check in one line."""
    if not isinstance(check, dict):
        return str(check)
    parts = [f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in check.items()
             if not isinstance(v, dict | list)]
    return ", ".join(parts[:4]) or json.dumps(check)[:80]


def _latency_section(version: Any, m: dict[str, Any], prefix: str) -> Section | None:
    grid = {k: v for k, v in (m.get("latency") or {}).items() if isinstance(v, dict) and "candidate" in v}
    if not grid:
        return None
    series: dict[str, dict[str, float]] = {}
    rows = []
    for point, v in grid.items():
        series[f"reference {point}"] = v["reference"]
        series[f"{version.technique} {point}"] = v["candidate"]
        rows.append([point, v["reference"]["p50_ms"], v["reference"]["p95_ms"], v["candidate"]["p50_ms"],
                     v["candidate"]["p95_ms"], v.get("ratio_p50"), v.get("ratio_p95"), v["candidate"].get("runs")])
    return Section(
        f"{prefix}latency on the controller host (ONNX Runtime, interleaved runs)",
        charts=[charts.latency_distribution(f"latency-{version.id[:8]}", series,
                                            title="host latency distribution (t = threads, b = batch)")],
        tables=[Table(["point", "ref p50 ms", "ref p95 ms", "cand p50 ms", "cand p95 ms", "p50 ratio", "p95 ratio",
                       "runs"], rows)],
        notes=["Reference and candidate run in alternating rounds so machine load hits both alike; the ratios are "
               "what to trust on a shared host."])


def _file_sections(registry: Any, version: Any, root: Any, prefix: str) -> tuple[Section | None, Section | None]:
    if version.format != "onnx" or root.format != "onnx":
        return None, None
    from controller.report import onnx_stats

    cand_path = registry.blob_path(sha256=version.sha256)
    root_path = registry.blob_path(sha256=root.sha256)
    try:
        breakdown = {f"FP32 root ({root.technique})": onnx_stats.size_breakdown(root_path)}
        if version.id != root.id:
            breakdown[f"this version ({version.technique})"] = onnx_stats.size_breakdown(cand_path)
    except Exception as exc:  # noqa: BLE001 - a report must not fail on an unreadable blob: say it instead
        return Section(f"{prefix}size breakdown", notes=[f"could not read the model files: {exc}"]), None
    rows = [[cat] + [parts.get(cat, 0) / 1e6 for parts in breakdown.values()]
            for cat in sorted({c for p in breakdown.values() for c in p})]
    size = Section(f"{prefix}size breakdown", charts=[charts.size_breakdown(f"size-{version.id[:8]}", breakdown)],
                   tables=[Table(["tensor type"] + [f"{k} MB" for k in breakdown], rows)])
    if version.id == root.id:
        return size, None
    drift = onnx_stats.layer_drift(root_path, cand_path)
    layers = drift["layers"]
    section = Section(f"{prefix}per-layer weight drift vs FP32 ({drift['compared']} layers compared, "
                      f"{drift['unmatched']} without a same-shape counterpart)")
    if layers:
        worst = sorted(layers, key=lambda r: r["sqnr_db"])[:10]
        section.charts.append(charts.layer_drift(f"drift-{version.id[:8]}", layers))
        section.tables.append(Table(["layer", "shape", "SQNR dB", "relative L2 error"],
                                    [[r["name"], "×".join(map(str, r["shape"])), r["sqnr_db"], r["rel_error"]]
                                     for r in worst], caption="the 10 most changed layers"))
    else:
        section.notes.append("No weight of this version maps onto an FP32 weight of the same shape (pruned, "
                             "decomposed, packed INT4 or a different graph): drift is judged by the quality above.")
    return size, section


def _device_section(registry: Any, version: Any, prefix: str) -> Section | None:
    rows = []
    for dep in registry.deployments.list_deployments(limit=200):
        if dep.version_id != version.id:
            continue
        for d in dep.devices:
            rows.append(device_row(d.device_id, d.state.value, d.reason, d.bench, deployment_id=dep.id))
    if not rows:
        return None
    return Section(f"{prefix}on the devices (agents' own benchmarks)",
                   charts=[charts.device_figures(f"devices-{version.id[:8]}", rows)],
                   tables=[device_table(rows)])


def device_row(device_id: str, outcome: str, reason: str | None, bench: Any, **extra: Any) -> dict[str, Any]:
    """One device's decision with its figures, from its stored BenchReport (None when it never benchmarked)."""
    cand = _get(bench, "candidate_metrics") or {}
    base = _get(bench, "baseline_metrics") or {}
    return {"device_id": device_id, "outcome": outcome, "reason": reason or "",
            "decision": _get(bench, "decision"), "p50_ms": cand.get("latency_p50_ms"),
            "p95_ms": cand.get("latency_p95_ms"), "baseline_p95_ms": base.get("latency_p95_ms"),
            "mem_mb": cand.get("peak_rss_delta_mb"), "baseline_mem_mb": base.get("peak_rss_delta_mb"),
            "quality": cand.get("quality"), "runtime": cand.get("runtime"),
            "reasons": "; ".join(_get(bench, "reasons") or []), **extra}


def device_table(rows: list[dict[str, Any]], *, with_wave: bool = False) -> Table:
    """Per-device decisions with reasons and figures."""
    cols = (["wave"] if with_wave else []) + ["device", "outcome", "reason", "p50 ms", "p95 ms", "baseline p95 ms",
                                              "mem MB", "baseline mem MB", "quality", "runtime", "agent's reasons"]
    return Table(cols, [([r.get("wave")] if with_wave else []) + [
        r["device_id"], r["outcome"], r["reason"], r["p50_ms"], r["p95_ms"], r["baseline_p95_ms"], r["mem_mb"],
        r["baseline_mem_mb"], r["quality"], r["runtime"], r["reasons"]] for r in rows])


def _lineage_section(lineage: list[Any], prefix: str) -> Section:
    rows = [[v.id, v.technique, v.format, v.profile or "", v.size / 1e6, (v.metrics or {}).get("quality_score"),
             (v.metrics or {}).get("latency_ratio"), v.created_at] for v in lineage]
    return Section(f"{prefix}lineage (root first)",
                   tables=[Table(["version", "technique", "format", "profile", "MB", "quality", "latency ratio",
                                  "created"], rows)])


def _reproduce_section(registry: Any, version: Any, parent: Any, prefix: str) -> Section:
    config = version.config or {}
    if parent is None:
        return Section(f"{prefix}how it was made", code=json.dumps(config, indent=2),
                       code_caption="root version: imported or uploaded with this configuration")
    if version.technique.startswith("convert-"):
        body = {"version_id": parent.id, "profile": config.get("profile"), "target_format": config.get("target"),
                "config": config.get("options") or {}}
        cmd = f"curl -X POST $EDGEFLEET_URL/api/v1/conversions -H 'Authorization: Bearer $KEY' -d '{json.dumps(body)}'"
    else:
        params = {k: v for k, v in config.items() if k not in ("technique", "version")}
        body = {"version_id": parent.id, "technique": version.technique, "config": params}
        cli_params = " ".join(f"-p {k}={json.dumps(v) if not isinstance(v, str) else v}" for k, v in params.items())
        cmd = (f"edgefleet models compress <family> {parent.id} --technique {version.technique} {cli_params}\n"
               f"# or POST /api/v1/compression/<family> with\n{json.dumps(body, indent=2)}")
    return Section(f"{prefix}reproduce", code=json.dumps(config, indent=2) + "\n\n" + cmd,
                   code_caption="the exact technique config stored with the version (versioned JSON), then the "
                                "request that makes it again from its parent")


def version_report(registry: Any, version_id: str) -> Report:
    """The report of one model version (compression or conversion output, or a root)."""
    version = registry.get_version(version_id=version_id)
    model = registry.get_model(model_id=version.model_id)
    sections, data = version_sections(registry, version)
    q = (version.metrics or {}).get("quality_score")
    return Report(kind="version", ref=version.id, title=f"{model.name} · {version.technique} ({version.format})",
                  subtitle=f"model {model.name}", sections=sections, data=data,
                  verdict=f"quality {q:.4f} vs reference" if q is not None else "")


# ------------------------------------------------------------------------------------------------ jobs
def job_report(registry: Any, job: Any) -> Report:
    """The report of one job: its request and timings, then each output version's sections."""
    result = job.result or {}
    steps = result.get("steps") or ([result] if result.get("version_id") else [])
    job_fig = [("kind", job.kind), ("state", str(job.state.value if hasattr(job.state, "value") else job.state)),
               ("queued", f"{job.queue_s:.1f} s" if job.queue_s is not None else "–"),
               ("duration", f"{job.duration_s:.1f} s" if job.duration_s is not None else "–"),
               ("by", job.actor or "–"), ("created", job.created_at)]
    head = Section("job", figures=job_fig, code=json.dumps(job.spec, indent=2),
                   code_caption="the request as the job stored it (resubmit it to reproduce the job)")
    if job.error:
        head.notes.append(f"error: {job.error}")
    sections = [head]
    data: dict[str, Any] = {"job": {"id": job.id, "kind": job.kind, "spec": job.spec, "result": result}}
    outputs = []
    for i, step in enumerate(steps):
        vid = step.get("version_id")
        if not vid:
            continue
        try:
            version = registry.get_version(version_id=vid)
        except Exception:  # noqa: BLE001 - a deleted output version: the report says so
            head.notes.append(f"output version {vid} no longer exists in the registry")
            continue
        label = f"step {i + 1} ({version.technique})" if len(steps) > 1 else ""
        secs, vdata = version_sections(registry, version, label=label)
        sections += secs
        outputs.append(vdata)
    data["outputs"] = outputs
    last = (job.result or {}).get("metrics") or {}
    q = last.get("quality_score")
    state = str(job.state.value if hasattr(job.state, "value") else job.state)
    verdict = f"{state}" + (f" · quality {q:.4f}" if q is not None else "") + (
        f" · size {_ratio(last.get('size_ratio'))}" if last.get("size_ratio") else "") + (
        f" · latency {_ratio(last.get('latency_ratio'))}" if last.get("latency_ratio") else "")
    technique = job.spec.get("technique") or ", ".join(s.get("technique", "?") for s in job.spec.get("steps", []))
    return Report(kind="job", ref=job.id, title=f"{job.kind} job · {technique or job.kind}",
                  subtitle=f"input {job.spec.get('version_id', '–')}", sections=sections, data=data,
                  verdict=verdict, verdict_ok=state == "succeeded")


# ------------------------------------------------------------------------------------------------ deployments
def deployment_report(registry: Any, deployment_id: str, *, title: str = "") -> Report:
    """Per-device decisions of one deployment with the agents' figures."""
    dep = registry.deployments.get_deployment(deployment_id=deployment_id)
    rows = [device_row(d.device_id, d.state.value, d.reason, d.bench, detail=d.detail) for d in dep.devices]
    counts = dep.counts()
    try:
        version = registry.get_version(version_id=dep.version_id)
        vlabel = f"{version.technique} ({version.format})"
    except Exception:  # noqa: BLE001 - the version may have been deleted since
        vlabel = dep.version_id
    figures = [("state", dep.state.value), ("kind", dep.kind), ("version", vlabel), ("devices", str(len(rows))),
               ("by", dep.created_by), ("created", str(dep.created_at))]
    figures += [(k, str(v)) for k, v in sorted(counts.items())]
    section = Section("devices: decisions with reasons and figures", figures=figures,
                      tables=[device_table(rows)])
    if rows:
        section.charts.append(charts.device_figures(f"devices-{dep.id[:8]}", rows))
    ok = dep.state.value == "succeeded"
    verdict = f"{dep.state.value}: " + ", ".join(f"{v} {k}" for k, v in sorted(counts.items()))
    return Report(kind="deployment", ref=dep.id, title=title or f"deployment of {vlabel}",
                  subtitle=f"version {dep.version_id}", sections=[section],
                  data={"deployment": {"id": dep.id, "state": dep.state.value, "devices": rows}},
                  verdict=verdict, verdict_ok=ok if dep.state.value != "in_progress" else None)


# ------------------------------------------------------------------------------------------------ rollouts
def _ts(value: Any) -> float:
    if isinstance(value, int | float):
        return float(value)
    return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()


def rollout_report(registry: Any, store: Any, rollout_id: str) -> Report:
    """Timeline of canary and waves, per-device decisions with reasons and figures, and the end: promote or abort."""
    r = store.get(rollout_id)
    events = store.events(rollout_id)
    t0 = _ts(r.created_at)
    end = max([_ts(e["ts"]) for e in events] + [t0 + 1.0])
    rows, lanes = [], []
    for d in r.devices:
        bench, reason, state = None, "", d.outcome
        if d.deployment_id:
            try:
                dd = next(x for x in registry.deployments.get_deployment(deployment_id=d.deployment_id).devices
                          if x.device_id == d.device_id)
                bench, reason = dd.bench, dd.reason
            except Exception:  # noqa: BLE001 - a deployment row gone: keep the rollout's own outcome
                pass
        rows.append(device_row(d.device_id, state, reason, bench, wave=d.wave, variant=d.variant))
        start = (d.started_at - t0) if d.started_at else None
        if start is not None:
            finish = (_ts(bench["ts"]) - t0) if bench and bench.get("ts") else (end - t0)
            lanes.append({"label": f"w{d.wave} {d.device_id}", "start_s": start, "end_s": max(finish, start),
                          "outcome": state})
    ev_rows = [[e["ts"], e["kind"], e["reason"], json.dumps(e["figures"], default=str)[:300]] for e in events]
    marks = [{"t_s": _ts(e["ts"]) - t0, "kind": e["kind"]} for e in events]
    plan = r.plan.model_dump()
    head = Section("rollout", figures=[("state", r.state), ("kind", r.kind), ("strategy", str(plan.get("strategy"))),
                                       ("waves", str(r.waves)), ("devices", str(len(r.devices))),
                                       ("outcomes", ", ".join(f"{v} {k}" for k, v in sorted(r.outcomes().items()))),
                                       ("created", r.created_at)],
                   notes=[f"reason: {r.reason}"] if r.reason else [], code=json.dumps(
                       {"target": r.target, "plan": plan}, indent=2, default=str),
                   code_caption="target and plan (the REST body that starts the same rollout)")
    timeline = Section("timeline: canary, waves and decisions",
                       tables=[Table(["time (UTC)", "event", "reason", "figures"], ev_rows)])
    if lanes or marks:
        timeline.charts.append(charts.timeline(f"timeline-{r.id[:8]}", lanes, marks))
    devices = Section("devices: decisions with reasons and figures", tables=[device_table(rows, with_wave=True)])
    if rows:
        devices.charts.append(charts.device_figures(f"devices-{r.id[:8]}", rows))
    promoted = r.state == "succeeded"
    verdict = {"succeeded": "promoted to every wave", "rolled_back": "aborted and rolled back"}.get(r.state, r.state)
    if r.reason and not promoted:
        verdict += f": {r.reason}"
    return Report(kind="rollout", ref=r.id, title=f"rollout {r.id[:8]} · {r.kind}",
                  subtitle=f"target {json.dumps(r.target)[:120]}", sections=[head, timeline, devices],
                  data={"rollout": r.as_dict(), "events": events}, verdict=verdict,
                  verdict_ok=promoted if r.state not in ("running", "paused") else None)


def write_report(report: Report, folder: Path) -> Path:
    """Write the report bundle (HTML, JSON, charts) and return the HTML path."""
    return report.write(folder)


__all__ = ["ReportError", "deployment_report", "job_report", "rollout_report", "version_report", "write_report"]
