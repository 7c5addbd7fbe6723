"""Driving one rollout a step: start a wave's devices, refresh outcomes, retry, abort, gate, bake, roll back.

The :class:`controller.rollout.engine.RolloutEngine` decides *when* (its tick thread, under
its lock, for every active rollout) and offers the operator API; this module decides
*what* each step does. Every decision is stored with figures and a reason.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from typing import TYPE_CHECKING, Any

from controller.registry import ConflictError
from controller.rollout.gate import fleet_gate
from controller.rollout.store import (
    BAD_OUTCOMES,
    FINAL_OUTCOMES,
    DeviceOutcome,
    Rollout,
    RolloutDevice,
    RolloutState,
    RolloutStore,
    outcome_of,
)

if TYPE_CHECKING:
    from controller.fleet import FleetService

log = logging.getLogger(__name__)


class RolloutDriver:
    """Steps rollouts over a fleet service (callers hold the engine's lock).

    Args:
        fleet: the started fleet service (deploys and send-backs).
        store: the persisted rollouts.
        actor: audit-log name of the deployments it makes.
    """

    def __init__(self, fleet: FleetService, store: RolloutStore, *, actor: str) -> None:
        self.fleet = fleet
        self.registry = fleet.registry
        self.store = store
        self.actor = actor

    def advance(self, r: Rollout) -> None:
        """One step of a running rollout: start, refresh, abort check, wave end, bake."""
        if r.phase == "gate_override":
            self._wave_done(r)
            return
        if r.phase == "bake":
            if self._check_abort(r):
                return
            if time.time() >= (r.bake_until or 0):
                self.store.update(r.id, wave=r.wave + 1, phase="deploy", bake_until=None)
                self.store.event(r.id, "bake_done", f"bake after wave {r.wave} passed", {"wave": r.wave})
            return
        self._start_pending(r)
        r = self._refresh(self.store.get(r.id))
        if self._check_abort(r):
            return
        wave = r.in_wave(r.wave)
        if all(d.outcome in FINAL_OUTCOMES for d in wave):
            self._wave_done(r)

    def _target(self, r: Rollout) -> str | None:
        return r.target.get("version_id") or r.target.get("artifact_id")

    def _deploy(self, r: Rollout, devices: list[str]) -> str:
        """One deployment for a group of devices; returns its id (prior deployments recorded first)."""
        prior = {d: p for d, p in self.registry.devices.desired_deployments().items() if d in set(devices)}
        dep = self.fleet.deploy(self._target(r), devices, thresholds=r.plan.thresholds,
                                per_profile=r.target.get("per_profile"), actor=self.actor)
        self.store.start_devices(r.id, devices, dep.id, prior)
        return dep.id

    def _start_pending(self, r: Rollout) -> None:
        pending = [d.device_id for d in r.in_wave(r.wave) if d.outcome == DeviceOutcome.PENDING]
        if not pending:
            return
        try:
            dep_id = self._deploy(r, pending)
        except Exception as exc:  # noqa: BLE001 - e.g. no artifact for a profile: fail the rollout, visibly
            self.store.update(r.id, state=RolloutState.FAILED, reason=f"could not start wave {r.wave}: {exc}")
            self.store.event(r.id, "failed", f"could not start wave {r.wave}: {exc}", {"wave": r.wave})
            return
        label = "canary" if r.wave == 0 and r.plan.strategy == "canary" and r.waves > 1 else f"wave {r.wave}"
        self.store.event(r.id, "wave_started", f"{label}: {len(pending)} device(s)",
                         {"wave": r.wave, "devices": pending, "deployment_id": dep_id})

    def _refresh(self, r: Rollout) -> Rollout:
        """Outcomes from the per-device deployment states; retries and timeouts."""
        running = [d for d in r.devices if d.outcome == DeviceOutcome.IN_PROGRESS and d.deployment_id]
        if not running:
            return r
        # a light query, not get_deployment(): this runs every tick for up to thousands of devices
        status = self.registry.deployments.device_statuses(deployment_ids={d.deployment_id for d in running})
        now = time.time()
        changed: dict[str, list[str]] = {}
        expired: list[RolloutDevice] = []
        for d in running:
            rec = status.get((d.deployment_id, d.device_id))  # type: ignore[arg-type]
            outcome = outcome_of(*rec) if rec else DeviceOutcome.FAILED
            if outcome is not None:
                changed.setdefault(outcome, []).append(d.device_id)
            elif now - (d.started_at or now) > r.plan.device_timeout_s:
                expired.append(d)
        for outcome, ids in changed.items():
            self.store.set_devices(r.id, ids, outcome=outcome)
        self._handle_expired(r, expired)
        return self.store.get(r.id) if changed or expired else r

    def _handle_expired(self, r: Rollout, expired: list[RolloutDevice]) -> None:
        retry = [d.device_id for d in expired if d.attempts <= r.plan.retries]
        gone = [d.device_id for d in expired if d.attempts > r.plan.retries]
        if retry:
            dep_id = self._deploy(r, retry)
            self.store.event(r.id, "retry", f"{len(retry)} device(s) silent for {r.plan.device_timeout_s:.0f}s",
                             {"devices": retry, "deployment_id": dep_id})
        if gone:
            self.store.set_devices(r.id, gone, outcome=DeviceOutcome.TIMED_OUT)
            self.store.event(r.id, "timed_out", f"{len(gone)} device(s) gave no result after "
                             f"{r.plan.retries + 1} attempt(s) of {r.plan.device_timeout_s:.0f}s", {"devices": gone})

    def _abort_figures(self, r: Rollout) -> dict[str, Any]:
        started = [d for d in r.devices if d.outcome != DeviceOutcome.PENDING]
        counts = Counter(d.outcome for d in started)
        bad = sum(counts[o] for o in BAD_OUTCOMES)
        return {"started": len(started), "bad": bad, "share": bad / len(started) if started else 0.0,
                "outcomes": dict(counts), "abort_ratio": r.plan.abort_ratio, "abort_min_count": r.plan.abort_min_count}

    def _check_abort(self, r: Rollout) -> bool:
        fig = self._abort_figures(r)
        if fig["bad"] >= r.plan.abort_min_count and fig["share"] >= r.plan.abort_ratio:
            self.roll_back(r, f"abort: {fig['bad']}/{fig['started']} devices failed, regressed or timed out "
                            f"({fig['share']:.0%} >= {r.plan.abort_ratio:.0%})", fig)
            return True
        return False

    def _wave_done(self, r: Rollout) -> None:
        is_canary = r.wave == 0 and r.plan.strategy == "canary" and r.waves > 1 and r.phase != "gate_override"
        if is_canary:
            canary = {d.device_id: d.deployment_id for d in r.in_wave(0) if d.outcome == DeviceOutcome.COMMITTED}
            decision = fleet_gate(self.registry, canary=canary, gate=r.plan.gate)  # type: ignore[arg-type]
            self.store.event(r.id, f"gate_{decision.action}", decision.reason, decision.figures)
            if decision.action == "rollback":
                self.roll_back(r, f"fleet gate: {decision.reason}", decision.figures)
                return
            if decision.action == "pause":
                self.store.update(r.id, state=RolloutState.PAUSED, reason=f"fleet gate: {decision.reason}")
                return
        if r.wave >= r.waves - 1:
            self.store.update(r.id, state=RolloutState.SUCCEEDED, reason=f"{r.waves} wave(s) done")
            self.store.event(r.id, "succeeded", "every wave finished", self._abort_figures(r))
            return
        fig = {"wave": r.wave, "outcomes": Counter(d.outcome for d in r.in_wave(r.wave))}
        if r.plan.bake_s > 0:
            self.store.update(r.id, phase="bake", bake_until=time.time() + r.plan.bake_s)
            self.store.event(r.id, "baking", f"wave {r.wave} done; baking {r.plan.bake_s:.0f}s", fig)
        else:
            self.store.update(r.id, wave=r.wave + 1, phase="deploy")
            self.store.event(r.id, "promoted", f"wave {r.wave} done; starting wave {r.wave + 1}", fig)

    def roll_back(self, r: Rollout, reason: str, figures: dict[str, Any]) -> None:
        """Send every started device back to the deployment it had before the rollout."""
        started = [d for d in r.devices if d.outcome != DeviceOutcome.PENDING]
        waiting = [d.device_id for d in r.devices if d.outcome == DeviceOutcome.PENDING]
        self.store.set_devices(r.id, waiting, outcome=DeviceOutcome.SKIPPED)
        live = [d.device_id for d in started if d.outcome in (DeviceOutcome.IN_PROGRESS, DeviceOutcome.COMMITTED)]
        self.store.set_devices(r.id, live, outcome=DeviceOutcome.SENT_BACK)
        plan: dict[str, str | None] = {}
        for d in started:
            if d.outcome == DeviceOutcome.SUPERSEDED:
                continue  # another deployment owns the device now
            plan[d.device_id] = self._prior_artifact(d)
        for dep_id in {d.deployment_id for d in started if d.deployment_id}:
            try:
                self.registry.deployments.mark_deployment_rolled_back(
                    deployment_id=dep_id, reason=reason, actor=self.actor
                )
            except ConflictError:
                pass
        first_dep = next((d.deployment_id for d in started if d.deployment_id), None)
        back = self.fleet.send_back(plan, rollback_of=first_dep, actor=self.actor) if plan and first_dep else None
        ids = [back.id] if back else []
        self.store.update(r.id, state=RolloutState.ROLLING_BACK if ids else RolloutState.ROLLED_BACK, reason=reason,
                          rollback_deployments=json.dumps(ids))
        self.store.event(r.id, "rollback", reason, figures | {"devices_sent_back": sorted(plan),
                                                            "rollback_deployments": ids})
        log.warning("rollout %s rolled back: %s", r.id, reason)

    def _prior_artifact(self, d: RolloutDevice) -> str | None:
        if not d.prior_deployment_id:
            return None
        return self.registry.deployments.device_artifact(deployment_id=d.prior_deployment_id, device_id=d.device_id)

    def finish_rollback(self, r: Rollout) -> None:
        """Mark a rolling-back rollout rolled back once every send-back deployment finished."""
        deps = [self.registry.deployments.get_deployment(deployment_id=i) for i in r.rollback_deployments]
        if all(dep.done for dep in deps):
            counts: Counter[str] = Counter()
            for dep in deps:
                counts.update(dep.counts())
            self.store.update(r.id, state=RolloutState.ROLLED_BACK)
            self.store.event(r.id, "rolled_back", "every device sent back reported", {"outcomes": dict(counts)})
