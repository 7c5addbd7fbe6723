"""Device presence, deployments and report idempotency at the registry level (no MQTT)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from common.errors import ReasonCode
from common.messages import BenchMetrics, BenchReport, DeviceCaps, DeviceState, JobReport, ModelRef
from controller.registry import (
    ConflictError,
    DeploymentState,
    DeviceDeploymentState,
    InvalidInputError,
    NotFoundError,
    Registry,
    ReportOutcome,
)
from tests.manifests import signed_manifest

T0 = datetime(2026, 1, 1, tzinfo=UTC)
S = DeviceDeploymentState


@pytest.fixture
def reg(tmp_path: Path):
    r = Registry(tmp_path / "ws")
    yield r
    r.close()


def _state(session: str, seq: int, online: bool, ts: datetime, dev: str = "pi-1", **kw) -> DeviceState:
    return DeviceState(device_id=dev, session_id=session, seq=seq, online=online, ts=ts, profile="rpi4", **kw)


def _artifact(reg: Registry, tmp_path: Path, content: bytes, profile: str = "rpi4", parent: str | None = None):
    m = reg.ensure_model(name="m")
    f = tmp_path / f"{content.hex()[:8]}.onnx"
    f.write_bytes(content * 500)
    v = reg.add_version(model_id=m.id, path=f, parent_id=parent)
    return reg.artifacts.add_artifact(manifest=signed_manifest(f, chunk_size=1024, model_id=m.id, version=v.id,
                                                     profile=profile)), v


def test_stale_will_never_overwrites_newer_birth(reg):
    assert reg.devices.record_device_state(state=_state("A", 1, True, T0))
    assert reg.devices.record_device_state(state=_state("B", 1, True, T0 + timedelta(seconds=10)))
    # session A's will (stamped at A's connect) arrives late
    assert not reg.devices.record_device_state(state=_state("A", 0, False, T0))
    dev = reg.devices.get_device(device_id="pi-1")
    assert dev.online and dev.session_id == "B"
    # B's own will is honoured even though its seq is lower than B's last state
    assert reg.devices.record_device_state(state=_state("B", 3, True, T0 + timedelta(seconds=11)))
    assert reg.devices.record_device_state(state=_state("B", 0, False, T0 + timedelta(seconds=10)))
    dev = reg.devices.get_device(device_id="pi-1")
    assert not dev.online and dev.session_id == "B"
    # an out-of-order older state inside B does not resurrect it
    assert not reg.devices.record_device_state(state=_state("B", 2, True, T0 + timedelta(seconds=10)))
    assert not reg.devices.get_device(device_id="pi-1").online


def test_presence_is_not_pinned_by_a_clock_that_was_ahead(reg):
    """Issue #13 F: a birth stamped an hour ahead, then offline, then back with a correct clock."""
    assert reg.devices.record_device_state(state=_state("A", 1, True, T0 + timedelta(hours=1)))
    assert reg.devices.record_device_state(state=_state("A", 1, False, T0 + timedelta(hours=1)))  # A's will
    assert reg.devices.record_device_state(state=_state("B", 1, True, T0 + timedelta(minutes=5)))
    dev = reg.devices.get_device(device_id="pi-1")
    assert dev.online and dev.session_id == "B"
    # and the other way: a clock that jumps back an hour between sessions
    assert reg.devices.record_device_state(state=_state("C", 1, True, T0 - timedelta(hours=1)))
    assert reg.devices.get_device(device_id="pi-1").online
    # a late will or a re-delivered birth of a session already left stays stale, whatever its stamp
    assert not reg.devices.record_device_state(state=_state("B", 0, False, T0 + timedelta(days=1)))
    assert not reg.devices.record_device_state(state=_state("A", 9, True, T0 + timedelta(days=1)))
    dev = reg.devices.get_device(device_id="pi-1")
    assert dev.online and dev.session_id == "C"
    # a live will of a session never seen cannot end the connection we hold ...
    assert not reg.devices.record_device_state(state=_state("D", 0, False, T0 + timedelta(days=1)))
    assert reg.devices.get_device(device_id="pi-1").online
    # ... but the broker's retained state (the controller was away: D came and went) is the newest truth
    assert reg.devices.record_device_state(state=_state("D", 0, False, T0 - timedelta(days=1)), retained=True)
    assert not reg.devices.get_device(device_id="pi-1").online


