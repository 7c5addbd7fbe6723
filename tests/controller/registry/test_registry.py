"""Registry unit tests against a real SQLite file and a real blob directory."""

from __future__ import annotations

import hashlib
import sqlite3
import threading
import uuid
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from common.manifest import Thresholds, blob_ref, sign_manifest
from controller.registry import (
    ConflictError,
    InvalidInputError,
    NotFoundError,
    Registry,
)
from tests.manifests import make_manifest


@pytest.fixture
def reg(tmp_path: Path):
    r = Registry(tmp_path / "ws", actor="tester")
    yield r
    r.close()


def _file(tmp_path: Path, content: bytes, name: str = "m.onnx") -> Path:
    p = tmp_path / name
    p.write_bytes(content)
    return p


def _blob_files(reg: Registry) -> list[Path]:
    return [p for p in (reg.workspace / "blobs").rglob("*") if p.is_file() and p.parent.name != "tmp"]


def test_ids_are_uuid4_and_times_utc(reg, tmp_path):
    m = reg.create_model(name="minilm")
    v = reg.add_version(model_id=m.id, path=_file(tmp_path, b"abc"))
    for ident in (m.id, v.id):
        assert uuid.UUID(ident).version == 4
    assert v.created_at.utcoffset().total_seconds() == 0
    assert reg.audit_log(target=v.id)[0].ts.utcoffset().total_seconds() == 0


@pytest.mark.parametrize("bad", ["../x", "a/b", "a\\b", "..", "", ".hidden", "a..b", "x" * 200, "sp ace"])
def test_bad_names_rejected(reg, bad):
    with pytest.raises(InvalidInputError):
        reg.create_model(name=bad)
    assert reg.list_models() == []


def test_duplicate_name_conflict(reg):
    reg.create_model(name="m")
    with pytest.raises(ConflictError, match="already exists"):
        reg.create_model(name="m")
    assert reg.ensure_model(name="m").name == "m"


def test_content_addressing_and_dedup(reg, tmp_path):
    m = reg.create_model(name="m")
    data = b"model-bytes" * 1000
    v1 = reg.add_version(model_id=m.id, path=_file(tmp_path, data))
    v2 = reg.add_version(model_id=m.id, data=data, technique="int8", parent_id=v1.id)
    sha = hashlib.sha256(data).hexdigest()
    assert v1.sha256 == v2.sha256 == sha
    path = reg.blob_path(sha256=sha)
    assert path == reg.workspace / "blobs" / sha[:2] / sha
    assert path.read_bytes() == data
    assert len(_blob_files(reg)) == 1


def test_lineage_and_children(reg, tmp_path):
    m = reg.create_model(name="m")
    root = reg.add_version(model_id=m.id, data=b"fp32")
    q = reg.add_version(
        model_id=m.id,
        data=b"int8",
        technique="int8-static",
        parent_id=root.id,
        config={"per_channel": True},
        metrics={"size_mb": 1.5},
        profile="rpi4",
    )
    p = reg.add_version(model_id=m.id, data=b"pruned", technique="prune", parent_id=q.id)
    assert [v.id for v in reg.lineage(version_id=p.id)] == [root.id, q.id, p.id]
    assert [v.id for v in reg.children(version_id=root.id)] == [q.id]
    got = reg.get_version(version_id=q.id)
    assert got.config == {"per_channel": True} and got.metrics == {"size_mb": 1.5} and got.profile == "rpi4"
    assert [v.id for v in reg.list_versions(model_id=m.id)] == [root.id, q.id, p.id]
    assert [v.id for v in reg.list_versions(model_id=m.id, profile="rpi4")] == [q.id]


def test_versions_are_immutable_even_via_sql(reg):
    m = reg.create_model(name="m")
    v = reg.add_version(model_id=m.id, data=b"x")
    conn = sqlite3.connect(reg.db_path)
    with pytest.raises(sqlite3.DatabaseError, match="immutable"):
        conn.execute("UPDATE versions SET technique = 'evil' WHERE id = ?", (v.id,))
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        conn.execute("DELETE FROM audit_log")
    conn.close()
    assert not hasattr(reg, "update_version")
    reg.add_metrics(version_id=v.id, metrics={"cosine": 0.99}, source="eval")
    assert reg.version_metrics(version_id=v.id) == {"build": {}, "eval": {"cosine": 0.99}}
    assert reg.get_version(version_id=v.id).metrics == {}


def test_failed_add_leaves_no_blob_and_no_row(reg, tmp_path):
    m = reg.create_model(name="m")
    with pytest.raises(NotFoundError):
        reg.add_version(model_id=m.id, data=b"orphan", parent_id=str(uuid.uuid4()))
    with pytest.raises(InvalidInputError):
        reg.add_version(model_id=m.id, data=b"orphan", metrics={"x": float("nan")})
    with pytest.raises(InvalidInputError):
        reg.add_version(model_id=m.id, data=b"orphan", technique="../bad")
    with pytest.raises(InvalidInputError):
        reg.add_version(model_id=m.id, data=b"")
    assert _blob_files(reg) == []
    assert list((reg.workspace / "blobs" / "tmp").iterdir()) == []
    assert reg.list_versions(model_id=m.id) == []


def test_failure_inside_transaction_removes_new_blob(reg, monkeypatch):
    m = reg.create_model(name="m")

    def boom(*a, **k):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(reg.db, "audit", boom)  # fails after the blob was renamed into place
    with pytest.raises(RuntimeError):
        reg.add_version(model_id=m.id, data=b"late failure")
    monkeypatch.undo()
    assert _blob_files(reg) == []
    assert reg.list_versions(model_id=m.id) == []


