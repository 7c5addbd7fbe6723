"""FleetService against a real mosquitto and a real SQLite registry, with scripted paho devices."""

from __future__ import annotations

import os
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from common import topics
from common.errors import ReasonCode
from common.manifest import Manifest
from controller.broker import Credentials, start_mosquitto
from controller.fleet import FleetService
from controller.registry import DeploymentState, DeviceDeploymentState, InvalidInputError, Registry
from fleetsim.scripted import ScriptedDevice, assemble, sha
from fleetsim.waiting import wait_until
from tests.manifests import signed_manifest

S = DeviceDeploymentState
KEY = Ed25519PrivateKey.generate()


def make_manifest(reg: Registry, size: int, profile: str = "rpi4", name: str = "m", fmt: str = "onnx") -> Manifest:
    model = reg.ensure_model(name=name)
    data = os.urandom(size)
    v = reg.add_version(model_id=model.id, data=data, format=fmt)
    golden = reg.put_blob(data=os.urandom(1500))
    return signed_manifest(reg.blob_path(sha256=v.sha256), Path(golden.path), key=KEY, chunk_size=1024,
                           model_filename=f"model.{fmt}", golden_filename="golden.npz", model_id=model.id,
                           version=v.id, profile=profile, format=fmt)


@pytest.fixture
def fleet_env(mosquitto, tmp_path):
    fleet = f"t{uuid.uuid4().hex[:8]}"
    reg = Registry(tmp_path / "ws")
    svc = FleetService(
        reg, host=mosquitto.host, port=mosquitto.port, password=mosquitto.credentials.users["controller"], fleet=fleet
    ).start()
    devices: list[ScriptedDevice] = []

    def device(dev_id: str, profile: str = "rpi4", connect: bool = True) -> ScriptedDevice:
        d = ScriptedDevice(mosquitto, fleet, f"{fleet}-{dev_id}", profile)
        devices.append(d)
        return d.connect() if connect else d

    yield svc, reg, device
    for d in devices:
        try:
            d.close()
        except Exception:  # noqa: BLE001
            pass
    svc.stop()
    reg.close()


def test_birth_will_and_stale_session(fleet_env):
    svc, reg, device = fleet_env
    d = device("pi")
    assert svc.wait_for_devices([d.device_id], timeout=5)
    assert wait_until(lambda: reg.devices.get_device(device_id=d.device_id).caps is not None)
    rec = reg.devices.get_device(device_id=d.device_id)
    assert rec.online and rec.session_id == d.session_id and rec.profile == "rpi4"
    d.kill()  # the broker publishes the retained last-will
    assert svc.wait_for_devices([d.device_id], timeout=5, online=False)
    # a new session comes up; then a stale will of an older session is delivered late
    new = ScriptedDevice.__new__(ScriptedDevice)
    new.__dict__.update(d.__dict__)
    new.session_id, new.seq, new.connected_at = uuid.uuid4().hex, 0, datetime.now(UTC)
    new.connect()
    assert svc.wait_for_devices([d.device_id], timeout=5)
    new.state(online=False, session_id="old-session", seq=0, ts=datetime.now(UTC) - timedelta(minutes=5))
    assert wait_until(lambda: svc.stats.get("stale_state", 0) >= 1)
    rec = reg.devices.get_device(device_id=d.device_id)
    assert rec.online and rec.session_id == new.session_id
    new.close()


def test_deploy_publishes_retained_desired_and_serves_chunks(fleet_env):
    svc, reg, device = fleet_env
    a, b = device("a"), device("b")
    assert svc.wait_for_devices([a.device_id, b.device_id], timeout=5)
    man_a = make_manifest(reg, 5000)
    man_b = make_manifest(reg, 3000, name="other")
    dep = svc.deploy(man_a, [a.device_id]).id
    svc.deploy(man_b, [b.device_id])
    desired = a.next_desired()
    assert desired.deployment_id == dep and desired.manifest == man_a
    # retained: a device that subscribes later still gets it
    late = ScriptedDevice.__new__(ScriptedDevice)
    late.__dict__.update(a.__dict__)
    late.session_id = uuid.uuid4().hex
    late.desired = type(a.desired)()
    late.connect(birth=False)
    assert late.next_desired().deployment_id == dep
    late.close()

    model = man_a.blob("model")
    a.request_chunks(dep, model.sha256)
    chunks = a.wait_chunks(model.sha256, model.chunk_count)
    assert len(chunks) == model.chunk_count == 5
    assert sha(assemble(chunks)) == model.sha256
    assert all(sha(chunks[i]) == model.chunk_sha256[i] for i in chunks)
    # resumable: only the missing chunk is sent again
    a.chunks.clear()
    a.request_chunks(dep, model.sha256, missing=[3])
    assert set(a.wait_chunks(model.sha256, 1)) == {3}
    time.sleep(0.3)
    assert set(a.chunks[model.sha256]) == {3}
    # the golden file is served too
    golden = man_a.blob("golden")
    a.request_chunks(dep, golden.sha256)
    assert sha(assemble(a.wait_chunks(golden.sha256, golden.chunk_count))) == golden.sha256
    # a blob deployed to b only is refused to a
    other = man_b.blob("model").sha256
    a.request_chunks(dep, other)
    assert wait_until(lambda: svc.stats.get("chunk_refused", 0) == 1)
    time.sleep(0.3)
    assert other not in a.chunks


