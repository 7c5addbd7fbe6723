"""Record a search's front in the registry: one version per point, with its lineage and figures.

Lineage follows the stages: FP32 root → architecture stage (the pruned / distilled sub-network,
shared by every point built on it) → precision stage (the point). The point's version carries
its technique config, as every registry version does, and its measured figures plus the search
it came from under ``metrics.optimize``. The recommended point gets the tag
``optimized-<profile>``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from controller.optimize.result import SearchResult


def _root(registry: Any, model_name: str, fp32: Path, zoo: str | None, actor: str) -> Any:
    from common.manifest import sha256_file

    model = registry.ensure_model(name=model_name, description=f"zoo model {zoo}" if zoo else "optimised model",
                                  actor=actor)
    digest = sha256_file(fp32)
    for v in registry.list_versions(model_id=model.id, limit=1000):
        if v.parent_id is None and v.sha256 == digest:
            return v
    config = {"source": "zoo", "zoo": zoo} if zoo else {"source": "file", "file": fp32.name}
    return registry.add_version(model_id=model.id, path=fp32, technique="fp32", config=config, format="onnx",
                                metrics={"size_bytes": fp32.stat().st_size}, actor=actor)


def record_front(result: SearchResult, out: Path, registry: Any, *, fp32: Path, model_name: str | None = None,
                 zoo: str | None = None, root_version_id: str | None = None, actor: str = "optimize",
                 which: str = "front") -> list[str]:
    """Add a version for every front point (``which="front"``) or every measured point (``"all"``).

    Sets ``version_id`` on the recorded points and returns the new ids.
    """
    out = Path(out)
    root = registry.get_version(version_id=root_version_id) if root_version_id else \
        _root(registry, model_name or result.meta["model"], Path(fp32), zoo, actor)
    profile = result.meta["profile"]
    arch_versions: dict[str, str] = {}
    created: list[str] = []
    chosen = [p for p in result.points if p.get("repeat_of") is None and
              (which == "all" or p["pareto"] or p["recommended"] or p is result.closest)]
    for point in chosen:
        parent = root.id
        stages = point["config"]["stages"]
        figures = {**point["figures"], "violations": point["violations"], "feasible": point["feasible"],
                   "optimize": {"study": result.meta["study"], "strategy": result.meta["strategy"],
                                "trial": point["trial"], "pareto": point["pareto"],
                                "recommended": point["recommended"], "candidate": point["config"]["candidate"],
                                "measured_on": point["measured_on"], "metric": result.meta["metric"]}}
        if not stages:
            point["version_id"] = root.id
            continue
        for i, stage in enumerate(stages):
            last = i == len(stages) - 1
            if not last and stage["stage"] == "arch":
                arch = point["config"]["candidate"]["arch"]
                if arch not in arch_versions:
                    path = Path(result.meta["stage_dir"]) / f"{arch.replace(':', '-')}.onnx"
                    v = registry.add_version(model_id=root.model_id, path=path, technique=stage["technique"],
                                             config=stage["config"], format="onnx", profile=profile, parent_id=parent,
                                             metrics={"optimize": {"study": result.meta["study"], "arch": arch}},
                                             actor=actor)
                    arch_versions[arch] = v.id
                    created.append(v.id)
                parent = arch_versions[arch]
                continue
            v = registry.add_version(model_id=root.model_id, path=out / point["path"], technique=stage["technique"],
                                     config=stage["config"], format="onnx", profile=profile, parent_id=parent,
                                     metrics=figures, actor=actor)
            point["version_id"] = v.id
            created.append(v.id)
    rec = result.recommended
    if rec and rec.get("version_id"):
        registry.tags.set_tag(model_id=root.model_id, tag=f"optimized-{profile}", version_id=rec["version_id"],
                              actor=actor)
    return created
