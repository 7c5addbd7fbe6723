"""Journal resume per state: fake a persisted state on disk, call resume(), check where the machine goes.

No broker here: the Reporter is a recording object (the machine's only output seam); the
slots, journal, chunk files and benchmark subprocess are all real.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.config import AgentConfig
from agent.download import BlobDownload
from agent.journal import Journal, JournalData
from agent.slots import SlotStore
from agent.update.machine import MAX_STATE_STORES, UpdateMachine
from agent.update.states import RESUME, TRANSITIONS, Event, InvalidTransition, State, next_state, resume_state
from common.errors import ReasonCode
from common.manifest import read_chunk
from common.messages import Desired

from .artifacts import Recorder, granted, make_artifact

EXPECTED_RESUME = {
    State.IDLE: State.IDLE,
    State.DOWNLOAD: State.DOWNLOAD,
    State.VERIFY: State.VERIFY,
    State.INSTALL: State.VERIFY,
    State.BENCHMARK: State.BENCHMARK,
    State.COMMIT: State.COMMIT,
    State.ROLLBACK: State.ROLLBACK,
    State.FAILURE: State.ROLLBACK,
}




def test_state_values_never_change():
    assert [s.value for s in State] == [
        "idle", "download", "verify", "install", "benchmark", "commit", "rollback", "failure"
    ]


def test_every_pre_commit_state_fails_to_rollback_and_commit_cannot():
    for state in (State.DOWNLOAD, State.VERIFY, State.INSTALL, State.BENCHMARK):
        assert next_state(state, Event.FAIL) is State.ROLLBACK
    for state in (State.IDLE, State.COMMIT, State.ROLLBACK, State.FAILURE):
        with pytest.raises(InvalidTransition):
            next_state(state, Event.FAIL)
    assert all(isinstance(v, State) for v in TRANSITIONS.values())


def test_resume_table_covers_every_state():
    assert RESUME == EXPECTED_RESUME
    assert resume_state("no-such-state") is State.ROLLBACK


@pytest.fixture
def env(tmp_path, keypair, reference):
    cfg = AgentConfig(
        device_id="unit-1", fleet="unit", profile_id="x86-edge", data_dir=tmp_path / "data",
        controller_key=keypair[1], threads=1, bench_runs=5, bench_warmup=1,
    )
    v1 = make_artifact(tmp_path, reference.good_model(), reference, keypair[0], version="v1")
    v2 = make_artifact(tmp_path, reference.slightly_perturbed_model(), reference, keypair[0], version="v2")
    slots = SlotStore(cfg.slots_dir)
    slots.slots["a"].install(v1.manifest, v1.paths)
    slots.activate("a")
    return cfg, v1, v2


def _persist(cfg: AgentConfig, state: State, desired: Desired | None, **fields) -> None:
    data = JournalData(state=state.value, store_count=3, job_seq=10)
    if desired is not None:
        data.deployment_id = desired.deployment_id
        data.desired = desired.model_dump(mode="json")
    for key, value in fields.items():
        setattr(data, key, value)
    Journal(cfg.journal_path).save(data)


def _store_chunks(cfg: AgentConfig, artifact, fraction: float = 1.0) -> None:
    for ref in artifact.manifest.files:
        blob = BlobDownload(cfg.downloads_dir, ref)
        for i in range(int(ref.chunk_count * fraction)):
            blob.accept(i, read_chunk(artifact.paths[ref.role], i, ref.chunk_size))


def _prepare(state: State, cfg: AgentConfig, v2) -> None:
    desired = Desired(deployment_id="d-resume", manifest=v2.manifest)
    slots = SlotStore(cfg.slots_dir)
    if state is State.IDLE:
        _persist(cfg, state, None)
    elif state is State.DOWNLOAD:
        _store_chunks(cfg, v2, fraction=0.5)
        _persist(cfg, state, desired)
    elif state in (State.VERIFY, State.INSTALL):
        _store_chunks(cfg, v2)
        _persist(cfg, state, desired, candidate_slot="b")
        if state is State.INSTALL:  # crashed half-way through the copy
            (cfg.slots_dir / "b").mkdir(parents=True, exist_ok=True)
            (cfg.slots_dir / "b" / "model.onnx").write_bytes(b"half")
    else:
        slots.slots["b"].install(v2.manifest, v2.paths)
        metrics = None
        if state is State.COMMIT:
            metrics = {"latency_p50_ms": 0.1, "latency_p95_ms": 0.2, "load_ms": 1.0, "peak_rss_delta_mb": 1.0,
                       "quality": 1.0, "quality_metric": "cosine", "runs": 5, "runtime": "onnxruntime"}
        reason = ReasonCode.REGRESSION_QUALITY.value if state in (State.ROLLBACK, State.FAILURE) else "ok"
        _persist(cfg, state, desired, candidate_slot="b", candidate_metrics=metrics, reason=reason)


# what the device runs once the resumed state has run to its end
FINAL_ACTIVE = {
    State.IDLE: "v1", State.DOWNLOAD: "v1", State.VERIFY: "v2", State.INSTALL: "v2", State.BENCHMARK: "v2",
    State.COMMIT: "v2", State.ROLLBACK: "v1", State.FAILURE: "v1",
}


@pytest.mark.parametrize("state", list(State), ids=lambda s: s.value)
def test_resume_from_each_persisted_state(state: State, env):
    cfg, v1, v2 = env
    _prepare(state, cfg, v2)
    rec = Recorder()
    machine = UpdateMachine(cfg, reporter=rec, public_key=_key(cfg))
    entered = machine.resume()
    assert entered is EXPECTED_RESUME[state]
    assert machine.active().version == FINAL_ACTIVE[state]
    journal = Journal(cfg.journal_path).load()
    if state is State.DOWNLOAD:
        assert machine.state is State.DOWNLOAD and journal.state == "download"
        model, golden = v2.manifest.blob("model"), v2.manifest.blob("golden")
        asked = [m for _, sha, m in rec.requests if sha == model.sha256]  # only the missing half is asked for
        assert asked == [list(range(int(model.chunk_count * 0.5), model.chunk_count))]
        assert not [m for _, sha, m in rec.requests if sha == golden.sha256]  # same golden as v1: taken from slot a
        return
    assert machine.state is State.IDLE and journal.state == "idle" and journal.deployment_id is None
    if state is State.IDLE:
        assert rec.jobs == []
        return
    states = [r.state for r in rec.jobs]
    assert states[0] == EXPECTED_RESUME[state].value and "resumed after restart" in rec.jobs[0].detail
    assert states[-1] == "idle" and all(r.seq > 10 for r in rec.jobs)
    assert "d-resume" in journal.finished
    if FINAL_ACTIVE[state] == "v1":
        assert "failure" in states and SlotStore(cfg.slots_dir).slots["b"].manifest() is None
    else:
        assert "commit" in states and SlotStore(cfg.slots_dir).current_name() == "b"


def test_crash_loop_gives_up_and_rolls_back(env):
    """A candidate that kills the agent on every benchmark must not loop forever (Mender's store counter)."""
    cfg, v1, v2 = env
    SlotStore(cfg.slots_dir).slots["b"].install(v2.manifest, v2.paths)
    desired = Desired(deployment_id="d-loop", manifest=v2.manifest)
    _persist(cfg, State.BENCHMARK, desired, candidate_slot="b", store_count=MAX_STATE_STORES)
    rec = Recorder()
    machine = UpdateMachine(cfg, reporter=rec, public_key=_key(cfg))
    assert machine.resume() is State.BENCHMARK
    assert [r.state for r in rec.jobs] == ["rollback", "failure", "idle"]
    assert rec.jobs[0].reason is ReasonCode.INTERRUPTED and rec.benches == []
    assert machine.active().version == "v1"


def test_retained_desired_of_finished_deployment_is_ignored(env):
    cfg, v1, v2 = env
    _persist(cfg, State.IDLE, None, finished=["d-old"])
    rec = Recorder()
    machine = UpdateMachine(cfg, reporter=rec, public_key=_key(cfg))
    machine.resume()
    machine.handle_desired(_wire(Desired(deployment_id="d-old", manifest=v2.manifest), cfg))
    assert rec.jobs == [] and rec.requests == [] and machine.state is State.IDLE


def test_new_desired_supersedes_a_download(env):
    cfg, v1, v2 = env
    rec = Recorder()
    machine = UpdateMachine(cfg, reporter=rec, public_key=_key(cfg))
    machine.handle_desired(_wire(Desired(deployment_id="d-first", manifest=v2.manifest), cfg))
    assert machine.state is State.DOWNLOAD
    v3 = v2.manifest.model_copy(update={"version": "v3"})
    from common.manifest import sign_manifest

    key = _private(cfg)
    machine.handle_desired(_wire(Desired(deployment_id="d-second", manifest=sign_manifest(v3, key)), cfg))
    first = [(r.state, r.reason) for r in rec.jobs if r.deployment_id == "d-first"]
    assert first[-3:] == [("rollback", ReasonCode.SUPERSEDED), ("failure", ReasonCode.SUPERSEDED), ("idle", "ok")]
    assert machine.state is State.DOWNLOAD and machine.data.deployment_id == "d-second"


def _wire(desired: Desired, cfg: AgentConfig) -> bytes:
    """The desired as FleetService publishes it: with the controller's signed grant for this device."""
    return granted(desired, _private(cfg), cfg.device_id, cfg.fleet).to_bytes()


def _key(cfg: AgentConfig):
    from common.keys import load_public_key

    return load_public_key(cfg.controller_key)


def _private(cfg: AgentConfig):
    from cryptography.hazmat.primitives import serialization

    return serialization.load_pem_private_key(Path(cfg.controller_key).with_suffix(".key").read_bytes(), None)


def test_cleared_desired_cancels_a_download(env):
    cfg, v1, v2 = env
    rec = Recorder()
    machine = UpdateMachine(cfg, reporter=rec, public_key=_key(cfg))
    machine.handle_desired(_wire(Desired(deployment_id="d-cancel", manifest=v2.manifest), cfg))
    assert machine.state is State.DOWNLOAD
    machine.handle_desired(b"")
    assert [(r.state, r.reason) for r in rec.jobs][-3:] == [
        ("rollback", ReasonCode.CANCELLED), ("failure", ReasonCode.CANCELLED), ("idle", ReasonCode.OK)
    ]
    assert machine.active().version == "v1" and not any(cfg.downloads_dir.glob("*/*.chunk"))
    machine.handle_desired(b"")  # idle: nothing to cancel
    assert machine.state is State.IDLE


def test_damaged_journal_manifest_still_rolls_back(env):
    cfg, v1, v2 = env
    Journal(cfg.journal_path).save(JournalData(state="verify", deployment_id="d-damaged", desired={"garbage": True}))
    rec = Recorder()
    machine = UpdateMachine(cfg, reporter=rec, public_key=_key(cfg))
    machine.resume()
    assert [r.state for r in rec.jobs] == ["verify", "rollback", "failure", "idle"]
    assert machine.state is State.IDLE and machine.active().version == "v1"


def test_desired_for_the_active_model_supersedes_a_download(env):
    cfg, v1, v2 = env
    rec = Recorder()
    machine = UpdateMachine(cfg, reporter=rec, public_key=_key(cfg))
    machine.handle_desired(_wire(Desired(deployment_id="d-v2", manifest=v2.manifest), cfg))
    assert machine.state is State.DOWNLOAD
    machine.handle_desired(_wire(Desired(deployment_id="d-back-to-v1", manifest=v1.manifest), cfg))
    assert [(r.deployment_id, r.state, r.reason) for r in rec.jobs][-4:] == [
        ("d-v2", "rollback", ReasonCode.SUPERSEDED), ("d-v2", "failure", ReasonCode.SUPERSEDED),
        ("d-v2", "idle", ReasonCode.OK), ("d-back-to-v1", "commit", ReasonCode.OK),
    ]
    assert machine.state is State.IDLE and machine.active().version == "v1"


def test_chunk_that_cannot_be_stored_fails_the_download(env, monkeypatch):
    import errno

    import agent.download

    cfg, v1, v2 = env
    rec = Recorder()
    machine = UpdateMachine(cfg, reporter=rec, public_key=_key(cfg))
    machine.handle_desired(_wire(Desired(deployment_id="d-full", manifest=v2.manifest), cfg))

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(agent.download, "atomic_write_bytes", full)
    ref = v2.manifest.blob("model")
    machine.handle_chunk(ref.sha256, 0, read_chunk(v2.paths["model"], 0, ref.chunk_size))
    assert [(r.state, r.reason) for r in rec.jobs][-3:-1] == [
        ("rollback", ReasonCode.DISK_FULL), ("failure", ReasonCode.DISK_FULL)
    ]
    assert machine.state is State.IDLE and machine.active().version == "v1"


def test_endless_corrupt_chunks_end_the_download(env):
    cfg, v1, v2 = env
    rec = Recorder()
    machine = UpdateMachine(cfg, reporter=rec, public_key=_key(cfg))
    machine.handle_desired(_wire(Desired(deployment_id="d-evil", manifest=v2.manifest), cfg))
    ref = v2.manifest.blob("model")
    budget = machine._downloader.corrupt_budget  # noqa: SLF001 - the budget is what the test exhausts
    for _ in range(budget + 1):
        machine.handle_chunk(ref.sha256, 0, b"\0" * ref.chunk_size)
    assert [(r.state, r.reason) for r in rec.jobs][-3:-1] == [
        ("rollback", ReasonCode.CHUNK_CORRUPT), ("failure", ReasonCode.CHUNK_CORRUPT)
    ]
    assert len([r for r in rec.jobs if r.state == "download" and r.reason is ReasonCode.CHUNK_CORRUPT]) == 5
    assert machine.state is State.IDLE and machine.active().version == "v1"


def test_full_disk_that_blocks_the_journal_still_rolls_back_and_reports(env, monkeypatch):
    """Found by the fault campaign: chunks filled the disk, then the journal could not be written and the
    agent looped on the error without ever reporting. Now the step fails with disk_full, the download is
    freed, and the rollback is reported even if the journal stays unwritable."""
    import errno

    from agent.journal import Journal as JournalClass

    cfg, v1, v2 = env
    rec = Recorder()
    machine = UpdateMachine(cfg, reporter=rec, public_key=_key(cfg))
    machine.handle_desired(_wire(Desired(deployment_id="d-full-journal", manifest=v2.manifest), cfg))

    def full(self, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(JournalClass, "save", full)
    for ref in v2.manifest.files:
        for i in range(ref.chunk_count):
            machine.handle_chunk(ref.sha256, i, read_chunk(v2.paths[ref.role], i, ref.chunk_size))
    outcome = [(r.state, r.reason) for r in rec.jobs if r.deployment_id == "d-full-journal"]
    assert outcome[-3:] == [("rollback", ReasonCode.DISK_FULL), ("failure", ReasonCode.DISK_FULL),
                            ("idle", ReasonCode.OK)], outcome
    assert machine.state is State.IDLE and machine.active().version == "v1"
    assert not any(cfg.downloads_dir.glob("*/*.chunk"))  # the download was freed
