"""Bad input gets a clear reason code and loses nothing: the active model keeps running (real mosquitto)."""

from __future__ import annotations

import json

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.slots import SlotStore
from common.errors import ReasonCode
from common.manifest import sign_manifest
from common.messages import Desired

from .artifacts import granted, make_artifact

pytestmark = pytest.mark.timeout(180)

COMMITTED = ["download", "verify", "install", "benchmark", "commit", "idle"]


@pytest.fixture
def device_with_v1(controller, start_agent, reference, keypair, tmp_path):
    """An agent whose slot a holds committed v1 (the model that must survive everything below).

    v1 is put on disk as a previous run would have left it, which keeps these tests fast; the
    commit path over MQTT is covered by test_e2e.
    """
    v1 = make_artifact(tmp_path, reference.good_model(), reference, keypair[0], version="v1")
    slots = SlotStore(tmp_path / "dev-bad" / "slots")
    slots.slots["a"].install(v1.manifest, v1.paths)
    slots.activate("a")
    agent = start_agent("dev-bad", "x86-edge")
    controller.wait_for(lambda: "dev-bad" in controller.states, 10, "birth")
    assert controller.states["dev-bad"].active.version == "v1"
    return agent


def _still_v1(controller, agent) -> None:
    assert agent.machine.active().version == "v1"
    assert agent.machine.state.value == "idle"
    controller.wait_for(lambda: controller.states["dev-bad"].active.version == "v1", 5, "state still v1")


def _rejected(controller, deployment: str) -> tuple[ReasonCode, str]:
    reports = controller.wait_outcome("dev-bad", deployment, 15)
    assert [r.state for r in reports] == ["failure"], reports
    return reports[0].reason, reports[0].detail


def test_corrupt_truncated_duplicated_reordered_chunks_still_commit(
    controller, device_with_v1, reference, keypair, tmp_path
):
    v2 = make_artifact(tmp_path, reference.slightly_perturbed_model(), reference, keypair[0], version="v2")
    model, golden = v2.manifest.blob("model"), v2.manifest.blob("golden")
    assert model.chunk_count > 3
    assert golden.sha256 == device_with_v1.machine.slots.current().manifest().blob("golden").sha256  # reused
    controller.corrupt_once |= {(model.sha256, 1), (model.sha256, 0)}
    controller.truncate_once |= {(model.sha256, model.chunk_count - 1)}
    controller.duplicate = True
    controller.reverse = True
    controller.deploy("dev-bad", v2, "d-v2")
    reports = controller.wait_outcome("dev-bad", "d-v2")
    transitions = [r.state for r in reports if r.reason is ReasonCode.OK]
    assert transitions == COMMITTED
    corrupt = [r for r in reports if r.reason is ReasonCode.CHUNK_CORRUPT]
    # each bad chunk was sent twice (duplicate=True): 6 rejections, the first 5 reported (then only counted)
    assert len(corrupt) == 5 and all(r.state == "download" for r in corrupt)
    assert "6 corrupt chunk(s) re-requested" in reports[[r.state for r in reports].index("verify")].detail
    assert device_with_v1.machine.active().version == "v2"


@pytest.mark.parametrize(
    "case",
    ["bad_signature", "tampered", "wrong_profile", "unknown_schema", "missing_field", "unsupported_format",
     "oversized", "unsigned"],
)
def test_bad_desired_rejected_with_reason(case, controller, device_with_v1, reference, keypair, tmp_path):
    key = keypair[0]
    art = make_artifact(tmp_path, reference.slightly_perturbed_model(), reference, key, version="v9")
    manifest = art.manifest
    dep = f"d-{case.replace('_', '-')}"
    expected = {
        "bad_signature": ReasonCode.SIGNATURE_INVALID,
        "tampered": ReasonCode.SIGNATURE_INVALID,
        "unsigned": ReasonCode.SIGNATURE_INVALID,
        "wrong_profile": ReasonCode.WRONG_PROFILE,
        "unknown_schema": ReasonCode.UNSUPPORTED_SCHEMA,
        "missing_field": ReasonCode.MALFORMED_PAYLOAD,
        "unsupported_format": ReasonCode.UNSUPPORTED_FORMAT,
        "oversized": ReasonCode.SIZE_EXCEEDED,
    }[case]
    if case == "bad_signature":
        manifest = sign_manifest(manifest, Ed25519PrivateKey.generate()).model_copy(update={"key_id": manifest.key_id})
    elif case == "tampered":
        manifest = manifest.model_copy(update={"version": "v10"})
    elif case == "unsigned":
        manifest = manifest.model_copy(update={"signature": ""})
    elif case == "wrong_profile":
        other = make_artifact(tmp_path, reference.good_model(), reference, key, version="v9", profile="rpi4")
        manifest = other.manifest
    elif case == "unsupported_format":
        manifest = sign_manifest(manifest.model_copy(update={"format": "tflite"}), key)
    elif case == "oversized":
        huge = manifest.files[0].model_copy(update={"size": 10**12})
        manifest = sign_manifest(manifest.model_copy(update={"files": [huge, manifest.files[1]]}), key)
    payload = granted(Desired(deployment_id=dep, manifest=manifest), keypair[0], "dev-bad",
                      controller.fleet).model_dump(mode="json")
    if case == "unknown_schema":
        payload["schema_version"] = 3
    elif case == "missing_field":
        del payload["manifest"]
    controller.offer(art)
    controller.publish_desired("dev-bad", json.dumps(payload).encode())
    reason, detail = _rejected(controller, dep)
    assert reason is expected, detail
    assert detail
    assert not [r for r in controller.requests if r[1].deployment_id == dep], "downloaded before verifying"
    _still_v1(controller, device_with_v1)


