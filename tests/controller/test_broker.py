"""The broker as configured by controller.broker: real mosquitto, real logins, real ACL decisions."""

from __future__ import annotations

import os
import shutil
import ssl
import tempfile
import threading
import time
import uuid
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from controller.broker import BrokerError, Credentials, DynsecAdmin, start_mosquitto

pytestmark = pytest.mark.timeout(90)


class Session:
    """One MQTT login; records connect result, disconnects, subscription grants and messages."""

    def __init__(self, broker, user: str, password: str, client_id: str, *, port: int | None = None,
                 tls_ca: Path | None = None) -> None:
        self.connected = threading.Event()
        self.answered = threading.Event()
        self.dropped = threading.Event()
        self.reason = ""
        self.granted: list[int] = []
        self.messages: list[tuple[str, bytes]] = []
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id)
        self.client.username_pw_set(user, password)
        if tls_ca is not None:
            self.client.tls_set(ca_certs=str(tls_ca))
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = lambda c, u, f, rc, p: self.dropped.set()
        self.client.on_subscribe = lambda c, u, mid, codes, p: self.granted.extend(int(x.value) for x in codes)
        self.client.on_message = lambda c, u, m: self.messages.append((m.topic, bytes(m.payload)))
        self.client.reconnect_delay_set(60, 60)  # no quick automatic reconnect: tests decide
        self.client.connect(broker.host, port or broker.port)
        self.client.loop_start()
        self.answered.wait(5)

    def _on_connect(self, client, userdata, flags, reason, props) -> None:
        self.reason = str(reason)
        if not reason.is_failure:
            self.connected.set()
        self.answered.set()

    def subscribe(self, topic: str) -> int:
        self.granted.clear()
        self.client.subscribe(topic, qos=1)
        deadline = time.monotonic() + 5
        while not self.granted and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.granted[0] if self.granted else -1

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


@pytest.fixture
def fleet() -> str:
    return f"f{uuid.uuid4().hex[:6]}"


def test_mosquitto_runs_unprivileged(mosquitto):
    uid = int(Path(f"/proc/{mosquitto.pid}/status").read_text().split("Uid:")[1].split()[0])
    if os.geteuid() == 0:
        assert uid != 0, "mosquitto must drop root"
    else:
        assert uid == os.geteuid()


def test_client_id_is_bound_to_the_account(mosquitto, fleet):
    pw_a = mosquitto.add_user(f"{fleet}-a", fleet=fleet)
    pw_b = mosquitto.add_user(f"{fleet}-b", fleet=fleet)
    b = Session(mosquitto, f"{fleet}-b", pw_b, f"{fleet}-b")
    assert b.connected.is_set()
    # device a logs in with b's client id: refused, and b keeps its session
    thief = Session(mosquitto, f"{fleet}-a", pw_a, f"{fleet}-b")
    assert not thief.connected.is_set() and "authori" in thief.reason.lower()
    time.sleep(0.5)
    assert not b.dropped.is_set()
    a = Session(mosquitto, f"{fleet}-a", pw_a, f"{fleet}-a")
    assert a.connected.is_set()
    for s in (a, b, thief):
        s.close()


def test_device_acl_is_bound_to_its_own_fleet_and_id(mosquitto, fleet):
    dev = f"{fleet}-d"
    pw = mosquitto.add_user(dev, fleet=fleet)
    other_fleet = f"{fleet}x"
    watcher = Session(mosquitto, "controller", mosquitto.credentials.users["controller"], f"w-{fleet}")
    assert watcher.subscribe("fl/v1/#") == 1
    d = Session(mosquitto, dev, pw, dev)
    assert d.subscribe(f"fl/v1/{fleet}/dev/{dev}/desired") == 1
    assert d.subscribe(f"fl/v1/{fleet}/dev/{dev}/art/+/chunk/+") == 1
    assert d.subscribe(f"fl/v1/{fleet}/dev/other/desired") == 128  # another device's desired: refused
    assert d.subscribe(f"fl/v1/{other_fleet}/dev/{dev}/desired") == 128  # its id in another fleet: refused
    assert d.subscribe("fl/v1/#") == 128
    for topic in (f"fl/v1/{fleet}/dev/{dev}/tm", f"fl/v1/{other_fleet}/dev/{dev}/tm",
                  f"fl/v1/{fleet}/dev/other/tm", f"fl/v1/{fleet}/dev/{dev}/desired"):
        d.client.publish(topic, b"x", qos=1).wait_for_publish(5)
    time.sleep(0.5)
    assert [t for t, _ in watcher.messages] == [f"fl/v1/{fleet}/dev/{dev}/tm"]
    watcher.client.publish(f"fl/v1/{fleet}/dev/{dev}/desired", b"go", qos=1).wait_for_publish(5)
    assert _until(lambda: (f"fl/v1/{fleet}/dev/{dev}/desired", b"go") in d.messages)
    d.close()
    watcher.close()


