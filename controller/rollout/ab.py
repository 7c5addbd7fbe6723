"""A/B deployment: two versions split across a group by ratio, judged on real on-device reports.

Each device of the group gets variant A or B (a stable split by a hash of its id, so the
same group always splits the same way), as two deployments tracked by one persisted
rollout of kind ``"ab"`` (so abort, timeout and restart-resume work as for any rollout).
The verdict aggregates the agents' BenchReports per variant (latency p95, peak memory,
golden-set quality): sample sizes, means, the difference B − A, and Welch's t; the winner
is the faster variant unless its quality is lower by more than ``max_quality_drop``, and
"inconclusive" when either side has too few samples or |t| is small.
"""

from __future__ import annotations

import hashlib
import math
import statistics
from typing import TYPE_CHECKING, Any

from controller.rollout.errors import RolloutPlanError, RolloutStateError
from controller.rollout.plan import RolloutPlan
from controller.rollout.store import DeviceOutcome, Rollout

if TYPE_CHECKING:
    from controller.rollout.engine import RolloutEngine

METRICS = ("latency_p95_ms", "peak_rss_delta_mb", "quality")


def split(device_ids: list[str], ratio_b: float) -> dict[str, str]:
    """Device → ``"a"``/``"b"``: a stable split with ``round(n * ratio_b)`` devices on B.

    Example:
        >>> sorted(split(["d1", "d2", "d3", "d4"], 0.5).values())
        ['a', 'a', 'b', 'b']
    """
    if not 0 < ratio_b < 1:
        raise RolloutPlanError("ratio must be between 0 and 1 (share of devices on variant B)")
    ordered = sorted(dict.fromkeys(device_ids), key=lambda d: hashlib.sha256(d.encode()).hexdigest())
    n_b = min(len(ordered) - 1, max(1, round(len(ordered) * ratio_b)))
    if len(ordered) < 2:
        raise RolloutPlanError("an A/B deployment needs at least two devices")
    return {d: ("b" if i < n_b else "a") for i, d in enumerate(ordered)}


def start_ab(
    engine: RolloutEngine,
    *,
    a: str,
    b: str,
    device_ids: list[str],
    ratio: float = 0.5,
    plan: RolloutPlan | None = None,
    actor: str = "controller",
) -> Rollout:
    """Deploy artifact-or-version ``a`` and ``b`` to a group split by ``ratio`` (share on B)."""
    plan = plan or RolloutPlan(strategy="all_at_once")
    variants = split(device_ids, ratio)
    store = engine.store
    with engine.lock:
        rid = store.create(kind="ab", target={"a": a, "b": b, "ratio": ratio}, plan=plan,
                           waves=[list(variants)], variants=variants, actor=actor)
        for variant, target in (("a", a), ("b", b)):
            group = [d for d, v in variants.items() if v == variant]
            prior = {d: p for d, p in engine.registry.devices.desired_deployments().items() if d in set(group)}
            dep = engine.fleet.deploy(target, group, thresholds=plan.thresholds, actor=actor)
            store.start_devices(rid, group, dep.id, prior)
            store.event(rid, "variant_started", f"variant {variant}: {len(group)} device(s)",
                        {"variant": variant, "target": target, "devices": group, "deployment_id": dep.id})
    engine.wake()
    return store.get(rid)


def _stats(values: list[float]) -> dict[str, float | int | None]:
    n = len(values)
    return {"n": n, "mean": statistics.fmean(values) if values else None,
            "median": statistics.median(values) if values else None,
            "stdev": statistics.stdev(values) if n > 1 else 0.0 if n else None}


def _welch_t(a: dict[str, Any], b: dict[str, Any]) -> float | None:
    if not a["n"] or not b["n"] or a["n"] + b["n"] < 3:
        return None
    se = math.sqrt((a["stdev"] ** 2) / a["n"] + (b["stdev"] ** 2) / b["n"])
    diff = b["mean"] - a["mean"]
    if se == 0:
        return math.copysign(math.inf, diff) if diff else 0.0
    return diff / se