def test_one_deployment_carries_an_artifact_per_profile(fleet_env):
    """ONNX to the Pi, TFLite to the phone, in one deployment (per_profile overrides the default target)."""
    svc, reg, device = fleet_env
    pi, phone = device("pi", "rpi4"), device("phone", "android-arm64")
    ids = [pi.device_id, phone.device_id]
    assert svc.wait_for_devices(ids, timeout=5)
    onnx = make_manifest(reg, 1500)
    tfl = make_manifest(reg, 1600, profile="android-arm64", fmt="tflite")
    dep = svc.deploy(onnx, ids, per_profile={"android-arm64": tfl})
    got_pi, got_phone = pi.next_desired(), phone.next_desired()
    assert got_pi.deployment_id == got_phone.deployment_id == dep.id
    assert got_pi.manifest == onnx and got_phone.manifest.format == "tflite" and got_phone.manifest == tfl
    # phone's model chunks are served to the phone only
    model = tfl.blob("model")
    phone.request_chunks(dep.id, model.sha256)
    assert sha(assemble(phone.wait_chunks(model.sha256, model.chunk_count))) == model.sha256
    # by version id: each profile's version resolves to that version's artifact for the profile
    dep2 = svc.deploy(version_id=onnx.version, device_ids=ids, per_profile={"android-arm64": tfl.version})
    arts = {d.device_id: reg.artifacts.get_artifact(artifact_id=d.artifact_id).manifest["format"] for d in dep2.devices}
    assert arts == {pi.device_id: "onnx", phone.device_id: "tflite"}
    # per_profile alone is enough when it names every device's profile
    dep3 = svc.deploy(None, ids, per_profile={"rpi4": onnx.version, "android-arm64": tfl.version})
    assert {d.device_id: d.artifact_id for d in dep3.devices} == {d.device_id: d.artifact_id for d in dep2.devices}
    # a profile with nothing to deploy is refused up front, naming the device and its profile
    with pytest.raises(InvalidInputError, match=r"pi.*rpi4"):
        svc.deploy(None, ids, per_profile={"android-arm64": tfl.version})
    # without the override the phone would get the ONNX version, which has no artifact for its profile
    with pytest.raises(InvalidInputError, match="android-arm64"):
        svc.deploy(onnx.version, ids)


def test_reports_drive_status_to_committed_and_rolled_back(fleet_env):
    svc, reg, device = fleet_env
    a, b = device("a"), device("b")
    assert svc.wait_for_devices([a.device_id, b.device_id], timeout=5)
    man = make_manifest(reg, 2000)
    dep = svc.deploy(man, [a.device_id, b.device_id]).id
    sha_m = man.blob("model").sha256
    for seq, state in enumerate(["download", "verify", "install", "benchmark"], start=1):
        a.job(dep, seq, state)
        b.job(dep, seq, state)
    a.job(dep, 4, "benchmark")  # duplicate
    a.bench(dep, sha_m, "commit")
    a.bench(dep, sha_m, "commit")  # duplicate
    a.job(dep, 5, "commit")
    b.bench(dep, sha_m, "rollback", ["regression_latency: p95 3.1 ms > 1.25 x 2.0 ms"])
    b.job(dep, 5, "rollback", ReasonCode.REGRESSION_LATENCY)
    summary = svc.wait_for(dep, timeout=10)
    assert not summary.timed_out
    assert summary.device_states() == {a.device_id: "committed", b.device_id: "rolled_back"}
    out = summary.as_dict()
    assert out["state"] == DeploymentState.PARTIAL.value
    assert out["devices"][b.device_id]["reason"] == "regression_latency"
    assert out["devices"][a.device_id]["bench"]["decision"] == "commit"
    assert svc.stats["duplicate"] >= 2
    assert wait_until(lambda: len(reg.reports.job_reports(deployment_id=dep)) == 10)
    assert reg.devices.get_device(device_id=b.device_id).last_bench["decision"] == "rollback"


def test_wait_for_times_out_while_in_progress(fleet_env):
    svc, reg, device = fleet_env
    a = device("a")
    assert svc.wait_for_devices([a.device_id], timeout=5)
    dep = svc.deploy(make_manifest(reg, 1500), [a.device_id]).id
    a.job(dep, 1, "download")
    t0 = time.monotonic()
    summary = svc.wait_for(dep, timeout=0.5)
    assert summary.timed_out and not summary.done and time.monotonic() - t0 < 3
    assert summary.device_states() == {a.device_id: "in_progress"}