def test_revoked_device_is_disconnected_and_refused(mosquitto, fleet):
    dev = f"{fleet}-r"
    pw = mosquitto.add_user(dev, fleet=fleet)
    d = Session(mosquitto, dev, pw, dev)
    assert d.connected.is_set()
    t0 = time.monotonic()
    mosquitto.remove_user(dev)
    assert d.dropped.wait(5), "a revoked device must lose its connection"
    assert time.monotonic() - t0 < 5
    again = Session(mosquitto, dev, pw, dev)
    assert not again.connected.is_set() and "authori" in again.reason.lower()
    d.close()
    again.close()
    with mosquitto.admin() as admin:
        assert dev not in admin.list_clients()
        admin.remove_device(dev)  # revoking twice is fine


def test_wrong_controller_password_is_a_clear_error(mosquitto):
    with pytest.raises(BrokerError, match="refused the controller login"):
        DynsecAdmin(mosquitto.host, mosquitto.port, "controller", "wrong")


@pytest.fixture
def broker_dir():
    folder = Path(tempfile.mkdtemp(prefix="ef-broker-test-"))
    folder.chmod(0o755)  # the broker (user mosquitto when run as root) keeps its accounts here
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def test_tls_listener_with_controller_ca_and_accounts_kept_across_restart(broker_dir):
    creds = Credentials()
    handle = start_mosquitto(broker_dir, creds, tls_port=_free(), keep_accounts=True)
    try:
        assert handle.ca_cert == broker_dir / "ca" / "ca.pem" and handle.ca_cert.exists()
        assert oct((broker_dir / "ca" / "ca.key").stat().st_mode & 0o777) == "0o600"
        # the broker account owns only its own folder: never the CA key
        assert (broker_dir / "ca" / "ca.key").stat().st_uid == os.geteuid()
        if os.geteuid() == 0:
            assert (broker_dir / "mosquitto" / "dynamic-security.json").stat().st_uid != 0
        pw = handle.add_user("tls-dev", fleet="f")
        ok = Session(handle, "tls-dev", pw, "tls-dev", port=handle.tls_port, tls_ca=handle.ca_cert)
        assert ok.connected.is_set()
        ok.close()
        other_ca = broker_dir / "other.pem"
        from controller.broker_pki import ensure_ca

        shutil.copyfile(ensure_ca(broker_dir / "other").cert, other_ca)
        with pytest.raises(ssl.SSLError):
            Session(handle, "tls-dev", pw, "tls-dev", port=handle.tls_port, tls_ca=other_ca)
        ca_before = handle.ca_cert.read_bytes()
        port, tls_port = handle.port, handle.tls_port
    finally:
        handle.stop()
    # restart: same CA, the account added at run time is still there (the broker's own file, not `creds`)
    fresh = Credentials()
    fresh.add("controller", creds.users["controller"])
    again = start_mosquitto(broker_dir, fresh, port=port, tls_port=tls_port, keep_accounts=True)
    try:
        assert again.ca_cert.read_bytes() == ca_before
        s = Session(again, "tls-dev", pw, "tls-dev", port=again.tls_port, tls_ca=again.ca_cert)
        assert s.connected.is_set()
        s.close()
    finally:
        again.stop()


def _free() -> int:
    from controller.broker import free_port

    return free_port()


def _until(pred, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.05)
    return bool(pred())


@pytest.mark.skipif(os.geteuid() != 0, reason="only root hands the broker's files to the mosquitto account")
def test_root_with_an_unreachable_folder_keeps_accounts_where_the_broker_can_reach(tmp_path):
    import hashlib

    from controller.broker import STATE_ROOT

    folder = tmp_path / "broker"  # below pytest's 0700 root: the mosquitto account cannot traverse it
    stable = STATE_ROOT / hashlib.sha256(str(folder.resolve()).encode()).hexdigest()[:16]
    creds = Credentials()
    creds.add("controller", "ctl-pw")
    try:
        first = start_mosquitto(folder, creds, keep_accounts=True)
        pw = first.add_user("kept-1", fleet="f")
        first.stop()
        fresh = Credentials()
        fresh.add("controller", "ctl-pw")
        again = start_mosquitto(folder, fresh, keep_accounts=True)
        try:
            s = Session(again, "kept-1", pw, "kept-1")
            assert s.connected.is_set()
            s.close()
        finally:
            again.stop()
        assert (stable / "dynamic-security.json").exists() and (folder / "mosquitto").exists() is False
    finally:
        shutil.rmtree(stable, ignore_errors=True)