def test_state_keeps_active_model_and_caps(reg):
    ref = ModelRef(model_id="m", version="v1", sha256="a" * 64, format="onnx")
    reg.devices.record_device_state(state=_state("A", 1, True, T0, active=ref))
    caps = DeviceCaps(device_id="pi-1", profile="rpi4", arch="aarch64", cores=4, ram_mb=4096)
    reg.devices.record_device_caps(caps=caps)
    dev = reg.devices.get_device(device_id="pi-1")
    assert dev.active["version"] == "v1" and dev.caps["arch"] == "aarch64" and dev.profile == "rpi4"
    # the will of the same session carries the active model of connect time: presence only
    reg.devices.record_device_state(state=_state("A", 0, False, T0))
    assert reg.devices.get_device(device_id="pi-1").active["version"] == "v1"


def test_deployment_lifecycle_and_idempotent_reports(reg, tmp_path):
    art, v = _artifact(reg, tmp_path, b"one")
    reg.devices.register_device(device_id="pi-1", profile="rpi4")
    reg.devices.register_device(device_id="pi-2", profile="rpi4")
    dep = reg.deployments.create_deployment(artifact_id=art.id, device_ids=["pi-1", "pi-2"], actor="ops")
    assert dep.state is DeploymentState.IN_PROGRESS and dep.counts() == {"pending": 2}

    def job(dev, seq, state, reason=ReasonCode.OK):
        return reg.reports.record_job_report(
            report=JobReport(device_id=dev, deployment_id=dep.id, seq=seq, state=state, reason=reason)
        )

    assert job("pi-1", 1, "download").device_state is S.IN_PROGRESS
    assert job("pi-1", 1, "download").outcome is ReportOutcome.DUPLICATE
    assert job("pi-1", 3, "commit").device_state is S.COMMITTED
    assert job("pi-1", 2, "benchmark").outcome is ReportOutcome.STALE
    assert reg.deployments.get_deployment(deployment_id=dep.id).devices[0].state is S.COMMITTED
    metrics = BenchMetrics(
        latency_p50_ms=1,
        latency_p95_ms=2,
        load_ms=3,
        peak_rss_delta_mb=4,
        quality=0.5,
        quality_metric="cosine",
        runs=10,
    )
    bench = BenchReport(
        device_id="pi-2",
        deployment_id=dep.id,
        decision="rollback",
        candidate=ModelRef(model_id="m", version=v.id, sha256="b" * 64, format="onnx"),
        candidate_metrics=metrics,
        reasons=["ok: latency fine", "regression_quality: 0.5 < 0.98"],
    )
    r = reg.reports.record_bench_report(report=bench)
    assert r.outcome is ReportOutcome.APPLIED and r.device_state is S.ROLLED_BACK and r.deployment_done
    assert reg.reports.record_bench_report(report=bench).outcome is ReportOutcome.DUPLICATE
    assert job("pi-2", 9, "commit").device_state is S.ROLLED_BACK  # terminal is final
    final = reg.deployments.get_deployment(deployment_id=dep.id)
    assert final.state is DeploymentState.PARTIAL and final.done
    pi2 = final.devices[1]
    assert pi2.reason == "regression_quality" and pi2.bench["decision"] == "rollback"
    assert reg.devices.get_device(device_id="pi-2").last_bench["candidate_metrics"]["quality"] == 0.5
    assert len(reg.reports.job_reports(deployment_id=dep.id)) == 4
    unknown = JobReport(device_id="pi-1", deployment_id="nope", seq=1, state="download")
    assert reg.reports.record_job_report(report=unknown).outcome is ReportOutcome.UNKNOWN_DEPLOYMENT
    reg.devices.register_device(device_id="pi-3", profile="rpi4")
    stranger = JobReport(device_id="pi-3", deployment_id=dep.id, seq=1, state="download")
    assert reg.reports.record_job_report(report=stranger).outcome is ReportOutcome.NOT_TARGETED


