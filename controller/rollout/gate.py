"""The fleet-level gate: canary figures vs the fleet baseline for the profile → promote, pause or roll back.

Baseline per profile = median of the on-device figures of the model the rest of the fleet
runs (each non-canary device's last committed BenchReport for its active model); where no
such device exists, the canary devices' own baseline measurements (the model they replaced).
Medians, because one noisy device must not decide for the fleet.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any, Literal

from controller.registry import Registry
from controller.rollout.plan import FleetGate

Action = Literal["promote", "pause", "rollback"]


@dataclass(frozen=True)
class GateDecision:
    """The verdict with the figures it was based on (stored as a rollout event)."""

    action: Action
    reason: str
    figures: dict[str, Any] = field(default_factory=dict)


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def _fleet_baseline(registry: Registry, profile: str, exclude: set[str]) -> list[dict[str, Any]]:
    """Committed on-device figures of the model each non-canary device of the profile runs."""
    out = []
    for dev in registry.devices.list_devices(profile=profile):
        bench = dev.last_bench
        if dev.id in exclude or not bench or not dev.active or bench.get("decision") != "commit":
            continue
        if bench.get("candidate", {}).get("sha256") == dev.active.get("sha256"):
            out.append(bench["candidate_metrics"])
    return out


def _judge_profile(profile: str, reports: list[dict[str, Any]], base: list[dict[str, Any]], gate: FleetGate) -> tuple[
    list[str], dict[str, Any]
]:
    cand = [r["candidate_metrics"] for r in reports]
    source = "fleet"
    if not base:
        base, source = [r["baseline_metrics"] for r in reports if r.get("baseline_metrics")], "canary-baseline"
    fig: dict[str, Any] = {"n_canary": len(cand), "n_baseline": len(base), "baseline_source": source}
    failures: list[str] = []
    for key in ("latency_p95_ms", "peak_rss_delta_mb", "quality"):
        fig[f"canary_{key}"] = _median([m[key] for m in cand])
        fig[f"baseline_{key}"] = _median([m[key] for m in base])
    if not base:
        return failures, fig
    c_lat, b_lat = fig["canary_latency_p95_ms"], fig["baseline_latency_p95_ms"]
    if b_lat and c_lat > b_lat * gate.max_latency_ratio + gate.latency_slack_ms:
        failures.append(f"{profile}: median p95 {c_lat:.3f} ms > {gate.max_latency_ratio} x fleet {b_lat:.3f} ms "
                        f"+ {gate.latency_slack_ms} ms")
    c_mem, b_mem = fig["canary_peak_rss_delta_mb"], fig["baseline_peak_rss_delta_mb"]
    if b_mem and c_mem > b_mem * gate.max_memory_ratio + 1.0:
        failures.append(f"{profile}: median peak RSS {c_mem:.1f} MB > {gate.max_memory_ratio} x fleet {b_mem:.1f} MB")
    c_q, b_q = fig["canary_quality"], fig["baseline_quality"]
    if c_q < b_q - gate.max_quality_drop:
        failures.append(f"{profile}: median quality {c_q:.4f} < fleet {b_q:.4f} - {gate.max_quality_drop}")
    return failures, fig


def fleet_gate(
    registry: Registry, *, canary: dict[str, str], gate: FleetGate
) -> GateDecision:
    """Judge the canary wave.

    Args:
        registry: source of bench reports and device records.
        canary: canary device id → the deployment id it ran.
        gate: thresholds (ratios on medians, quality drop, minimum number of reports).

    Example:
        >>> fleet_gate(reg, canary={"pi-1": dep.id}, gate=FleetGate()).action  # doctest: +SKIP
        'promote'
    """
    by_profile: dict[str, list[dict[str, Any]]] = {}
    for device_id, dep_id in canary.items():
        reports = [r for r in registry.reports.bench_reports(deployment_id=dep_id, device_id=device_id)
                   if r.get("decision") == "commit"]
        if reports:
            profile = registry.devices.get_device(device_id=device_id).profile
            by_profile.setdefault(profile, []).append(reports[-1])
    n = sum(len(v) for v in by_profile.values())
    if n < gate.min_reports:
        return GateDecision(
            "pause", f"only {n} committed canary bench report(s), the gate needs {gate.min_reports}", {"reports": n}
        )
    failures: list[str] = []
    figures: dict[str, Any] = {}
    for profile, reports in sorted(by_profile.items()):
        errs, fig = _judge_profile(profile, reports, _fleet_baseline(registry, profile, set(canary)), gate)
        failures += errs
        figures[profile] = fig
    if failures:
        return GateDecision("rollback", "; ".join(failures), figures)
    return GateDecision("promote", f"{n} canary report(s) within the fleet baseline", figures)
