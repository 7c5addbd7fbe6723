"""The controller's own CA for the broker's TLS listener.

Devices connect over networks the operator does not control; they must know they talk to
*this* fleet's broker. The controller creates a CA once (EC P-256, key never leaves the
controller's broker folder, mode 0600), issues the broker's server certificate for the names
and addresses devices use, and hands the CA certificate to every device in its enrollment
bundle. Re-issuing the server certificate (new host name) does not change what devices pin.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_YEARS = 10
SERVER_DAYS = 825


@dataclass(frozen=True)
class CertificateAuthority:
    """Paths of the CA certificate (give it to devices) and its private key (keep it here)."""

    cert: Path
    key: Path


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    path.chmod(0o600)


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "edgefleet"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def ensure_ca(folder: Path, *, name: str = "edgefleet broker CA") -> CertificateAuthority:
    """The CA in ``folder`` (``ca.pem`` + ``ca.key``), created on first use.

    Example:
        >>> ca = ensure_ca(Path("/var/lib/edgefleet/broker/ca"))  # doctest: +SKIP
    """
    folder.mkdir(parents=True, exist_ok=True)
    ca = CertificateAuthority(folder / "ca.pem", folder / "ca.key")
    if ca.cert.exists() and ca.key.exists():
        return ca
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(name)).issuer_name(_name(name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=365 * CA_YEARS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                     crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
        .sign(key, hashes.SHA256())
    )
    _write_key(ca.key, key)
    ca.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return ca


def _san(hosts: list[str]) -> x509.SubjectAlternativeName:
    names: list[x509.GeneralName] = []
    for host in dict.fromkeys(hosts):
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return x509.SubjectAlternativeName(names)


def issue_server_certificate(ca: CertificateAuthority, folder: Path, hosts: list[str]) -> tuple[Path, Path]:
    """The broker's certificate for ``hosts`` (DNS names or IPs), signed by ``ca``; reused while still valid
    for the same hosts.

    Returns:
        (certificate path, private key path).
    """
    folder.mkdir(parents=True, exist_ok=True)
    cert_path, key_path, meta = folder / "server.pem", folder / "server.key", folder / "server.json"
    want = {"hosts": sorted(set(hosts)), "ca": ca.cert.read_text()}
    if cert_path.exists() and key_path.exists() and meta.exists() and json.loads(meta.read_text()) == want:
        existing = x509.load_pem_x509_certificate(cert_path.read_bytes())
        if existing.not_valid_after_utc > dt.datetime.now(dt.UTC) + dt.timedelta(days=30):
            return cert_path, key_path
    ca_cert = x509.load_pem_x509_certificate(ca.cert.read_bytes())
    ca_key = serialization.load_pem_private_key(ca.key.read_bytes(), password=None)
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(hosts[0])).issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=SERVER_DAYS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(_san(hosts), critical=False)
        .sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]
    )
    _write_key(key_path, key)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    meta.write_text(json.dumps(want))
    return cert_path, key_path