def test_malformed_payloads_are_counted_and_ignored(fleet_env):
    svc, reg, device = fleet_env
    a = device("a")
    assert svc.wait_for_devices([a.device_id], timeout=5)
    dep = svc.deploy(make_manifest(reg, 1500), [a.device_id]).id
    f, dev = a.fleet, a.device_id
    bad = [
        (topics.job(f, dev, dep), b"{not json"),
        (topics.job(f, dev, dep), b'{"schema_version": 99, "device_id": "x"}'),
        (topics.job(f, dev, dep), b"[1, 2, 3]"),
        (topics.bench(f, dev, dep), b'{"schema_version": 1}'),
        (topics.telemetry(f, dev), b"\xff\xfe"),
        (topics.caps(f, dev), b'{"schema_version": 1, "device_id": "x"}'),
        (topics.chunk_request(f, dev, "a" * 64), b'{"schema_version": 1, "deployment_id": "d", "sha256": "zz"}'),
        (
            topics.job(f, dev, "other-dep"),
            b'{"schema_version":1,"device_id":"%s","deployment_id":"%s","seq":1,"state":"commit"}'
            % (dev.encode(), dep.encode()),
        ),
    ]
    for topic, payload in bad:
        a.publish(topic, payload)
    a.publish(topics.state(f, dev), b'{"schema_version":1}', retain=True)
    assert wait_until(lambda: svc.stats.get("malformed", 0) >= len(bad) + 1), svc.stats
    # a report claiming another device id on this device's topic is ignored
    spoof = (
        b'{"schema_version":1,"device_id":"someone-else","deployment_id":"%s","seq":1,"state":"commit"}' % dep.encode()
    )
    a.publish(topics.job(f, dev, dep), spoof)
    assert wait_until(lambda: svc.stats.get("spoofed", 0) == 1)
    # the service is still alive and processes good reports
    a.job(dep, 1, "commit")
    assert svc.wait_for(dep, timeout=5).device_states() == {dev: "committed"}
    assert svc.stats.get("handler_errors", 0) == 0
    a.job("0123-unknown", 1, "download")
    assert wait_until(lambda: svc.stats.get("unknown_deployment", 0) == 1)


def test_fleet_rollback_republishes_previous_desired(fleet_env):
    svc, reg, device = fleet_env
    a, b = device("a"), device("b")
    assert svc.wait_for_devices([a.device_id, b.device_id], timeout=5)
    v1 = make_manifest(reg, 1500)
    first = svc.deploy(v1, [a.device_id]).id
    a.job(first, 1, "commit")
    assert a.next_desired().deployment_id == first
    v2 = make_manifest(reg, 1600)
    second = svc.deploy(v2, [a.device_id, b.device_id]).id
    assert a.next_desired().deployment_id == second
    assert b.next_desired().deployment_id == second
    rb = svc.rollback(second, reason="canary regressed", actor="ops")
    back = a.next_desired()
    assert back.deployment_id == rb.id and back.manifest == v1
    assert b.desired.get(timeout=5) == b""  # b had nothing before: its retained desired is cleared
    assert reg.deployments.get_deployment(deployment_id=second).state is DeploymentState.ROLLED_BACK
    assert rb.kind == "rollback" and rb.rollback_of == second and [d.device_id for d in rb.devices] == [a.device_id]
    assert reg.devices.get_device(device_id=b.device_id).desired_deployment_id is None
    # the rollback deployment is tracked like any other
    a.job(rb.id, 1, "commit")
    assert svc.wait_for(rb, timeout=5).device_states() == {a.device_id: S.COMMITTED.value}


def test_reconnects_and_republishes_desired_after_broker_restart(tmp_path):
    creds = Credentials()
    broker = start_mosquitto(tmp_path / "b1", creds)
    port = broker.port
    reg = Registry(tmp_path / "ws")
    svc = FleetService(reg, host=broker.host, port=port, password=creds.users["controller"], fleet="rc").start()
    try:
        dev = ScriptedDevice(broker, "rc", "pi-1").connect()
        assert svc.wait_for_devices(["pi-1"], timeout=5)
        dep = svc.deploy(make_manifest(reg, 1200), ["pi-1"]).id
        assert dev.next_desired().deployment_id == dep
        dev.close()
        broker.stop()  # persistence is off: retained messages are gone
        assert wait_until(lambda: not svc.connected, 5)
        broker = start_mosquitto(tmp_path / "b2", creds, port=port)
        assert wait_until(lambda: svc.connected, 20), "service did not reconnect"
        dev2 = ScriptedDevice(broker, "rc", "pi-1")
        dev2.password = creds.users["pi-1"]
        dev2.connect(birth=False)
        assert dev2.next_desired(timeout=10).deployment_id == dep
        assert svc.stats["connects"] >= 2 and svc.stats["desired_republished"] >= 1
        dev2.close()
    finally:
        svc.stop()
        broker.stop()
        reg.close()
