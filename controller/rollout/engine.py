"""The rollout engine: drives persisted rollouts wave by wave over the fleet service.

One thread ticks every active rollout (woken by the fleet service whenever a report
arrives, else every ``tick_s``). Everything it knows is in the registry's SQLite file
(:mod:`controller.rollout.store`), so a controller restarted mid-rollout resumes it where
it stood: the wave, each device's deployment, attempt and start time (wall clock).

Per tick, for a running rollout: start the current wave's devices (one deployment),
refresh each device's outcome from its deployment, retry or time out devices past
``device_timeout_s``, apply the abort criteria over every device started so far, and when
the wave is finished either run the fleet gate (canary), bake, start the next wave or
finish. Abort = send every started device back to the deployment it had before the
rollout (``Desired.kind="rollback"``: agents reinstate a model they committed before
without the latency/memory gate). Every decision is stored with figures and a reason.

Example:
    >>> engine = RolloutEngine(fleet).start()  # doctest: +SKIP
    >>> r = engine.create(version_id=v.id, device_ids=ids, plan=RolloutPlan(canary_count=2, bake_s=30))
    >>> engine.wait(r.id, timeout=600).state  # doctest: +SKIP
    'succeeded'
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from typing import TYPE_CHECKING, Any

from controller.rollout.driver import RolloutDriver
from controller.rollout.errors import RolloutPlanError, RolloutStateError
from controller.rollout.plan import RolloutPlan
from controller.rollout.store import (
    ACTIVE_STATES,
    FINAL_STATES,
    DeviceOutcome,
    Rollout,
    RolloutState,
    RolloutStore,
)

if TYPE_CHECKING:
    from controller.fleet import FleetService

log = logging.getLogger(__name__)

class RolloutEngine:
    """Creates, drives, pauses, resumes, cancels and rolls back rollouts.

    Args:
        fleet: the started :class:`controller.fleet.FleetService` (publishing + report intake).
        tick_s: longest sleep between ticks; reports wake the engine earlier.
        actor: audit-log name.

    Run exactly one engine per registry: two engines ticking the same rollouts would both
    start waves (there is no cross-process lease yet; a server database would add one).
    """

    def __init__(self, fleet: FleetService, *, tick_s: float = 0.25, actor: str = "rollout-engine") -> None:
        self.fleet = fleet
        self.registry = fleet.registry
        self.store = RolloutStore(self.registry.db)
        self.driver = RolloutDriver(fleet, self.store, actor=actor)
        self.tick_s = tick_s
        self.min_interval_s = min(0.05, tick_s)
        self.actor = actor
        self.lock = threading.RLock()
        """Held while a rollout is created or changes state, so a tick never acts on a half-made change."""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.stats: Counter[str] = Counter()

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> RolloutEngine:
        """Resume every active rollout found in the store and start ticking."""
        for r in self.store.list(states=ACTIVE_STATES):
            self.store.event(r.id, "resumed", f"controller started; rollout was {r.state} in wave {r.wave}",
                             {"state": r.state, "wave": r.wave, "phase": r.phase, "outcomes": r.outcomes()})
            log.info("resuming rollout %s (%s, wave %d)", r.id, r.state, r.wave)
        telemetry = getattr(self.fleet, "telemetry", None)
        if telemetry is not None and self.on_anomaly not in telemetry.listeners:
            telemetry.listeners.append(self.on_anomaly)
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="rollout-engine", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop ticking (rollouts stay persisted and resume on the next start)."""
        telemetry = getattr(self.fleet, "telemetry", None)
        if telemetry is not None and self.on_anomaly in telemetry.listeners:
            telemetry.listeners.remove(self.on_anomaly)
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None

    def __enter__(self) -> RolloutEngine:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            if self.fleet.stopping:  # fleet (and soon the registry) shutting down
                self._stop.wait(self.tick_s)
                continue
            try:
                self.tick()
            except Exception:  # noqa: BLE001 - the engine must outlive one bad tick
                self.stats["tick_errors"] += 1
                log.exception("rollout tick failed")
            # a busy fleet notifies on every report: rest at least twice as long as the tick
            # took (and min_interval_s), so the engine never starves report intake of the CPU
            if self._stop.wait(max(self.min_interval_s, 2 * (time.monotonic() - started))):
                return
            self.fleet.changes.wait(self.tick_s - self.min_interval_s)

    # ------------------------------------------------------------------ operator API
    def create(
        self,
        *,
        version_id: str | None = None,
        artifact_id: str | None = None,
        device_ids: list[str] | None = None,
        profile: str | None = None,
        plan: RolloutPlan | None = None,
        per_profile: dict[str, str] | None = None,
        actor: str | None = None,
    ) -> Rollout:
        """Start a rollout of a version (artifact per profile) or one artifact to devices or a profile.

        ``per_profile`` (profile id → version or artifact id) overrides the target for the devices
        of those profiles, so one rollout can ship ONNX to some devices and TFLite to others; with
        it, ``version_id``/``artifact_id`` may be omitted when every target device's profile is named.
        Active rollouts sharing a device with this one are superseded (no further waves);
        the registry supersedes their unfinished per-device deployments as the new waves start.
        """
        plan = plan or RolloutPlan()
        if version_id is not None and artifact_id is not None:
            raise RolloutPlanError("give one of version_id= or artifact_id=, not both")
        if version_id is None and artifact_id is None and not per_profile:
            raise RolloutPlanError("give exactly one of version_id= or artifact_id= (or per_profile=)")
        devices = self._resolve_target(device_ids, profile)
        target: dict[str, Any] = {k: v for k, v in (("version_id", version_id), ("artifact_id", artifact_id)) if v}
        target |= {"profile": profile} if profile else {}
        target |= {"per_profile": dict(per_profile)} if per_profile else {}
        with self.lock:
            for old in self.store.active_for_devices(devices):
                self.store.update(old, state=RolloutState.SUPERSEDED, reason="a newer rollout targets its devices")
                self.store.event(old, "superseded", "a newer rollout targets some of its devices",
                                 {"devices": len(devices)})
            rid = self.store.create(kind="rollout", target=target, plan=plan, waves=plan.partition(devices),
                                    actor=actor or self.actor)
            rollout = self.store.get(rid)
            self.store.event(rid, "created", f"{plan.strategy}: {rollout.waves} wave(s) over {len(devices)} devices",
                             {"waves": [len(rollout.in_wave(w)) for w in range(rollout.waves)]})
        self.wake()
        return self.store.get(rid)

    def _resolve_target(self, device_ids: list[str] | None, profile: str | None) -> list[str]:
        if device_ids:
            known = {d.id for d in self.registry.devices.list_devices()}
            unknown = [d for d in dict.fromkeys(device_ids) if d not in known]
            if unknown:
                raise RolloutPlanError(f"unknown device(s) {', '.join(unknown[:5])}: register them or let them connect")
            return list(dict.fromkeys(device_ids))
        if profile:
            found = [d.id for d in self.registry.devices.list_devices(profile=profile)]
            if found:
                return found
            raise RolloutPlanError(f"no device of profile {profile!r} is known yet")
        raise RolloutPlanError("give device_ids= or profile=")

    def get(self, rollout_id: str) -> Rollout:
        """The rollout with its devices."""
        return self.store.get(rollout_id)

    def events(self, rollout_id: str) -> list[dict[str, Any]]:
        """Every decision taken, with figures and reason."""
        return self.store.events(rollout_id)

    def pause(self, rollout_id: str, reason: str = "paused by operator") -> Rollout:
        """No new wave starts; devices already updating finish."""
        return self._transition(rollout_id, (RolloutState.RUNNING,), RolloutState.PAUSED, "paused", reason)

    def resume(self, rollout_id: str, reason: str = "resumed by operator") -> Rollout:
        """Continue a paused rollout; one the fleet gate paused (too few canary reports) is promoted:
        resuming it is the operator's decision to go on without the gate's verdict."""
        r = self.store.get(rollout_id)
        if r.state == RolloutState.PAUSED and r.reason.startswith("fleet gate:"):
            self.store.update(rollout_id, phase="gate_override")
        return self._transition(rollout_id, (RolloutState.PAUSED,), RolloutState.RUNNING, "resumed", reason)

    def cancel(self, rollout_id: str, *, rollback: bool = False, reason: str = "cancelled by operator") -> Rollout:
        """Stop the rollout; with ``rollback=True`` also send every started device back."""
        if rollback:
            with self.lock:
                r = self.store.get(rollout_id)
                if r.state not in (RolloutState.RUNNING, RolloutState.PAUSED):
                    raise RolloutStateError(f"rollout {rollout_id} is {r.state}; only an active one can be cancelled")
                self.driver.roll_back(r, f"cancelled with rollback: {reason}", {})
            return self.store.get(rollout_id)
        live = (RolloutState.RUNNING, RolloutState.PAUSED)
        return self._transition(rollout_id, live, RolloutState.CANCELLED, "cancelled", reason)

    def rollback(self, rollout_id: str, reason: str) -> Rollout:
        """Roll back every started device (e.g. on a telemetry anomaly) unless already rolled back."""
        with self.lock:
            r = self.store.get(rollout_id)
            if r.state in (RolloutState.ROLLING_BACK, RolloutState.ROLLED_BACK):
                return r
            self.driver.roll_back(r, reason, {})
        return self.store.get(rollout_id)

    def on_anomaly(self, event: dict[str, Any]) -> None:
        """Rollback policy for telemetry anomalies: an updated device of an active rollout drifts → roll back."""
        device = event.get("device_id")
        with self.lock:
            for r in self.store.list(states=(RolloutState.RUNNING, RolloutState.PAUSED)):
                hit = next(
                    (d for d in r.devices if d.device_id == device and d.outcome == DeviceOutcome.COMMITTED), None
                )
                if hit is None:
                    continue
                self.store.event(r.id, "anomaly", f"{device}: {event.get('detail', '')}", event.get("figures", {}))
                if r.plan.rollback_on_anomaly:
                    self.driver.roll_back(r, f"telemetry anomaly on {device}: {event.get('kind')}", event)
        self.wake()

    def _transition(
        self, rollout_id: str, allowed: tuple[RolloutState, ...], new: RolloutState, event: str, reason: str
    ) -> Rollout:
        with self.lock:
            r = self.store.get(rollout_id)
            if r.state not in allowed:
                raise RolloutStateError(f"rollout {rollout_id} is {r.state}; {event} needs one of {allowed}")
            self.store.update(rollout_id, state=new, reason=reason)
            self.store.event(rollout_id, event, reason, {"wave": r.wave, "outcomes": r.outcomes()})
        self.wake()
        return self.store.get(rollout_id)

    def wait(
        self, rollout_id: str, timeout: float, *, until: tuple[str, ...] = (*FINAL_STATES, RolloutState.PAUSED)
    ) -> Rollout:
        """Block until the rollout reaches one of ``until`` (default: final or paused) or the timeout."""
        deadline = time.monotonic() + timeout
        while True:
            r = self.store.get(rollout_id)
            if r.state in until or time.monotonic() >= deadline:
                return r
            self.fleet.changes.wait(min(0.2, max(0.01, deadline - time.monotonic())))

    def wake(self) -> None:
        """Tick now (and wake every waiter): a rollout was created or changed state."""
        self.fleet.changes.notify()

    # ------------------------------------------------------------------ driving
    def tick(self) -> None:
        """Advance every running or rolling-back rollout one step."""
        with self.lock:
            for r in self.store.list(states=(RolloutState.RUNNING, RolloutState.ROLLING_BACK)):
                if r.state == RolloutState.ROLLING_BACK:
                    self.driver.finish_rollback(r)
                else:
                    self.driver.advance(r)
