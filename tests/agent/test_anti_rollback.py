"""Anti-rollback and anti-replay (issue #13 G): the signed grant a desired carries.

Before the grant, an older, validly signed manifest republished under a new deployment id was
committed. Now the agent needs the controller's signed grant for *this* deployment, fleet and
device, not expired, newer than the last grant it accepted, and not below the version counter it
committed unless the grant is a signed rollback instruction naming the model.
"""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest

from agent.config import AgentConfig
from agent.slots import SlotStore
from agent.update.machine import UpdateMachine
from common.errors import ReasonCode
from common.grant import Grant, check_grant_binding, manifest_digest, verify_grant
from common.manifest import read_chunk
from common.messages import Desired

from .artifacts import Recorder, granted, make_artifact


@pytest.fixture
def env(tmp_path, keypair, reference):
    cfg = AgentConfig(device_id="ar-1", fleet="unit", profile_id="x86-edge", data_dir=tmp_path / "data",
                      controller_key=keypair[1], threads=1, bench_runs=5, bench_warmup=1)
    v1 = make_artifact(tmp_path, reference.good_model(), reference, keypair[0], version="v1")
    v2 = make_artifact(tmp_path, reference.slightly_perturbed_model(), reference, keypair[0], version="v2")
    slots = SlotStore(cfg.slots_dir)
    slots.slots["a"].install(v1.manifest, v1.paths)
    slots.activate("a")
    return cfg, v1, v2, keypair[0]


def _deliver(machine: UpdateMachine, artifact) -> None:
    for ref in artifact.manifest.files:
        for i in range(ref.chunk_count):
            machine.handle_chunk(ref.sha256, i, read_chunk(artifact.paths[ref.role], i, ref.chunk_size))


def _outcome(rec: Recorder, dep: str) -> list[tuple[str, ReasonCode]]:
    return [(r.state, r.reason) for r in rec.jobs if r.deployment_id == dep]


def test_replayed_downgrade_expired_and_foreign_grants_are_refused(env):
    cfg, v1, v2, key = env
    rec = Recorder()
    machine = UpdateMachine(cfg, reporter=rec, public_key=key.public_key())
    old_v1 = granted(Desired(deployment_id="d-v1", manifest=v1.manifest), key, "ar-1", "unit", counter=1)
    machine.handle_desired(granted(Desired(deployment_id="d-v2", manifest=v2.manifest), key, "ar-1", "unit",
                                   counter=2).to_bytes())
    _deliver(machine, v2)
    assert _outcome(rec, "d-v2")[-2][0] == "commit" and machine.active().version == "v2"
    assert machine.data.version_floor == {"linear": 2}

    attacks = {
        # issue #13 G as reported: the old signed manifest under a new deployment id, no grant
        "d-evil-bare": (Desired(deployment_id="d-evil-bare", manifest=v1.manifest).to_bytes(),
                        ReasonCode.SIGNATURE_INVALID),
        # ... or carrying the grant of the old deployment
        "d-evil-old-grant": (old_v1.model_copy(update={"deployment_id": "d-evil-old-grant"}).to_bytes(),
                             ReasonCode.REPLAYED),
        # a grant issued to another device (a compromised device forwarding its own)
        "d-other-dev": (granted(Desired(deployment_id="d-other-dev", manifest=v1.manifest), key, "ar-2", "unit",
                                counter=3).to_bytes(), ReasonCode.WRONG_TARGET),
        "d-other-fleet": (granted(Desired(deployment_id="d-other-fleet", manifest=v1.manifest), key, "ar-1", "f2",
                                  counter=3).to_bytes(), ReasonCode.WRONG_TARGET),
        "d-expired": (granted(Desired(deployment_id="d-expired", manifest=v1.manifest), key, "ar-1", "unit",
                              counter=3, ttl=timedelta(seconds=-1)).to_bytes(), ReasonCode.EXPIRED),
        # the old deployment itself, played back once the device has forgotten it: older serial
        "d-v1": (old_v1.to_bytes(), ReasonCode.REPLAYED),
        # a fresh, validly granted deploy of the older version, but no rollback instruction
        "d-down": (granted(Desired(deployment_id="d-down", manifest=v1.manifest), key, "ar-1", "unit",
                           counter=1).to_bytes(), ReasonCode.ROLLBACK_REFUSED),
    }
    for dep, (payload, reason) in attacks.items():
        machine.handle_desired(payload)
        assert _outcome(rec, dep) == [("failure", reason)], (dep, rec.jobs[-1])
    assert machine.active().version == "v2" and not [r for r in rec.requests if r[0] != "d-v2"]
    assert machine.rejected[ReasonCode.REPLAYED.value] == 2 and machine.rejected["rollback_refused"] == 1

    # the controller's signed rollback instruction naming v1 is obeyed (reinstated from the other slot)
    back = granted(Desired(deployment_id="d-back", manifest=v1.manifest, kind="rollback"), key, "ar-1", "unit",
                   counter=1, rollback_to=v1.manifest.blob("model").sha256)
    machine.handle_desired(back.to_bytes())
    _deliver(machine, v1)
    assert _outcome(rec, "d-back")[-2][0] == "commit" and machine.active().version == "v1"
    assert machine.data.version_floor == {"linear": 2}  # the floor never goes down


