"""What a rollout does, as one versioned, JSON-serialisable config (the REST request is the same object).

A plan says how to split the target into waves (all at once, or a canary then waves of
growing size), how long to bake between waves, when to abort (share of devices failed,
regressed or timed out, over a minimum count), per-device timeout and retries, and the
fleet-level gate applied to the canary's on-device benchmark figures.
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from controller.rollout.errors import RolloutPlanError


class FleetGate(BaseModel):
    """Canary figures vs the fleet baseline for the profile (medians), judged by the controller.

    The device-level gate compares a candidate with the model the same device runs; this one
    compares the canary group with the rest of the fleet on that profile, so a build that is
    "fine on each device" but consistently worse than what the fleet runs is still caught.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    max_latency_ratio: float = Field(1.25, gt=0)
    latency_slack_ms: float = Field(0.5, ge=0)
    """Absolute slack on top of the ratio: on sub-millisecond models scheduler jitter alone moves p95
    by more than 25 % (a test fleet of tiny models was rolled back on 0.05 → 0.07 ms)."""
    max_memory_ratio: float = Field(1.5, gt=0)
    max_quality_drop: float = Field(0.02, ge=0)
    min_reports: int = Field(1, ge=0)
    """Canary bench reports needed before a verdict; fewer → the rollout pauses (not promoted blind)."""


class RolloutPlan(BaseModel):
    """How to roll a version out. ``version`` is bumped when the meaning of a field changes."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    version: Literal[1] = 1
    strategy: Literal["all_at_once", "canary"] = "canary"
    canary_count: int | None = Field(None, ge=1)
    canary_percent: float | None = Field(None, gt=0, le=100)
    waves: int = Field(3, ge=1, le=20)
    """Waves after the canary; sizes grow 1:2:4:… over the remaining devices."""
    bake_s: float = Field(0.0, ge=0)
    device_timeout_s: float = Field(300.0, gt=0)
    retries: int = Field(1, ge=0, le=10)
    abort_ratio: float = Field(0.2, gt=0, le=1)
    abort_min_count: int = Field(1, ge=1)
    gate: FleetGate = FleetGate()
    rollback_on_anomaly: bool = True
    """A telemetry anomaly (latency drift after activation) on an updated device rolls the rollout back."""
    thresholds: dict[str, float] | None = None
    """Device-level regression gate for artifacts built for this rollout (``Thresholds`` fields)."""

    @model_validator(mode="after")
    def _one_canary_size(self) -> RolloutPlan:
        if self.canary_count is not None and self.canary_percent is not None:
            raise ValueError("give canary_count or canary_percent, not both")
        return self

    def partition(self, device_ids: list[str]) -> list[list[str]]:
        """Split the target into waves (the first is the canary for ``strategy="canary"``).

        Example:
            >>> RolloutPlan(canary_count=1, waves=3).partition([f"d{i}" for i in range(8)])
            [['d0'], ['d1'], ['d2', 'd3'], ['d4', 'd5', 'd6', 'd7']]
        """
        devices = list(dict.fromkeys(device_ids))
        if not devices:
            raise RolloutPlanError("a rollout needs at least one target device")
        if self.strategy == "all_at_once":
            return [devices]
        if self.canary_percent is not None:
            n_canary = max(1, math.ceil(len(devices) * self.canary_percent / 100))
        else:
            n_canary = self.canary_count or 1
        n_canary = min(n_canary, len(devices))
        groups = [devices[:n_canary]]
        rest = devices[n_canary:]
        if not rest:
            return groups
        waves = min(self.waves, len(rest))
        weights = [2**i for i in range(waves)]
        total = sum(weights)
        start = 0
        for i, w in enumerate(weights):
            end = len(rest) if i == waves - 1 else start + max(1, round(len(rest) * w / total))
            end = min(end, len(rest) - (waves - 1 - i))  # leave at least one device per later wave
            groups.append(rest[start:end])
            start = end
        return [g for g in groups if g]