def verdict(
    engine: RolloutEngine, ab_id: str, *, min_samples: int = 2, max_quality_drop: float = 0.01, min_t: float = 2.0
) -> dict[str, Any]:
    """Per-variant aggregates from the agents' bench reports, the difference B − A and the winner."""
    r = engine.store.get(ab_id)
    if r.kind != "ab":
        raise RolloutStateError(f"rollout {ab_id} is not an A/B deployment")
    samples: dict[str, dict[str, list[float]]] = {"a": {m: [] for m in METRICS}, "b": {m: [] for m in METRICS}}
    for d in r.devices:
        if d.outcome != DeviceOutcome.COMMITTED or not d.deployment_id:
            continue
        stored = engine.registry.reports.bench_reports(deployment_id=d.deployment_id, device_id=d.device_id)
        reports = [x for x in stored if x.get("decision") == "commit"]
        if reports:
            for m in METRICS:
                samples[d.variant][m].append(float(reports[-1]["candidate_metrics"][m]))
    out: dict[str, Any] = {"ab_id": ab_id, "target": r.target, "variants": {}, "difference_b_minus_a": {}}
    for v in ("a", "b"):
        out["variants"][v] = {m: _stats(samples[v][m]) for m in METRICS}
    for m in METRICS:
        a, b = out["variants"]["a"][m], out["variants"]["b"][m]
        diff = b["mean"] - a["mean"] if a["mean"] is not None and b["mean"] is not None else None
        out["difference_b_minus_a"][m] = {
            "absolute": diff, "relative": diff / a["mean"] if diff is not None and a["mean"] else None,
            "welch_t": _welch_t(a, b),
        }
    out["winner"], out["reason"] = _winner(out, min_samples, max_quality_drop, min_t)
    engine.store.event(ab_id, "ab_verdict", out["reason"], out)
    return out


def _winner(out: dict[str, Any], min_samples: int, max_quality_drop: float, min_t: float) -> tuple[str | None, str]:
    va, vb = out["variants"]["a"], out["variants"]["b"]
    n_a, n_b = va["latency_p95_ms"]["n"], vb["latency_p95_ms"]["n"]
    if n_a < min_samples or n_b < min_samples:
        return None, f"inconclusive: {n_a} vs {n_b} committed reports, need {min_samples} per variant"
    lat = out["difference_b_minus_a"]["latency_p95_ms"]
    q_diff = out["difference_b_minus_a"]["quality"]["absolute"]
    if lat["welch_t"] is not None and abs(lat["welch_t"]) < min_t:
        return None, (f"inconclusive: latency difference {lat['absolute']:+.3f} ms, "
                      f"|t| {abs(lat['welch_t']):.2f} < {min_t}")
    faster, slower = ("b", "a") if lat["absolute"] < 0 else ("a", "b")
    q_faster_minus_slower = q_diff if faster == "b" else -q_diff
    if q_faster_minus_slower < -max_quality_drop:
        return slower, (f"{slower.upper()} wins: {faster.upper()} is faster but loses {-q_faster_minus_slower:.4f} "
                        f"quality (> {max_quality_drop})")
    return faster, (f"{faster.upper()} wins: p95 {lat['absolute']:+.3f} ms (B − A, {lat['relative']:+.1%}), "
                    f"t = {lat['welch_t']:.2f}, n = {n_a}/{n_b}, quality diff {q_diff:+.4f}")


def promote_winner(engine: RolloutEngine, ab_id: str, *, plan: RolloutPlan | None = None, **kw: Any) -> Rollout:
    """Roll the winning variant out to the whole A/B group (devices already on it report "already active")."""
    result = verdict(engine, ab_id, **kw)
    if result["winner"] is None:
        raise RolloutStateError(f"no winner to promote: {result['reason']}")
    r = engine.store.get(ab_id)
    target = r.target[result["winner"]]
    devices = [d.device_id for d in r.devices]
    plan = plan or RolloutPlan(strategy="all_at_once")
    key = "artifact_id" if engine.fleet.targets.is_artifact(target) else "version_id"
    rollout = engine.create(**{key: target}, device_ids=devices, plan=plan)
    engine.store.event(ab_id, "ab_promoted", f"variant {result['winner']} promoted to {len(devices)} devices",
                       {"rollout_id": rollout.id, "winner": result["winner"]})
    return rollout
