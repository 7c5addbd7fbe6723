"""The update state machine: persist first, then enter; one place decides rollback.

All work happens on one thread (the agent's worker). Inputs are ``handle_desired``,
``handle_chunk`` and ``tick``; outputs go through a :class:`Reporter` (the MQTT daemon in
production, a list in unit tests). Every transition is written to the journal *before*
the state's step runs and is reported as a JobReport, so a crash at any point resumes
from a known state (``resume``) and the controller sees every step.

Trust order for a Desired: signature against the pinned key, then profile, format, sizes
and disk space, all before a single byte is written. Nothing reaches the active slot
pointer without passing per-chunk and whole-file hashes, a post-install hash check and
the benchmark gate; commit is the point of no return.
"""

from __future__ import annotations

import errno
import json
import logging
import shutil
import threading
from collections import Counter
from typing import Protocol

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from agent.bench import BenchCancelled, BenchSpec, run_benchmark
from agent.compare import decide
from agent.config import AgentConfig
from agent.download import ChunkOutcome, Downloader, expected_chunk_count
from agent.errors import AgentError, BenchmarkError, UnsupportedFormatError, UpdateError
from agent.journal import Journal, JournalData
from agent.runtimes import available_formats, missing_runtimes
from agent.slots import Slot, SlotStore, model_ref
from agent.trt_engine import EngineCache
from agent.update.states import PRE_COMMIT, Event, State, next_state, resume_state
from common.errors import ProtocolError, ReasonCode
from common.grant import check_grant_binding, verify_grant
from common.manifest import Manifest, verify_manifest
from common.messages import (
    MAX_MESSAGE_BYTES,
    MAX_NESTING,
    BenchMetrics,
    BenchReport,
    Desired,
    JobReport,
    ModelRef,
    decode,
    nesting_depth,
)
from common.topics import TopicError, validate_id

log = logging.getLogger(__name__)

MAX_STATE_STORES = 32
"""State stores per deployment before the machine gives up (a model that crashes the agent every time)."""
MAX_CHUNK_REPORTS = 5
"""Corrupt-chunk JobReports per deployment; further ones are only counted and logged."""


class Reporter(Protocol):
    """Where the machine's reports go."""

    def job(self, report: JobReport) -> None:
        """A state transition or a rejection."""

    def bench(self, report: BenchReport) -> None:
        """A benchmark and the decision taken."""

    def state_changed(self) -> None:
        """Device state (active model, update state) changed: republish it."""

    def request_chunks(self, deployment_id: str, sha256: str, missing: list[int]) -> None:
        """Ask the controller for chunks of one file."""


