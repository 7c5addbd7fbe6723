"""TLS to the broker: the agent verifies the broker's certificate against the CA it is given."""

from __future__ import annotations

import datetime as dt
import getpass
import ipaddress
import shutil
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from agent.config import AgentConfig
from agent.daemon import Agent
from controller.broker import ACL_TEMPLATE, free_port, wait_port
from fleetsim.controller_stub import ControllerStub

pytestmark = pytest.mark.timeout(60)


def _cert(subject: str, issuer_key, issuer_name, key, *, ca: bool) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(issuer_name or x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if not ca:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False
        )
    return builder.sign(issuer_key, hashes.SHA256())


def _pem(path: Path, obj) -> Path:
    if isinstance(obj, x509.Certificate):
        path.write_bytes(obj.public_bytes(serialization.Encoding.PEM))
    else:
        path.write_bytes(obj.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return path


@pytest.fixture
def tls_broker(tmp_path):
    if not shutil.which("mosquitto") and not Path("/usr/sbin/mosquitto").exists():
        pytest.fail("mosquitto is required")
    ca_key, srv_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = _cert("edgefleet test CA", ca_key, None, ca_key, ca=True)
    srv = _cert("127.0.0.1", ca_key, ca.subject, srv_key, ca=False)
    ca_pem, cert_pem, key_pem = _pem(tmp_path / "ca.pem", ca), _pem(tmp_path / "srv.pem", srv), _pem(
        tmp_path / "srv.key", srv_key)
    users = {"controller": "ctl-pw", "tls-1": "dev-pw"}
    pw = tmp_path / "passwd"
    pw.write_text("".join(f"{u}:{p}\n" for u, p in users.items()))
    subprocess.run(["mosquitto_passwd", "-U", str(pw)], check=True)
    (tmp_path / "acl").write_text(ACL_TEMPLATE.format(controller="controller"))
    tls_port, plain_port = free_port(), free_port()
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(
        "per_listener_settings false\n"
        f"user {getpass.getuser()}\nallow_anonymous false\npassword_file {pw}\nacl_file {tmp_path / 'acl'}\n"
        f"listener {tls_port} 127.0.0.1\ncafile {ca_pem}\ncertfile {cert_pem}\nkeyfile {key_pem}\n"
        f"listener {plain_port} 127.0.0.1\n"
    )
    proc = subprocess.Popen([shutil.which("mosquitto") or "/usr/sbin/mosquitto", "-c", str(conf)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port("127.0.0.1", tls_port)
        wait_port("127.0.0.1", plain_port)
        yield {"tls_port": tls_port, "plain_port": plain_port, "ca": ca_pem, "users": users}
    finally:
        proc.terminate()
        proc.wait(5)


def test_agent_connects_over_tls_and_publishes_birth(tls_broker, keypair, tmp_path):
    cfg = AgentConfig(
        device_id="tls-1", fleet="tls", profile_id="x86-edge", data_dir=tmp_path / "tls-1",
        controller_key=keypair[1], broker_port=tls_broker["tls_port"], username="tls-1",
        password=tls_broker["users"]["tls-1"], tls_ca=tls_broker["ca"], threads=1,
    )
    agent = Agent(cfg)
    stub = ControllerStub("127.0.0.1", tls_broker["plain_port"], tls_broker["users"]["controller"], "tls")
    try:
        agent.start()
        assert agent.connected.wait(10), "no TLS connection"
        stub.wait_for(lambda: "tls-1" in stub.states and stub.states["tls-1"].online, 10, "birth over TLS")
    finally:
        agent.stop()
        stub.close()


def test_agent_refuses_a_broker_its_ca_did_not_sign(tls_broker, keypair, tmp_path):
    other_key = ec.generate_private_key(ec.SECP256R1())
    other_ca = _pem(tmp_path / "other.pem", _cert("someone else", other_key, None, other_key, ca=True))
    cfg = AgentConfig(
        device_id="tls-1", fleet="tls", profile_id="x86-edge", data_dir=tmp_path / "tls-x",
        controller_key=keypair[1], broker_port=tls_broker["tls_port"], username="tls-1",
        password=tls_broker["users"]["tls-1"], tls_ca=other_ca, threads=1, backoff_min_s=0.1, backoff_max_s=0.2,
    )
    agent = Agent(cfg)
    try:
        agent.start()
        assert not agent.connected.wait(2)
    finally:
        agent.stop()


def test_controller_fleet_service_and_agent_both_over_tls(tls_broker, keypair, tmp_path):
    """Issue #13 J: the controller's own MQTT client can use TLS (EDGEFLEET_BROKER_TLS_CA)."""
    from controller.fleet.errors import FleetError
    from controller.fleet.service import FleetService
    from controller.registry import Registry

    reg = Registry(tmp_path / "ws")
    fleet = FleetService(reg, host="127.0.0.1", port=tls_broker["tls_port"], fleet="tls",
                         password=tls_broker["users"]["controller"], tls_ca=tls_broker["ca"])
    cfg = AgentConfig(
        device_id="tls-1", fleet="tls", profile_id="x86-edge", data_dir=tmp_path / "tls-1",
        controller_key=keypair[1], broker_port=tls_broker["tls_port"], username="tls-1",
        password=tls_broker["users"]["tls-1"], tls_ca=tls_broker["ca"], threads=1,
    )
    agent = Agent(cfg)
    try:
        fleet.start(timeout=10)
        agent.start()
        assert fleet.wait_for_devices(["tls-1"], timeout=10), "no birth over TLS on either side"
    finally:
        agent.stop()
        fleet.stop()
    other_key = ec.generate_private_key(ec.SECP256R1())
    other_ca = _pem(tmp_path / "other.pem", _cert("someone else", other_key, None, other_key, ca=True))
    wrong = FleetService(reg, host="127.0.0.1", port=tls_broker["tls_port"], fleet="tls",
                         password=tls_broker["users"]["controller"], tls_ca=other_ca)
    with pytest.raises(FleetError):
        wrong.start(timeout=2)
    reg.close()