def test_grant_is_checked_across_a_restart(env):
    """The serial and the floor live in the journal: a restarted agent refuses the same replays."""
    cfg, v1, v2, key = env
    rec = Recorder()
    machine = UpdateMachine(cfg, reporter=rec, public_key=key.public_key())
    first = granted(Desired(deployment_id="d-a", manifest=v2.manifest), key, "ar-1", "unit", counter=5, serial=100)
    machine.handle_desired(first.to_bytes())
    _deliver(machine, v2)
    again = UpdateMachine(cfg, reporter=rec, public_key=key.public_key())
    again.resume()
    stale = granted(Desired(deployment_id="d-b", manifest=v1.manifest), key, "ar-1", "unit", counter=6, serial=99)
    again.handle_desired(stale.to_bytes())
    assert _outcome(rec, "d-b") == [("failure", ReasonCode.REPLAYED)]
    lower = granted(Desired(deployment_id="d-c", manifest=v1.manifest), key, "ar-1", "unit", counter=4, serial=101)
    again.handle_desired(lower.to_bytes())
    assert _outcome(rec, "d-c") == [("failure", ReasonCode.ROLLBACK_REFUSED)]


def test_accept_ungranted_is_the_explicit_upgrade_window(env):
    cfg, v1, v2, key = env
    legacy = json.loads(Desired(deployment_id="d-legacy", manifest=v2.manifest).to_bytes())
    legacy["schema_version"] = 1  # what a controller before the grant sends
    rec = Recorder()
    UpdateMachine(cfg, reporter=rec, public_key=key.public_key()).handle_desired(json.dumps(legacy).encode())
    assert _outcome(rec, "d-legacy") == [("failure", ReasonCode.SIGNATURE_INVALID)]
    open_cfg = AgentConfig(**{**cfg.__dict__, "accept_ungranted": True, "profile": None})
    rec = Recorder()
    machine = UpdateMachine(open_cfg, reporter=rec, public_key=key.public_key())
    machine.handle_desired(json.dumps({**legacy, "deployment_id": "d-legacy-2"}).encode())
    assert _outcome(rec, "d-legacy-2")[0][0] == "download"


def test_tampered_grant_and_binding_checks(env, tmp_path: Path):
    cfg, v1, v2, key = env
    desired = granted(Desired(deployment_id="d-x", manifest=v2.manifest), key, "ar-1", "unit", counter=3)
    grant = desired.grant
    assert verify_grant(grant, key.public_key()) is grant
    forged = grant.model_copy(update={"counter": 99})
    with pytest.raises(Exception) as exc:
        verify_grant(forged, key.public_key())
    assert getattr(exc.value, "reason", None) is ReasonCode.SIGNATURE_INVALID
    assert grant.manifest_sha256 == manifest_digest(v2.manifest) != manifest_digest(v1.manifest)
    with pytest.raises(Exception) as exc:  # the grant of v2 presented with the v1 manifest
        check_grant_binding(grant, manifest=v1.manifest, deployment_id="d-x", kind="deploy", fleet="unit",
                            device_id="ar-1", profile="x86-edge")
    assert exc.value.reason is ReasonCode.REPLAYED
    by_profile = Grant.model_validate({**grant.model_dump(), "device_id": None, "profile": "rpi4"})
    with pytest.raises(Exception) as exc:
        check_grant_binding(by_profile, manifest=v2.manifest, deployment_id="d-x", kind="deploy", fleet="unit",
                            device_id="ar-1", profile="x86-edge")
    assert exc.value.reason is ReasonCode.WRONG_TARGET