class UpdateMachine:
    """Drives one device's updates. See the module docstring.

    Example:
        >>> machine = UpdateMachine(cfg, reporter=reporter, public_key=key)  # doctest: +SKIP
        >>> machine.resume(); machine.handle_desired(payload)  # doctest: +SKIP
    """

    def __init__(
        self,
        config: AgentConfig,
        *,
        reporter: Reporter,
        public_key: Ed25519PublicKey,
        cancel: threading.Event | None = None,
    ) -> None:
        self.cfg = config
        self.reporter = reporter
        self.public_key = public_key
        self.cancel = cancel or threading.Event()
        self.journal = Journal(config.journal_path)
        self.data: JournalData = self.journal.load()
        self.slots = SlotStore(config.slots_dir)
        self.formats = [f for f in config.device_profile.formats if f in available_formats()]
        self._downloader: Downloader | None = None
        self._pending: Desired | None = None
        self._chunk_reports = 0
        self.rejected: Counter[str] = Counter()
        """Refused desired payloads by reason code (malformed, replayed, expired, bad signature, ...)."""

    # ----------------------------------------------------------------------------- views

    @property
    def state(self) -> State:
        """Current (persisted) state."""
        return State(self.data.state) if self.data.state in State.__members__.values() else State.ROLLBACK

    @property
    def desired(self) -> Desired | None:
        """The deployment in progress."""
        return Desired.model_validate(self.data.desired) if self.data.desired else None

    def active(self) -> ModelRef | None:
        """The committed model that is running."""
        slot = self.slots.current()
        return slot.model_ref() if slot else None

    def previous(self) -> ModelRef | None:
        """The model the last commit replaced, if still on disk."""
        slot = self.slots.previous()
        return slot.model_ref() if slot else None

    # ----------------------------------------------------------------------------- inputs

    def resume(self) -> State:
        """On start-up: map the last persisted state to a safe one, re-enter it and run.

        Returns:
            The state re-entered (before running it).
        """
        persisted = self.data.state
        target = resume_state(persisted) if self.data.deployment_id else State.IDLE
        if target is State.IDLE:
            if persisted != State.IDLE.value:
                self._enter(State.IDLE, detail=f"resumed from {persisted!r} without a deployment")
            return State.IDLE
        log.info("resuming deployment %s: persisted %r -> %r", self.data.deployment_id, persisted, target.value)
        self._enter(target, detail=f"resumed after restart in {persisted!r}")
        self.run()
        return target

    def handle_desired(self, payload: bytes) -> None:
        """A (retained) Desired arrived: check it fully, then start, ignore or reject it."""
        if not payload:  # the controller cleared its retained desired: stop a download, keep everything else
            if self.state is State.DOWNLOAD:
                self._fail(ReasonCode.CANCELLED, "controller cleared the desired state")
                self.run()
            return
        try:
            desired = decode(Desired, payload)
        except ProtocolError as exc:
            self._reject(_guess_deployment(payload), exc.reason, exc.detail)
            return
        dep = desired.deployment_id
        if dep == self.data.deployment_id or dep in self.data.finished:
            log.debug("desired %s already handled", dep)
            return
        try:
            self._check_desired(desired)
        except (ProtocolError, AgentError) as exc:
            self._reject(dep, exc.reason, exc.detail)
            return
        if desired.grant is not None:  # the newest accepted instruction: anything older is a replay
            self.data.grant_serial = max(self.data.grant_serial, desired.grant.serial)
        if self.state is State.DOWNLOAD:  # the newest valid intent wins over a download in progress
            self._fail(ReasonCode.SUPERSEDED, f"superseded by deployment {dep}")
            self.run()
        active = self.active()
        if active is not None and active == model_ref(desired.manifest):
            self._finish_without_update(dep, f"{active.model_id}@{active.version} is already active")
            return
        if self.state is not State.IDLE:
            self._pending = desired
            return
        self._start(desired)

    def handle_chunk(self, sha256: str, index: int, payload: bytes) -> None:
        """A chunk arrived; ignored unless it belongs to the download in progress."""
        if self.state is not State.DOWNLOAD or self._downloader is None:
            log.debug("chunk %d of %s outside a download; dropped", index, sha256[:12])
            return
        try:
            outcome = self._downloader.on_chunk(sha256, index, payload)
        except OSError as exc:  # a chunk that cannot be stored will not be stored on the next try either
            code = ReasonCode.DISK_FULL if exc.errno == errno.ENOSPC else ReasonCode.INTERRUPTED
            self._fail(code, f"cannot store chunk {index} of {sha256[:12]}…: {exc}")
            self.run()
            return
        if outcome is ChunkOutcome.CORRUPT and self._downloader.corrupt > self._downloader.corrupt_budget:
            self._fail(
                ReasonCode.CHUNK_CORRUPT,
                f"{self._downloader.corrupt} corrupt chunks: the sender or the link is broken, giving up",
            )
            self.run()
            return
        if outcome is ChunkOutcome.CORRUPT and self._chunk_reports < MAX_CHUNK_REPORTS:
            self._chunk_reports += 1
            self._report(
                State.DOWNLOAD, ReasonCode.CHUNK_CORRUPT, f"chunk {index} of {sha256[:12]}… rejected; re-requested"
            )
        if self._downloader.complete():
            self.run()

    def tick(self) -> None:
        """Timers: re-request missing chunks, download timeout, retry a step that hit an unexpected error."""
        state = self.state
        if state is State.DOWNLOAD and self._downloader is not None:
            if self._downloader.stalled_for() > self.cfg.download_timeout_s:
                self._fail(
                    ReasonCode.DOWNLOAD_TIMEOUT,
                    f"no chunk for {self.cfg.download_timeout_s:.0f}s; "
                    f"{self._downloader.missing_count()} chunks still missing",
                )
                self.run()
            else:
                self._downloader.tick(self.cfg.rerequest_interval_s)
        elif state is not State.IDLE or self._pending is not None:
            self.run()

    # ----------------------------------------------------------------------------- driving

    def run(self) -> None:
        """Run steps until the machine waits for chunks or is idle (then start a pending desired)."""
        while True:
            state = self.state
            if state is State.IDLE:
                if self._pending is None:
                    return
                pending, self._pending = self._pending, None
                if pending.deployment_id not in self.data.finished:
                    self._start(pending)
                continue
            if state is State.DOWNLOAD:
                if not self._download_ready():
                    return
                try:
                    self._fire(Event.DOWNLOADED, detail=f"{self._corrupt_note()}all chunks verified")
                except UpdateError as exc:  # the next state could not be persisted (disk full)
                    self._fail(exc.reason, exc.detail)
                continue
            try:
                event = self._step(state)
            except BenchCancelled:
                raise
            except (UpdateError, ProtocolError) as exc:
                self._fail(exc.reason, exc.detail)
                continue
            except Exception as exc:  # noqa: BLE001 - unexpected faults must still end in rollback
                if state not in PRE_COMMIT:
                    raise
                log.exception("unexpected error in %s", state.value)
                code = ReasonCode.DISK_FULL if getattr(exc, "errno", None) == errno.ENOSPC else ReasonCode.INTERRUPTED
                self._fail(code, f"{type(exc).__name__}: {exc}")
                continue
            try:
                self._fire(event)
            except UpdateError as exc:  # the next state could not be persisted (disk full)
                self._fail(exc.reason, exc.detail)

    def _step(self, state: State) -> Event:
        steps = {
            State.VERIFY: self._verify,
            State.INSTALL: self._install,
            State.BENCHMARK: self._benchmark,
            State.COMMIT: self._commit,
            State.ROLLBACK: self._rollback,
            State.FAILURE: self._failure,
        }
        return steps[state]()

    def _fire(self, event: Event, *, detail: str = "") -> None:
        self._enter(next_state(self.state, event), detail=detail)

    def _fail(self, reason: ReasonCode, detail: str) -> None:
        """The one rollback decision: any failure before commit goes to rollback, which keeps the active slot."""
        if self.state not in PRE_COMMIT:
            log.error("failure %s in %s ignored: past the point of no return", reason.value, self.state.value)
            return
        log.warning("deployment %s failed in %s: %s: %s", self.data.deployment_id, self.state.value, reason, detail)
        self.data.reason = reason.value
        self.data.detail = detail
        self._fire(Event.FAIL, detail=detail)

    def _enter(self, state: State, *, detail: str = "") -> None:
        """Persist, then report. The step of ``state`` runs only after this returns."""
        d = self.data
        if state is not State.IDLE:
            d.store_count += 1
        if d.store_count > MAX_STATE_STORES and state in PRE_COMMIT | {State.COMMIT}:
            if state is not State.COMMIT:
                d.reason = ReasonCode.INTERRUPTED.value
                d.detail = detail = f"gave up after {d.store_count} state changes (crash loop?)"
                state = State.ROLLBACK
        elif d.store_count > MAX_STATE_STORES + 8 and state in (State.ROLLBACK, State.FAILURE):
            log.error("rollback of %s keeps failing; forcing idle", d.deployment_id)
            if d.deployment_id:
                d.remember_finished(d.deployment_id)  # so its retained desired does not start the loop again
            state = State.IDLE
        reason = ReasonCode(d.reason) if state in (State.ROLLBACK, State.FAILURE) else ReasonCode.OK
        if state is State.FAILURE or (state is State.ROLLBACK and not detail):
            detail = d.detail
        deployment = d.deployment_id
        d.state = state.value
        if state is State.IDLE:
            d.clear_deployment()
            self._downloader = None
        d.job_seq += 1
        self._persist(d, state)
        if deployment:
            self.reporter.job(self._job(deployment, d.job_seq, state, reason, detail))
        self.reporter.state_changed()

    def _persist(self, d: JournalData, state: State) -> None:
        """Write the journal; a full disk must not wedge the machine.

        Going forward (verify, install, benchmark, commit) without a persisted state is never done:
        the step fails with ``disk_full`` and the machine rolls back. Going back (rollback, failure,
        idle) first frees what this update wrote (its downloaded chunks) and retries; if the disk is
        still full (filled by someone else) it goes on unpersisted: those states only keep the active
        slot, and a restart resumes from the last persisted state, which is just as safe.
        """
        try:
            self.journal.save(d)
            return
        except OSError as exc:
            if exc.errno != errno.ENOSPC:
                raise
            if state not in (State.ROLLBACK, State.FAILURE, State.IDLE):
                raise UpdateError(ReasonCode.DISK_FULL, f"cannot persist state {state.value!r}: {exc}") from exc
        try:
            (self._downloader or self._new_downloader()).discard()
        except (UpdateError, ValueError, OSError):
            log.warning("could not free the downloads of %s", d.deployment_id, exc_info=True)
        try:
            self.journal.save(d)
        except OSError as exc:
            log.error("disk full: state %r not persisted (%s); the active model is untouched", state.value, exc)

    def _job(self, deployment: str, seq: int, state: State, reason: ReasonCode, detail: str) -> JobReport:
        return JobReport(
            device_id=self.cfg.device_id, deployment_id=deployment, seq=seq, state=state, reason=reason, detail=detail
        )

    def _report(self, state: State, reason: ReasonCode, detail: str, deployment: str | None = None) -> None:
        """A JobReport that is not a transition (rejection, corrupt chunk); still a fresh seq."""
        deployment = deployment or self.data.deployment_id
        if not deployment:
            return
        self.data.job_seq += 1
        self.journal.save(self.data)
        self.reporter.job(self._job(deployment, self.data.job_seq, state, reason, detail))

    # ----------------------------------------------------------------------------- acceptance

    def _check_desired(self, desired: Desired) -> None:
        """Everything that can be checked before a byte is written; signature first."""
        m = desired.manifest
        verify_manifest(m, self.public_key)
        self._check_grant(desired)
        profile = self.cfg.device_profile
        if m.profile != profile.id:
            raise ProtocolError(
                ReasonCode.WRONG_PROFILE, f"artifact built for profile {m.profile!r}, this device is {profile.id!r}"
            )
        if m.format not in self.formats:
            missing = missing_runtimes(list(profile.runtimes), profile.arch)
            raise UnsupportedFormatError(m.format, self.formats, "; ".join(f"{k}: {v}" for k, v in missing.items()))
        roles = sorted(ref.role for ref in m.files)
        names = {ref.filename for ref in m.files} | {"manifest.json", "baseline.json"}
        if roles != ["golden", "model"] or len(names) != len(m.files) + 2:
            raise ProtocolError(
                ReasonCode.MALFORMED_PAYLOAD,
                f"manifest needs one model and one golden file with distinct names, got {roles}",
            )
        budget = self.cfg.artifact_budget_bytes
        for ref in m.files:
            if ref.size > budget:
                raise ProtocolError(
                    ReasonCode.SIZE_EXCEEDED,
                    f"{ref.role} file is {ref.size / 2**20:.1f} MiB, budget is {budget / 2**20:.1f} MiB",
                )
            if ref.chunk_count != expected_chunk_count(ref):
                raise ProtocolError(
                    ReasonCode.MALFORMED_PAYLOAD,
                    f"{ref.role} file lists {ref.chunk_count} chunk hashes, its size needs {expected_chunk_count(ref)}",
                )
        self.cfg.data_dir.mkdir(parents=True, exist_ok=True)
        need = 3 * sum(ref.size for ref in m.files)  # chunks + assembled file + slot copy
        free = shutil.disk_usage(self.cfg.data_dir).free
        if free < need:
            raise ProtocolError(ReasonCode.DISK_FULL, f"need {need / 2**20:.1f} MiB free, have {free / 2**20:.1f} MiB")

    def _check_grant(self, desired: Desired) -> None:
        """The controller's signed grant binds this manifest to this deployment and device, is not
        expired, not older than the newest grant accepted, and not a downgrade without a signed
        rollback instruction naming the model (see :mod:`common.grant`)."""
        if desired.grant is None and self.cfg.accept_ungranted:
            return
        grant = verify_grant(desired.grant, self.public_key)
        m = desired.manifest
        check_grant_binding(grant, manifest=m, deployment_id=desired.deployment_id, kind=desired.kind,
                            fleet=self.cfg.fleet, device_id=self.cfg.device_id, profile=self.cfg.device_profile.id)
        if grant.serial <= self.data.grant_serial:
            raise ProtocolError(ReasonCode.REPLAYED, f"grant serial {grant.serial} is not newer than the last one "
                                                     f"accepted ({self.data.grant_serial}): an old instruction")
        floor = self.data.version_floor.get(m.model_id, 0)
        if grant.counter < floor and grant.rollback_to != m.blob("model").sha256:
            raise ProtocolError(ReasonCode.ROLLBACK_REFUSED,
                                f"{m.model_id}@{m.version} has version counter {grant.counter}, below the "
                                f"{floor} this device committed, and no signed rollback instruction names it")

    def _reject(self, deployment: str | None, reason: ReasonCode, detail: str) -> None:
        """Refuse a desired without touching the running deployment or the active model."""
        self.rejected[reason.value] += 1
        log.warning("rejected desired %s: %s: %s", deployment or "(unknown deployment)", reason.value, detail[:500])
        if deployment is None:
            return
        if deployment == self.data.deployment_id:
            self._report(self.state, reason, detail)
            return
        self.data.remember_finished(deployment)
        self._report(State.FAILURE, reason, detail, deployment)

    def _finish_without_update(self, deployment: str, detail: str) -> None:
        """A desired naming the model already active: nothing to install, reported as committed."""
        log.info("deployment %s: %s", deployment, detail)
        self.data.remember_finished(deployment)
        self._report(State.COMMIT, ReasonCode.OK, detail, deployment)

    def _start(self, desired: Desired) -> None:
        self.data.clear_deployment()
        self.data.deployment_id = desired.deployment_id
        self.data.desired = desired.model_dump(mode="json")
        self._chunk_reports = 0
        m = desired.manifest
        self._fire(Event.START, detail=f"{m.model_id}@{m.version} ({m.technique}, {m.format})")
        self.run()

    # ----------------------------------------------------------------------------- steps

    def _manifest(self) -> Manifest:
        desired = self.desired
        if desired is None:
            raise UpdateError(ReasonCode.INTERRUPTED, "journal lost the deployment's manifest")
        return desired.manifest

    def _new_downloader(self, *, reuse_local: bool = False) -> Downloader:
        deployment = self.data.deployment_id or ""
        return Downloader(
            self.cfg.downloads_dir,
            self._manifest(),
            lambda sha, missing: self.reporter.request_chunks(deployment, sha, missing),
            window=self.cfg.chunk_window,
            local=self.slots.local_files() if reuse_local else None,
        )

    def _download_ready(self) -> bool:
        """True when all chunks are on disk; otherwise make sure requests are out."""
        if self._downloader is None:
            self._downloader = self._new_downloader(reuse_local=True)
            if not self._downloader.complete():
                self._downloader.start()
        return self._downloader.complete()

    def _corrupt_note(self) -> str:
        dl = self._downloader
        notes = []
        if dl and dl.reused:
            notes.append(f"{dl.reused} chunk(s) reused from files already on the device; ")
        if dl and dl.corrupt:
            notes.append(f"{dl.corrupt} corrupt chunk(s) re-requested; ")
        return "".join(notes)

    def _verify(self) -> Event:
        verify_manifest(self._manifest(), self.public_key)  # the journal copy, checked again
        downloader = self._downloader or self._new_downloader()
        downloader.assemble()
        return Event.VERIFIED

    def _install(self) -> Event:
        manifest = self._manifest()
        slot = self.slots.inactive()
        self.data.candidate_slot = slot.name
        self.journal.save(self.data)
        sources = (self._downloader or self._new_downloader()).assemble()
        slot.install(manifest, sources)
        return Event.INSTALLED

    def _candidate(self) -> Slot:
        name = self.data.candidate_slot
        if name not in self.slots.slots or name == self.slots.current_name():
            raise UpdateError(ReasonCode.INTERRUPTED, f"candidate slot {name!r} is not installable")
        return self.slots.slots[name]  # type: ignore[index]

    def _spec(self, slot: Slot, manifest: Manifest) -> BenchSpec:
        # The TensorRT recipe belongs to the model in the slot (the active model re-measured as a
        # baseline keeps its own), not to the manifest whose thresholds and metric are applied.
        installed = slot.manifest()
        recipe = installed.tensorrt_recipe if installed is not None else manifest.tensorrt_recipe
        return BenchSpec(
            model_path=slot.file("model"),
            golden_path=slot.file("golden"),
            format=manifest.format,
            quality_metric=manifest.quality_metric,
            threads=self.cfg.effective_threads,
            runs=self.cfg.bench_runs,
            warmup=self.cfg.bench_warmup,
            providers=list(self.cfg.device_profile.execution_providers),
            tensorrt_recipe=recipe.model_dump(mode="json") if recipe is not None else None,
            engine_cache_dir=self.cfg.engines_dir,
            ort_tuning=self.cfg.device_profile.onnxruntime.model_dump(mode="json"),
        )

    def _bench(self, slot: Slot, manifest: Manifest) -> BenchMetrics:
        return run_benchmark(self._spec(slot, manifest), timeout_s=self.cfg.bench_timeout_s, cancel=self.cancel)

    def _baseline(self, candidate_manifest: Manifest) -> tuple[ModelRef | None, BenchMetrics | None, str]:
        """The active model's on-device figures: stored in its slot, else measured now."""
        active = self.slots.current()
        manifest = active.manifest() if active else None
        if active is None or manifest is None:
            return None, None, ""
        stored = None if self.cfg.fresh_baseline else active.baseline()
        if stored is not None and stored.quality_metric == candidate_manifest.quality_metric:
            return model_ref(manifest), stored, ""
        try:
            metrics = self._bench(active, candidate_manifest.model_copy(update={"format": manifest.format}))
        except BenchmarkError as exc:
            return model_ref(manifest), None, f"active model could not be benchmarked ({exc.detail}); "
        active.write_baseline(metrics)
        return model_ref(manifest), metrics, ""

    def _benchmark(self) -> Event:
        manifest = self._manifest()
        slot = self._candidate()
        installed = slot.verify()
        if installed.blob("model").sha256 != manifest.blob("model").sha256:
            raise UpdateError(ReasonCode.HASH_MISMATCH, f"slot {slot.name} holds a different model than deployed")
        candidate = self._bench(slot, manifest)
        reinstating = self._reinstating()
        if reinstating:  # the abandoned model is not the reference for a rollback: no need to measure it
            active_slot = self.slots.current()
            active_manifest = active_slot.manifest() if active_slot else None
            base_ref = model_ref(active_manifest) if active_manifest else None
            baseline, note = (active_slot.baseline() if active_slot else None), ""
        else:
            base_ref, baseline, note = self._baseline(manifest)
        verdict = decide(candidate, baseline, manifest.thresholds, reinstating=reinstating)
        notes = [note] if note else []
        active = self.slots.current()
        if verdict.latency_only and baseline is not None and active is not None and not reinstating:
            # Latency is the one figure a busy CPU distorts: confirm with both models measured back to back.
            log.info("latency regression on first measurement; re-measuring active and candidate back to back")
            first = candidate.latency_p95_ms
            baseline = self._bench(active, manifest.model_copy(update={"format": active.manifest().format}))
            candidate = self._bench(slot, manifest)
            verdict = decide(candidate, baseline, manifest.thresholds)
            notes.append(
                f"latency re-measured back to back (first candidate p95 {first:.3f} ms): "
                + ("confirmed" if not verdict.commit else "was noise")
            )
        reasons = notes + verdict.reasons
        self.data.candidate_metrics = candidate.model_dump(mode="json")
        self.data.baseline_metrics = baseline.model_dump(mode="json") if baseline else None
        self.data.decision_reasons = reasons
        self.journal.save(self.data)
        self.reporter.bench(
            BenchReport(
                device_id=self.cfg.device_id,
                deployment_id=self.data.deployment_id or "",
                candidate=model_ref(manifest),
                candidate_metrics=candidate,
                baseline=base_ref,
                baseline_metrics=baseline,
                decision=verdict.decision,  # type: ignore[arg-type]
                reasons=reasons,
            )
        )
        if not verdict.commit:
            raise UpdateError(verdict.reason, "; ".join(r for r in verdict.reasons if not r.startswith("ok:")))
        return Event.PASSED

    def committed_models(self) -> set[str]:
        """Model sha256s this device committed itself: the journal's history plus the active slot
        (journals written before the history existed still know their running model)."""
        known = set(self.data.committed)
        active = self.active()
        if active is not None:
            known.add(active.sha256)
        return known

    def _reinstating(self) -> bool:
        """A fleet rollback (``Desired.kind="rollback"``) to a model this device committed before.

        Both conditions are required: a "rollback" naming a model the device never ran is gated
        like any candidate, so the flag cannot smuggle an untested model past the gate.
        """
        desired = self.desired
        if desired is None or desired.kind != "rollback":
            return False
        return desired.manifest.blob("model").sha256 in self.committed_models()

    def _commit(self) -> Event:
        slot = self._committable()
        if self.data.candidate_metrics:
            slot.write_baseline(BenchMetrics.model_validate(self.data.candidate_metrics))
        manifest = slot.manifest()
        if manifest is not None:
            self.data.remember_committed(manifest.blob("model").sha256)
            grant = self.desired.grant if self.desired is not None else None
            if grant is not None and grant.model_id == manifest.model_id:
                floors = self.data.version_floor
                floors[grant.model_id] = max(floors.get(grant.model_id, 0), grant.counter)
        self.slots.activate(slot.name)
        self._cleanup_downloads()
        self._prune_engines()
        if self.data.deployment_id:
            self.data.remember_finished(self.data.deployment_id)
        return Event.COMMITTED

    def _committable(self) -> Slot:
        name = self.data.candidate_slot
        if name not in self.slots.slots:
            raise RuntimeError(f"commit without a candidate slot ({name!r}); journal damaged")
        return self.slots.slots[name]  # type: ignore[index]

    def _rollback(self) -> Event:
        name = self.data.candidate_slot
        if name in self.slots.slots and name != self.slots.current_name():
            self.slots.slots[name].clear()  # type: ignore[index]
        self._cleanup_downloads()
        self._prune_engines()
        return Event.ROLLED_BACK

    def _failure(self) -> Event:
        if self.data.deployment_id:
            self.data.remember_finished(self.data.deployment_id)
        return Event.REPORTED

    def _prune_engines(self) -> None:
        """Drop TensorRT engines of models neither slot holds any more (they are large, and a model
        that comes back is rebuilt from its recipe). Never fails the step it runs in."""
        keep = {ref.sha256 for slot in self.slots.slots.values() if (m := slot.manifest()) for ref in m.files
                if ref.role == "model"}
        try:
            removed = EngineCache(self.cfg.engines_dir).prune(keep)
        except OSError:
            log.warning("could not prune the engine cache", exc_info=True)
            return
        if removed:
            log.info("removed %d cached engine(s) of models no longer installed", len(removed))

    def _cleanup_downloads(self) -> None:
        if self.data.desired is None:
            return
        try:
            (self._downloader or self._new_downloader()).discard()
        except (UpdateError, ValueError, OSError):
            log.warning("could not clean up downloads of %s", self.data.deployment_id, exc_info=True)
        self._downloader = None


def _guess_deployment(payload: bytes) -> str | None:
    """Best-effort deployment id from a payload that failed validation, so the rejection can be reported."""
    if len(payload) > MAX_MESSAGE_BYTES or nesting_depth(payload) > MAX_NESTING:
        return None
    try:
        data = json.loads(payload)
        dep = data.get("deployment_id") if isinstance(data, dict) else None
        return validate_id(dep, "deployment id") if isinstance(dep, str) else None
    except (ValueError, TopicError, RecursionError):
        return None