def test_existing_blob_survives_a_failed_add(reg):
    m = reg.create_model(name="m")
    v = reg.add_version(model_id=m.id, data=b"shared")
    with pytest.raises(NotFoundError):
        reg.add_version(model_id=m.id, data=b"shared", parent_id=str(uuid.uuid4()))
    assert reg.blob_path(sha256=v.sha256).read_bytes() == b"shared"


def test_tags_and_production_rollback(reg):
    m = reg.create_model(name="m")
    fp32 = reg.add_version(model_id=m.id, data=b"fp32")
    int8 = reg.add_version(model_id=m.id, data=b"int8", parent_id=fp32.id, technique="int8")
    sibling = reg.add_version(model_id=m.id, data=b"other", parent_id=fp32.id, technique="prune")
    bad = reg.add_version(model_id=m.id, data=b"bad", parent_id=int8.id, technique="int4")
    reg.tags.set_tag(model_id=m.id, tag="production", version_id=fp32.id, expected_version_id=None)
    reg.tags.set_tag(model_id=m.id, tag="production", version_id=int8.id)
    reg.tags.set_tag(model_id=m.id, tag="production", version_id=bad.id)
    reg.tags.set_tag(model_id=m.id, tag="candidate", version_id=sibling.id)
    assert reg.tags.list_tags(model_id=m.id) == {"candidate": sibling.id, "production": bad.id}
    with pytest.raises(InvalidInputError, match="not in the lineage"):
        reg.tags.rollback_tag(model_id=m.id, to_version_id=sibling.id, actor="ops")
    back = reg.tags.rollback_tag(model_id=m.id, actor="ops", reason="latency regression")
    assert back.id == int8.id
    assert reg.tags.get_tag(model_id=m.id, tag="production").id == int8.id
    entry = reg.audit_log(action="tag.rollback")[0]
    assert entry.actor == "ops" and entry.details["from"] == bad.id and entry.details["to"] == int8.id
    reg.tags.rollback_tag(model_id=m.id, to_version_id=fp32.id)
    assert reg.tags.get_tag(model_id=m.id, tag="production").id == fp32.id


def test_tag_compare_and_set_conflict(reg):
    m = reg.create_model(name="m")
    a = reg.add_version(model_id=m.id, data=b"a")
    b = reg.add_version(model_id=m.id, data=b"b")
    reg.tags.set_tag(model_id=m.id, tag="production", version_id=a.id)
    with pytest.raises(ConflictError, match="reload and retry"):
        reg.tags.set_tag(model_id=m.id, tag="production", version_id=b.id, expected_version_id=b.id)
    with pytest.raises(InvalidInputError):
        reg.tags.set_tag(model_id=m.id, tag="bad/tag", version_id=b.id)
    other = reg.create_model(name="other")
    with pytest.raises(InvalidInputError, match="belongs to model"):
        reg.tags.set_tag(model_id=other.id, tag="production", version_id=a.id)
    with pytest.raises(ConflictError, match="no earlier version"):
        reg.tags.rollback_tag(model_id=m.id)


def test_audit_entries_for_mutations(reg):
    m = reg.create_model(name="m", actor="alice")
    v = reg.add_version(model_id=m.id, data=b"x", actor="bob")
    reg.tags.set_tag(model_id=m.id, tag="candidate", version_id=v.id)
    actions = [e.action for e in reg.audit_log()]
    assert {"model.create", "version.create", "tag.set"} <= set(actions)
    assert reg.audit_log(target=m.id, action="model.create")[0].actor == "alice"
    assert reg.audit_log(target=v.id)[0].actor == "bob"
    assert reg.audit_log(action="tag.set")[0].actor == "tester"


def test_artifact_requires_signed_manifest_and_stored_blobs(reg, tmp_path):
    m = reg.create_model(name="m")
    model_file = _file(tmp_path, b"onnx" * 600)
    v = reg.add_version(model_id=m.id, path=model_file)
    ref = blob_ref("model", model_file, 1024)
    man = make_manifest(files=[ref], model_id=m.id, version=v.id, thresholds=Thresholds())
    with pytest.raises(InvalidInputError, match="unsigned"):
        reg.artifacts.add_artifact(manifest=man)
    signed = sign_manifest(man, Ed25519PrivateKey.generate())
    art = reg.artifacts.add_artifact(manifest=signed)
    assert reg.artifacts.manifest(artifact_id=art.id) == signed
    assert reg.artifacts.find_artifact(manifest=signed).id == art.id
    missing = blob_ref("golden", _file(tmp_path, b"not stored", "g.npz"), 1024)
    with pytest.raises(NotFoundError):
        reg.artifacts.add_artifact(
            manifest=sign_manifest(man.model_copy(update={"files": [ref, missing]}), Ed25519PrivateKey.generate())
        )


def test_concurrent_writers_from_threads(reg):
    m = reg.create_model(name="m")
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            for j in range(10):
                reg.add_version(model_id=m.id, data=f"{i}-{j}".encode())
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(reg.list_versions(model_id=m.id)) == 40


def test_reopen_keeps_everything(tmp_path):
    ws = tmp_path / "ws"
    with Registry(ws) as r:
        m = r.create_model(name="m")
        v = r.add_version(model_id=m.id, data=b"persist")
    with Registry(ws) as r2:
        assert r2.get_version(version_id=v.id).sha256 == v.sha256
        assert r2.get_model(name="m").id == m.id
