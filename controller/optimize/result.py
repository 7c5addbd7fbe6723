"""The outcome of a search: every trial, the Pareto front, the recommended build, the files.

``pareto.json`` is a list of measured points (``path``, ``version_id``, ``config``, ``quality``,
``latency_ratio``, ``size_ratio``, ``memory_ratio``, ``pareto``, ``recommended``, ``measured_on``
and the absolute figures); ``search.json`` adds the space, the strategy, the failed trials with
their reasons and, when nothing is feasible, the closest point and why.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any

from controller.optimize.pareto import hypervolume, non_dominated

_KEYS = {"quality": "quality", "latency": "latency_ratio", "size": "size_ratio", "memory": "memory_ratio"}


@dataclasses.dataclass
class SearchResult:
    """Points (measured trials), failures, the recommendation and how the search ran."""

    points: list[dict[str, Any]]
    failed: list[dict[str, Any]]
    recommended: dict[str, Any] | None
    closest: dict[str, Any] | None
    message: str
    meta: dict[str, Any]

    @property
    def front(self) -> list[dict[str, Any]]:
        """The non-dominated points."""
        return [p for p in self.points if p["pareto"]]

    def to_dict(self) -> dict[str, Any]:
        """Everything, JSON-ready (``search.json``)."""
        return {"meta": self.meta, "message": self.message, "recommended": self.recommended,
                "closest": self.closest, "points": self.points, "failed": self.failed}

    def write(self, out: Path, *, keep_all_models: bool = False) -> dict[str, Path]:
        """Write ``pareto.json`` and ``search.json``; drop the model files of points off the front."""
        out = Path(out)
        if not keep_all_models:
            keep = {p["path"] for p in self.points if p["pareto"] or p["recommended"]}
            if self.closest:
                keep.add(self.closest["path"])
            for f in (out / "candidates").glob("trial-*.onnx"):
                if str(f.relative_to(out)) not in keep:
                    f.unlink(missing_ok=True)
            for p in self.points:
                p["path_kept"] = p["path"] in keep
        pareto = out / "pareto.json"
        pareto.write_text(json.dumps(self.points, indent=2))
        search = out / "search.json"
        search.write_text(json.dumps(self.to_dict(), indent=2))
        return {"pareto": pareto, "search": search}


def _vector(point: dict[str, Any], objectives: tuple[str, ...]) -> tuple[float, ...]:
    return tuple((1.0 - point["quality"]) if o == "quality" else point[_KEYS[o]] for o in objectives)


def front_hypervolume(points: list[dict[str, Any]], floor: float) -> float:
    """Hypervolume of the feasible points in (quality above floor, latency, size), each scaled to [0, 1].

    Reference: quality at the floor, FP32 latency and size. 1.0 would be a model with FP32
    quality, zero latency and zero size; a search that only finds FP32 scores 0.
    """
    span = max(1.0 - floor, 1e-6)
    vecs = [((1.0 - p["quality"]) / span, p["latency_ratio"], p["size_ratio"]) for p in points
            if p["quality"] >= floor]
    return hypervolume(vecs, (1.0, 1.0, 1.0))


def collect(study: Any, problem: Any, *, strategy: str, metric: str, data_origin: str, storage: str,
            seconds: float, model_name: str) -> SearchResult:
    """Read every trial of the study into a :class:`SearchResult` (works for any worker, any time)."""
    import optuna

    points, failed, interrupted = [], [], []
    for t in study.get_trials(deepcopy=False):
        attrs = t.user_attrs
        if t.state == optuna.trial.TrialState.COMPLETE and "measurement" in attrs:
            m = attrs["measurement"]
            points.append({"trial": t.number, "label": attrs.get("label"), "path": attrs["path"], "version_id": None,
                           "config": {"candidate": attrs["candidate"], "stages": attrs["stages"]},
                           "quality": m["quality"], "latency_ratio": m["latency_ratio"],
                           "size_ratio": m["size_ratio"], "memory_ratio": m.get("memory_ratio"),
                           "pareto": False, "recommended": False, "feasible": False,
                           "measured_on": [m["measured_on"]], "figures": m,
                           "violations": attrs.get("violations", {}), "repeat_of": attrs.get("repeat_of"),
                           "seconds": attrs.get("seconds")})
        elif t.state == optuna.trial.TrialState.FAIL and "failure" in attrs:
            failed.append({"trial": t.number, "label": attrs.get("label"), "candidate": attrs.get("candidate"),
                           "reason": attrs["failure"]})
        elif t.state == optuna.trial.TrialState.FAIL:
            interrupted.append(t.number)  # cancel / restart / killed worker: run again on resume
    starts = [t.datetime_start for t in study.get_trials(deepcopy=False) if t.datetime_start]
    ends = [t.datetime_complete for t in study.get_trials(deepcopy=False) if t.datetime_complete]
    wall = (max(ends) - min(starts)).total_seconds() if starts and ends else 0.0
    objectives = tuple(problem.objectives)
    distinct = [p for p in points if p["repeat_of"] is None]
    for p, on_front in zip(distinct, non_dominated([_vector(p, objectives) for p in distinct]), strict=True):
        p["pareto"] = on_front
        p["feasible"] = all(v <= 0 for v in p["violations"].values())
    for p in points:
        if p["repeat_of"] is not None:
            p["feasible"] = all(v <= 0 for v in p["violations"].values())
    feasible = [p for p in distinct if p["feasible"]]
    recommended = closest = None
    floor = problem.constraints.quality_floor
    if feasible:
        recommended = min(feasible, key=lambda p: (p["latency_ratio"], -p["quality"], not p["pareto"]))
        recommended["recommended"] = True
        message = (f"recommended: {recommended['label']} — {recommended['latency_ratio']:.2f}x latency, "
                   f"{recommended['size_ratio']:.3f}x size, quality {recommended['quality']:.4f} (floor {floor})")
    elif distinct:
        closest = min(distinct, key=lambda p: sum(max(v, 0.0) for v in p["violations"].values()))
        broken = ", ".join(f"{k} by {v:.1%}" for k, v in closest["violations"].items() if v > 0)
        message = (f"no candidate meets the constraints (quality floor {floor} and the {problem.profile.id} SLO); "
                   f"closest: {closest['label']} (misses {broken}). Lower the floor, relax the SLO or widen the "
                   "space / budget")
    else:
        message = f"no candidate could be measured ({len(failed)} failed); see 'failed' for the reasons"
    meta = {"model": model_name, "profile": problem.profile.id, "strategy": strategy, "metric": metric,
            "objectives": list(objectives), "constraints": dataclasses.asdict(problem.constraints),
            "slo": problem.profile.slo.model_dump(), "max_artifact_mb": problem.profile.max_artifact_mb,
            "space": problem.space.to_dict(), "data": data_origin, "storage": storage, "study": study.study_name,
            "trials": len(points) + len(failed), "measured": len(points), "failed": len(failed),
            "interrupted": interrupted,
            "seconds_this_run": round(seconds, 1), "search_wall_s": round(wall, 1),
            "hypervolume": front_hypervolume(distinct, floor),
            "options": dataclasses.asdict(problem.evaluator.options), "stage_dir": str(problem.evaluator.stage_dir)}
    return SearchResult(points, failed, recommended, closest, message, meta)


def copy_model(result: SearchResult, out: Path, point: dict[str, Any], dest: Path) -> Path:
    """Copy a point's model file somewhere (e.g. ``recommended.onnx``)."""
    shutil.copy(Path(out) / point["path"], dest)
    return dest
