"""What is asked of a search: objectives, constraints (quality floor + the profile's SLO) and budget."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from common.profiles import DeviceProfile
from controller.optimize.errors import InvalidSearchError

OBJECTIVES = ("quality", "latency", "size", "memory")
STRATEGIES = ("nsga2", "tpe", "random", "rl")


def check_objectives(objectives: Sequence[str]) -> tuple[str, ...]:
    """Validated objective names (quality and latency are always searched)."""
    bad = sorted(set(objectives) - set(OBJECTIVES))
    if bad:
        raise InvalidSearchError(f"unknown objective(s) {bad}; choose from {', '.join(OBJECTIVES)}")
    wanted = ("quality", "latency", *[o for o in OBJECTIVES[2:] if o in objectives])
    return wanted


def check_strategy(strategy: str) -> str:
    """A known strategy name, or InvalidSearchError listing them."""
    if strategy not in STRATEGIES:
        raise InvalidSearchError(f"unknown strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}")
    return strategy


@dataclasses.dataclass(frozen=True)
class Constraints:
    """A candidate is feasible when it meets the quality floor and the profile's limits.

    Attributes:
        quality_floor: minimum quality (metric value; FP32 scores 1.0).
        use_slo: check the profile's ``[slo]`` (p95 latency, memory) and ``max_artifact_mb``.
        latency_scale: host → device factor applied to the host-measured p95 before it is compared
            with ``slo.latency_p95_ms`` (1.0 = take the host figure as is; a device measurement
            or a fitted host→device model gives a better one).
        max_latency_ratio / max_size_ratio / max_memory_ratio: optional extra limits vs FP32.
    """

    quality_floor: float = 0.99
    use_slo: bool = True
    latency_scale: float = 1.0
    max_latency_ratio: float | None = None
    max_size_ratio: float | None = None
    max_memory_ratio: float | None = None

    def __post_init__(self) -> None:
        if not 0.0 <= self.quality_floor <= 1.5:
            raise InvalidSearchError(f"quality_floor={self.quality_floor} must be in [0, 1.5] (FP32 scores 1.0)")
        if self.latency_scale <= 0:
            raise InvalidSearchError("latency_scale must be > 0")

    def feasible(self, m: dict[str, Any], profile: DeviceProfile) -> bool:
        """True when every constraint is met."""
        return all(v <= 0 for v in self.violations(m, profile).values())

    def violations(self, m: dict[str, Any], profile: DeviceProfile) -> dict[str, float]:
        """Relative violation per constraint (> 0 = violated by that fraction, ≤ 0 = met)."""
        out = {"quality_floor": (self.quality_floor - m["quality"]) / max(self.quality_floor, 1e-9)}
        if self.use_slo:
            p95 = m["latency_p95_ms"] * self.latency_scale
            out["slo_latency_p95_ms"] = (p95 - profile.slo.latency_p95_ms) / profile.slo.latency_p95_ms
            if m.get("memory_mb") is not None:
                out["slo_memory_mb"] = (m["memory_mb"] - profile.slo.memory_mb) / profile.slo.memory_mb
            size_mb = m["size_bytes"] / 2**20
            out["max_artifact_mb"] = (size_mb - profile.max_artifact_mb) / profile.max_artifact_mb
        for key, limit in (("latency_ratio", self.max_latency_ratio), ("size_ratio", self.max_size_ratio),
                           ("memory_ratio", self.max_memory_ratio)):
            if limit is not None and m.get(key) is not None:
                out[f"max_{key}"] = (m[key] - limit) / limit
        return out


@dataclasses.dataclass(frozen=True)
class Budget:
    """How long to search: a number of trials (all workers together), wall seconds, or both."""

    trials: int | None = 20
    time_s: float | None = None

    def __post_init__(self) -> None:
        if self.trials is None and self.time_s is None:
            raise InvalidSearchError("give a budget: trials and/or time_s")
        if self.trials is not None and self.trials < 1:
            raise InvalidSearchError("trials must be >= 1")
        if self.time_s is not None and self.time_s <= 0:
            raise InvalidSearchError("time_s must be > 0")


def spent(study: Any) -> int:
    """Trials that count against the budget: measured or failed *as candidates*.

    A trial cut short by a cancel, a controller restart or a killed worker (failed without a
    recorded reason) is not the candidate's fault and is run again when the search resumes.
    """
    import optuna

    return sum(1 for t in study.get_trials(deepcopy=False)
               if t.state == optuna.trial.TrialState.COMPLETE
               or (t.state == optuna.trial.TrialState.FAIL and "failure" in t.user_attrs))


class StopAtBudget:
    """optuna callback: stop this worker once all workers together spent the trial budget."""

    def __init__(self, trials: int) -> None:
        self.trials = trials

    def __call__(self, study: Any, trial: Any) -> None:
        if spent(study) >= self.trials:
            study.stop()