def test_supersede_rollback_plan_and_chunk_authorisation(reg, tmp_path):
    a1, _ = _artifact(reg, tmp_path, b"one")
    a2, _ = _artifact(reg, tmp_path, b"two")
    for d in ("pi-1", "pi-2"):
        reg.devices.register_device(device_id=d, profile="rpi4")
    d1 = reg.deployments.create_deployment(artifact_id=a1.id, device_ids=["pi-1"])
    d2 = reg.deployments.create_deployment(artifact_id=a2.id, device_ids=["pi-1", "pi-2"])
    old = reg.deployments.get_deployment(deployment_id=d1.id)
    assert old.devices[0].state is S.SUPERSEDED and old.state is DeploymentState.FAILED
    assert reg.devices.desired_deployments() == {"pi-1": d2.id, "pi-2": d2.id}
    sha1 = a1.manifest["files"][0]["sha256"]
    assert reg.devices.blob_for_device(device_id="pi-1", sha256=sha1).sha256 == sha1
    assert reg.devices.blob_for_device(device_id="pi-2", sha256=sha1) is None
    plan = reg.deployments.mark_deployment_rolled_back(deployment_id=d2.id, reason="canary regressed", actor="ops")
    assert plan == {"pi-1": a1.id, "pi-2": None}
    with pytest.raises(ConflictError):
        reg.deployments.mark_deployment_rolled_back(deployment_id=d2.id)
    assert reg.audit_log(action="deployment.rollback")[0].actor == "ops"


def test_deployment_input_errors(reg, tmp_path):
    art, _ = _artifact(reg, tmp_path, b"one", profile="jetson-orin-nano")
    reg.devices.register_device(device_id="pi-1", profile="rpi4")
    with pytest.raises(InvalidInputError, match="profile"):
        reg.deployments.create_deployment(artifact_id=art.id, device_ids=["pi-1"])
    with pytest.raises(NotFoundError, match="never connected"):
        reg.deployments.create_deployment(artifact_id=art.id, device_ids=["ghost"])
    with pytest.raises(InvalidInputError):
        reg.deployments.create_deployment(artifact_id=art.id, device_ids=[])
    with pytest.raises(InvalidInputError):
        reg.devices.register_device(device_id="../evil")
    assert reg.deployments.create_deployment(artifact_id=art.id, device_ids=["pi-1"], allow_profile_mismatch=True)


def test_per_device_artifacts_and_deletion_rules(reg, tmp_path):
    a_pi, v = _artifact(reg, tmp_path, b"pi")
    m = reg.get_model(name="m")
    f = tmp_path / "x.onnx"
    f.write_bytes(b"x86" * 500)
    reg.put_blob(path=f)
    a_x86 = reg.artifacts.add_artifact(manifest=signed_manifest(f, chunk_size=1024, model_id=m.id, version=v.id,
                                                      profile="x86-edge"))
    reg.devices.register_device(device_id="pi-1", profile="rpi4")
    reg.devices.register_device(device_id="box-1", profile="x86-edge")
    with pytest.raises(InvalidInputError, match="box-1"):
        reg.deployments.create_deployment(artifact_id=a_pi.id, device_ids=["pi-1", "box-1"])
    dep = reg.deployments.create_deployment(
        device_ids=["pi-1", "box-1"], device_artifacts={"pi-1": a_pi.id, "box-1": a_x86.id}
    )
    assert {d.device_id: d.artifact_id for d in dep.devices} == {"pi-1": a_pi.id, "box-1": a_x86.id}
    x86_sha = a_x86.manifest["files"][0]["sha256"]
    assert reg.devices.blob_for_device(device_id="box-1", sha256=x86_sha) is not None
    assert reg.devices.blob_for_device(device_id="pi-1", sha256=x86_sha) is None
    assert reg.deployments.deployment_manifest(deployment_id=dep.id, device_id="box-1").profile == "x86-edge"
    # deployed versions are kept; undeployed leaves can go, with their blobs
    with pytest.raises(ConflictError, match="deployed"):
        reg.retention.delete_versions(version_ids=[v.id])
    leaf = reg.add_version(model_id=m.id, data=b"leaf-only", parent_id=v.id)
    reg.tags.set_tag(model_id=m.id, tag="candidate", version_id=leaf.id)
    path = reg.blob_path(sha256=leaf.sha256)
    reg.retention.delete_versions(version_ids=[leaf.id], actor="ops")
    assert not path.exists() and "candidate" not in reg.tags.list_tags(model_id=m.id)
    with pytest.raises(NotFoundError):
        reg.get_version(version_id=leaf.id)
    assert reg.audit_log(action="version.delete")[0].actor == "ops"


def test_delete_model_with_its_versions(reg):
    m = reg.create_model(name="gone")
    root = reg.add_version(model_id=m.id, data=b"r")
    child = reg.add_version(model_id=m.id, data=b"c", parent_id=root.id)
    with pytest.raises(ConflictError, match="derive"):
        reg.retention.delete_versions(version_ids=[root.id])
    reg.retention.delete_versions(version_ids=[root.id, child.id], delete_model=True)
    with pytest.raises(NotFoundError):
        reg.get_model(model_id=m.id)
    assert reg.retention.gc_blobs() == []
