from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from common.errors import ProtocolError, ReasonCode
from common.keys import generate_keypair, load_or_create_private_key, load_public_key
from common.manifest import (
    Manifest,
    blob_ref,
    iter_chunks,
    read_chunk,
    sha256_file,
    sign_manifest,
    verify_manifest,
)
from tests.manifests import make_manifest


@pytest.fixture
def blob(tmp_path: Path) -> Path:
    path = tmp_path / "model.onnx"
    path.write_bytes(bytes(range(256)) * 1000 + b"tail")
    return path


def test_blob_ref_hashes_whole_file_and_every_chunk(blob):
    ref = blob_ref("model", blob, chunk_size=4096)
    data = blob.read_bytes()
    assert ref.sha256 == hashlib.sha256(data).hexdigest() == sha256_file(blob)
    assert ref.size == len(data)
    assert ref.chunk_count == -(-len(data) // 4096)
    for i in (0, 5, ref.chunk_count - 1):
        chunk = read_chunk(blob, i, 4096)
        assert hashlib.sha256(chunk).hexdigest() == ref.chunk_sha256[i]
    assert b"".join(iter_chunks(blob, 4096)) == data


def test_sign_and_verify_round_trip(tmp_path, blob):
    key = generate_keypair(tmp_path / "k", tmp_path / "k.pub")
    signed = sign_manifest(make_manifest(blob), key)
    verify_manifest(signed, load_public_key(tmp_path / "k.pub"))
    again = Manifest.model_validate_json(signed.model_dump_json())
    verify_manifest(again, key.public_key())
    assert (tmp_path / "k").stat().st_mode & 0o777 == 0o600


def test_tampered_manifest_fails_verification(blob):
    key = Ed25519PrivateKey.generate()
    signed = sign_manifest(make_manifest(blob), key)
    tampered = signed.model_copy(update={"profile": "jetson-orin-nano"})
    with pytest.raises(ProtocolError) as err:
        verify_manifest(tampered, key.public_key())
    assert err.value.reason is ReasonCode.SIGNATURE_INVALID


def test_other_key_and_unsigned_are_rejected(blob):
    key, other = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    signed = sign_manifest(make_manifest(blob), key)
    with pytest.raises(ProtocolError, match="agent pins"):
        verify_manifest(signed, other.public_key())
    with pytest.raises(ProtocolError, match="not signed"):
        verify_manifest(make_manifest(blob), key.public_key())
    forged = signed.model_copy(update={"signature": "!!notbase64"})
    with pytest.raises(ProtocolError, match="does not match"):
        verify_manifest(forged, key.public_key())


def test_manifest_without_model_file_is_refused(blob):
    key = Ed25519PrivateKey.generate()
    golden_only = make_manifest(blob, files=[blob_ref("golden", blob, chunk_size=4096)])
    with pytest.raises(ProtocolError, match="no 'model' file"):
        verify_manifest(sign_manifest(golden_only, key), key.public_key())


@pytest.mark.parametrize("name", ["../evil.onnx", "a/b.onnx", "..onnx", ".hidden"])
def test_path_tricks_in_filenames_are_rejected(blob, name):
    with pytest.raises(ValueError):
        blob_ref("model", blob, chunk_size=4096, filename=name)


def test_private_key_created_once_and_reloaded(tmp_path):
    k1 = load_or_create_private_key(tmp_path / "ctl.key")
    k2 = load_or_create_private_key(tmp_path / "ctl.key")
    assert k1.public_key().public_bytes_raw() == k2.public_key().public_bytes_raw()
    assert load_public_key(tmp_path / "ctl.pub").public_bytes_raw() == k1.public_key().public_bytes_raw()


def test_wrong_key_types_are_refused(tmp_path):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    ec_key = ec.generate_private_key(ec.SECP256R1())
    (tmp_path / "ec.key").write_bytes(
        ec_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    (tmp_path / "ec.pub").write_bytes(
        ec_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    with pytest.raises(ValueError, match="not an Ed25519 private key"):
        load_or_create_private_key(tmp_path / "ec.key")
    with pytest.raises(ValueError, match="not an Ed25519 public key"):
        load_public_key(tmp_path / "ec.pub")