def test_malformed_json_and_garbage_chunks_are_survived(controller, device_with_v1, reference, keypair, tmp_path):
    controller.publish_desired("dev-bad", b"{not json")
    controller.publish_desired("dev-bad", b"\xff\xfe\x00garbage")
    controller.publish_desired("dev-bad", b'{"schema_version": 1, "deployment_id": "d-junk", "manifest": 5}')
    reason, _ = _rejected(controller, "d-junk")
    assert reason is ReasonCode.MALFORMED_PAYLOAD
    from common import topics

    controller.client.publish(topics.chunk(controller.fleet, "dev-bad", "0" * 64, 0), b"junk", qos=1)
    _still_v1(controller, device_with_v1)
    # and the agent still takes a good update afterwards
    v2 = make_artifact(tmp_path, reference.slightly_perturbed_model(), reference, keypair[0], version="v2")
    controller.deploy("dev-bad", v2, "d-after-junk")
    assert [r.state for r in controller.wait_outcome("dev-bad", "d-after-junk")] == COMMITTED


def test_whole_file_hash_mismatch_rolls_back(controller, device_with_v1, reference, keypair, tmp_path):
    """Chunks that each match but a whole-file sha256 that does not: verify fails, nothing is installed."""
    art = make_artifact(tmp_path, reference.slightly_perturbed_model(), reference, keypair[0], version="v2")
    bad_model = art.manifest.blob("model").model_copy(update={"sha256": "ab" * 32})
    manifest = sign_manifest(art.manifest.model_copy(update={"files": [bad_model, art.manifest.files[1]]}), keypair[0])
    controller.blobs["ab" * 32] = (art.paths["model"], bad_model.chunk_size)
    controller.offer(art)
    controller.publish_desired("dev-bad", Desired(deployment_id="d-hash", manifest=manifest))
    reports = controller.wait_outcome("dev-bad", "d-hash")
    assert [r.state for r in reports] == ["download", "verify", "rollback", "failure", "idle"]
    assert reports[-2].reason is ReasonCode.HASH_MISMATCH
    _still_v1(controller, device_with_v1)


def test_same_model_again_is_a_no_op(controller, device_with_v1, reference, keypair, tmp_path):
    v1 = make_artifact(tmp_path, reference.good_model(), reference, keypair[0], version="v1")
    controller.deploy("dev-bad", v1, "d-v1-again")
    reports = controller.wait_outcome("dev-bad", "d-v1-again")
    assert [(r.state, r.reason) for r in reports] == [("commit", ReasonCode.OK)]
    assert "already active" in reports[0].detail


def test_download_timeout_keeps_current_model(controller, start_agent, reference, keypair, tmp_path):
    agent = start_agent("dev-slow", "x86-edge", download_timeout_s=2.0)
    controller.withhold = lambda sha, idx: True
    art = make_artifact(tmp_path, reference.good_model(), reference, keypair[0], version="v1")
    controller.deploy("dev-slow", art, "d-never")
    reports = controller.wait_outcome("dev-slow", "d-never", 20)
    assert [r.state for r in reports] == ["download", "rollback", "failure", "idle"]
    assert reports[-2].reason is ReasonCode.DOWNLOAD_TIMEOUT
    assert agent.machine.active() is None  # no previous model: stays with none, reported failure
