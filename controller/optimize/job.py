"""The ``optimize`` job kind: one (model version × profile) search run by the controller's job runner.

A REST search request for several versions × profiles becomes one job per pair, all carrying the
same ``group`` (the search id). Each job keeps its study and files under
``<COMPRESSION_WORKSPACE>/optimize/<group>/<study>``, so a job interrupted by a controller
restart resumes its stored trials when it is submitted again (``POST .../search/{id}/resume``).
Progress reads ``trial i/N`` with the best point so far; the job's result is the front.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from controller.jobs.context import JobContext, JobKind, JobServices, JobSpec
from controller.jobs.models import InvalidJobSpecError
from controller.optimize.errors import OptimizeError

KIND = "optimize"
_DEFAULTS = {"quality_floor": 0.99, "metric": None, "strategy": "nsga2", "trials": None, "time_budget_s": None,
             "objectives": ["quality", "latency", "size", "memory"], "dimensions": ["arch", "precision"],
             "archs": None, "precisions": None, "finetune_epochs": 3, "latency_scale": 1.0, "seed": 0}


def _validate(spec: JobSpec, services: JobServices) -> JobSpec:
    """Normalise a search job's spec; refuses (422) what would only fail minutes later."""
    from common.profiles import ProfileError, load_profile
    from controller.optimize.metrics import get_metric
    from controller.optimize.problem import Budget, Constraints, check_objectives, check_strategy
    from controller.registry import NotFoundError, validate_name

    body = {**_DEFAULTS, **{k: v for k, v in spec.items() if v is not None}}
    try:
        version = services.registry.get_version(version_id=body["version_id"])
    except (NotFoundError, KeyError) as exc:
        raise InvalidJobSpecError(f"input version {spec.get('version_id')!r} does not exist") from exc
    try:
        profile = load_profile(body["profile"])
        check_strategy(body["strategy"])
        check_objectives(body["objectives"])
        if body["metric"]:
            get_metric(body["metric"])
        Constraints(quality_floor=body["quality_floor"], latency_scale=body["latency_scale"])
        trials = body["trials"] if body["trials"] or body["time_budget_s"] else 20
        Budget(trials=trials, time_s=body["time_budget_s"])
    except (ProfileError, OptimizeError) as exc:
        raise InvalidJobSpecError(getattr(exc, "message", str(exc))) from exc
    if "onnx" not in profile.formats:
        raise InvalidJobSpecError(f"profile {profile.id!r} runs {', '.join(profile.formats)} only; the optimiser "
                                  "measures ONNX Runtime candidates")
    group = body.get("group") or "single"
    validate_name(group, "search id")
    study = body.get("study") or f"{version.id[:8]}-{profile.id}-{body['strategy']}"
    return {**body, "version_id": version.id, "profile": profile.id, "trials": trials, "group": group, "study": study}


def search_dir(services: JobServices, spec: JobSpec) -> Path:
    """Where a search job keeps its study and files (stable across restarts)."""
    return Path(services.settings.compression_workspace) / "optimize" / spec["group"] / spec["study"]


def _run(ctx: JobContext) -> dict[str, Any]:
    from controller.optimize.lineage import record_front
    from controller.optimize.measure import BuildOptions
    from controller.optimize.problem import Budget, Constraints
    from controller.optimize.report import write_report
    from controller.optimize.search import optimize
    from controller.version_data import VersionData

    spec = ctx.job.spec
    registry = ctx.services.registry
    version = registry.get_version(version_id=spec["version_id"])
    out = search_dir(ctx.services, spec)
    out.mkdir(parents=True, exist_ok=True)
    src = out / "input.onnx"
    if not src.exists():
        src.write_bytes(registry.blob_path(sha256=version.sha256).read_bytes())
    data = VersionData(registry)
    model, calibration = data.compression_input(version, src)
    dimensions = list(spec["dimensions"])
    root = data.root(version)
    if root.id != version.id and "arch" in dimensions:
        # the torch module is the root's: pruning it would ignore what this derived version changed
        dimensions.remove("arch")
        if not dimensions:
            raise InvalidJobSpecError(f"version {version.id} is derived: sub-networks can only be searched from "
                                      f"its root version {root.id}; search 'precision' here")
        ctx.progress(1, f"architecture stage left out: {version.id} is derived from {root.id}")
    started = time.monotonic()

    def progress(done: int, total: int | None, message: str) -> None:
        if total:
            pct = 95.0 * min(done, total) / total
        else:
            pct = 95.0 * min(1.0, (time.monotonic() - started) / spec["time_budget_s"])
        ctx.progress(pct, f"trial {done}/{total or '?'}: {message}")

    ctx.progress(1, f"search {spec['study']}: building the space")
    try:
        result = optimize(model, spec["profile"], spec["objectives"],
                          Constraints(quality_floor=spec["quality_floor"], latency_scale=spec["latency_scale"]),
                          spec["strategy"], Budget(trials=spec["trials"], time_s=spec["time_budget_s"]), out=out,
                          metric=spec["metric"], calibration=calibration, study_name=spec["study"],
                          seed=spec["seed"], dimensions=dimensions, archs=spec["archs"],
                          precisions=spec["precisions"],
                          options=BuildOptions(finetune_epochs=spec["finetune_epochs"],
                                               measure_memory="memory" in spec["objectives"]),
                          progress=progress)
    except OptimizeError as exc:
        raise InvalidJobSpecError(exc.message) from exc
    ctx.progress(96, "recording the front in the registry")
    record_front(result, out, registry, fp32=src, root_version_id=version.id, actor=ctx.job.actor or "optimize")
    result.write(out)
    write_report(result, out)
    keep = ("trial", "label", "version_id", "config", "quality", "latency_ratio", "size_ratio", "memory_ratio",
            "pareto", "recommended", "feasible", "measured_on", "figures")
    front = [{k: p.get(k) for k in keep} for p in result.front]
    rec = {k: result.recommended.get(k) for k in keep} if result.recommended else None
    return {"search_id": spec["group"], "version_id": rec["version_id"] if rec else None, "message": result.message,
            "recommended": rec, "front": front, "failed": result.failed, "closest": result.closest and {
                k: result.closest.get(k) for k in (*keep, "violations")},
            "meta": result.meta, "dir": str(out)}


JOB_KIND = JobKind(KIND, _run, _validate)
JOB_KINDS = {KIND: JOB_KIND}
