"""Rollouts that protect the fleet: canary, waves, abort, fleet gate, A/B, persisted across restarts."""

from controller.rollout.engine import RolloutEngine
from controller.rollout.errors import RolloutError, RolloutNotFoundError, RolloutPlanError, RolloutStateError
from controller.rollout.gate import GateDecision, fleet_gate
from controller.rollout.plan import FleetGate, RolloutPlan
from controller.rollout.store import Rollout, RolloutStore

__all__ = [
    "FleetGate",
    "GateDecision",
    "Rollout",
    "RolloutEngine",
    "RolloutError",
    "RolloutNotFoundError",
    "RolloutPlan",
    "RolloutPlanError",
    "RolloutStateError",
    "RolloutStore",
    "fleet_gate",
]
