"""The registry's database seam: transactions, audit lines, filtered selects, schema registration."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from common.errors import ReasonCode
from common.update_states import UpdateState
from controller.registry import ConflictError, Database, DeviceDeploymentState, Registry, job_state_to_status

DDL = "CREATE TABLE IF NOT EXISTS notes (id TEXT PRIMARY KEY, kind TEXT NOT NULL, n INTEGER NOT NULL)"


@pytest.fixture
def db(tmp_path: Path):
    d = Database(tmp_path / "x.sqlite", actor="tester")
    d.register_schema(DDL)
    d.register_schema(DDL)  # idempotent: stores register on every open
    yield d
    d.close()


def test_failed_transaction_leaves_neither_row_nor_audit_line(db: Database) -> None:
    db.register_schema("CREATE TABLE IF NOT EXISTS audit_log (id TEXT, ts TEXT, actor TEXT, action TEXT, "
                       "target TEXT, details TEXT)")
    with db.transaction() as conn:
        db.insert(conn, "notes", {"id": "a", "kind": "x", "n": 1})
        db.audit(conn, None, "note.create", "a", {"n": 1})
    with pytest.raises(RuntimeError), db.transaction() as conn:
        db.insert(conn, "notes", {"id": "b", "kind": "x", "n": 2})
        db.audit(conn, "alice", "note.create", "b", {})
        raise RuntimeError("boom")
    assert [r["id"] for r in db.all("SELECT id FROM notes")] == ["a"]
    audit = db.all("SELECT actor, target FROM audit_log")
    assert audit == [{"actor": "tester", "target": "a"}]  # default actor; the failed one left nothing


def test_select_filters_skip_none_and_match_tuples(db: Database) -> None:
    with db.transaction() as conn:
        for i, kind in enumerate(["x", "y", "x", "z"]):
            db.insert(conn, "notes", {"id": f"n{i}", "kind": kind, "n": i})
    assert [r["id"] for r in db.select("notes", where={"kind": "x", "n": None}, order_by="n")] == ["n0", "n2"]
    assert [r["id"] for r in db.select("notes", where={"kind": ("y", "z")}, order_by="n")] == ["n1", "n3"]
    assert [r["n"] for r in db.select("notes", order_by="n DESC", limit=2, offset=1)] == [2, 1]
    with pytest.raises(ValueError, match="identifier"):
        db.select("notes; DROP TABLE notes", where={})
    with pytest.raises(ValueError, match="identifier"):
        db.select("notes", where={"kind = kind OR 1": 1})


def test_each_thread_gets_its_own_connection_and_writes_queue(db: Database) -> None:
    def write(i: int) -> None:
        with db.transaction() as conn:
            db.insert(conn, "notes", {"id": f"t{i}", "kind": "t", "n": i})

    threads = [threading.Thread(target=write, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert db.one("SELECT COUNT(*) AS c FROM notes")["c"] == 8


def test_closed_database_refuses_use(tmp_path: Path) -> None:
    d = Database(tmp_path / "y.sqlite")
    d.close()
    with pytest.raises(RuntimeError, match="closed"):
        d.one("SELECT 1")


def test_empty_model_delete_refused_while_it_has_versions(tmp_path: Path) -> None:
    with Registry(tmp_path / "ws") as reg:
        empty = reg.create_model(name="empty")
        full = reg.create_model(name="full")
        reg.add_version(model_id=full.id, data=b"weights")
        with pytest.raises(ConflictError, match="has versions"):
            reg.retention.delete_empty_model(model_id=full.id)
        reg.retention.delete_empty_model(model_id=empty.id, actor="ops")
        assert [m.name for m in reg.list_models()] == ["full"]
        assert reg.audit_log(target=empty.id, action="model.delete")[0].actor == "ops"


def test_every_update_state_maps_to_a_deployment_status() -> None:
    S = DeviceDeploymentState
    expected = {
        UpdateState.DOWNLOAD: S.IN_PROGRESS, UpdateState.VERIFY: S.IN_PROGRESS, UpdateState.INSTALL: S.IN_PROGRESS,
        UpdateState.BENCHMARK: S.IN_PROGRESS, UpdateState.COMMIT: S.COMMITTED, UpdateState.ROLLBACK: S.ROLLED_BACK,
        UpdateState.FAILURE: S.FAILED, UpdateState.IDLE: None,
    }
    assert {s: job_state_to_status(s, ReasonCode.OK) for s in UpdateState} == expected
    # an idle with a refusal reason is a rejection before any work: the device failed
    assert job_state_to_status(UpdateState.IDLE, ReasonCode.SIGNATURE_INVALID) is S.FAILED
