"""The controller's grant issuer (issue #13 G): counters that stay monotonic, grants that are reused or re-signed."""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from common.grant import check_grant_binding, manifest_digest, verify_grant
from common.manifest import Manifest, blob_ref, sign_manifest
from controller.fleet.grants import GrantIssuer


def _manifest(tmp: Path, key: Ed25519PrivateKey, version: str) -> Manifest:
    f = tmp / f"{version}.onnx"
    f.write_bytes(version.encode() * 600)
    return sign_manifest(Manifest(model_id="m1", version=version, profile="rpi4", format="onnx",
                                  quality_metric="cosine", files=[blob_ref("model", f, 1024)]), key)


def test_counters_serials_reuse_and_loss_of_the_file(tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    v1, v2 = _manifest(tmp_path, key, "v1"), _manifest(tmp_path, key, "v2")
    issuer = GrantIssuer(tmp_path / "grants.sqlite", key)
    g1 = issuer.grant(fleet="f", device_id="d1", deployment_id="dep1", manifest=v1, kind="deploy",
                      version_created_ms=1_000)
    g2 = issuer.grant(fleet="f", device_id="d1", deployment_id="dep2", manifest=v2, kind="deploy",
                      version_created_ms=2_000)
    again = issuer.grant(fleet="f", device_id="d1", deployment_id="dep1", manifest=v1, kind="deploy",
                         version_created_ms=1_000)
    assert again == g1  # a re-published desired carries the same grant
    assert (g1.counter, g2.counter) == (1_000, 2_000) and g2.serial > g1.serial
    assert verify_grant(g2, key.public_key()) is g2 and g2.manifest_sha256 == manifest_digest(v2)
    check_grant_binding(g2, manifest=v2, deployment_id="dep2", kind="deploy", fleet="f", device_id="d1",
                        profile="rpi4")
    back = issuer.grant(fleet="f", device_id="d1", deployment_id="dep3", manifest=v1, kind="rollback",
                        version_created_ms=1_000, rollback_to=v1.blob("model").sha256)
    assert back.counter == 1_000 and back.rollback_to == v1.blob("model").sha256 and back.serial > g2.serial
    issuer.close()

    (tmp_path / "grants.sqlite").unlink()  # lost (or restored from an old backup): devices must not refuse new work
    fresh = GrantIssuer(tmp_path / "grants2.sqlite", key)
    g3 = fresh.grant(fleet="f", device_id="d1", deployment_id="dep4", manifest=v2, kind="deploy",
                     version_created_ms=2_000)
    assert g3.counter == g2.counter and g3.serial > back.serial  # anchored to creation time and the clock
    fresh.close()


def test_a_grant_near_its_expiry_is_re_signed(tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    v1 = _manifest(tmp_path, key, "v1")
    issuer = GrantIssuer(tmp_path / "grants.sqlite", key, ttl=timedelta(seconds=0.2))
    first = issuer.grant(fleet="f", device_id="d1", deployment_id="dep1", manifest=v1, kind="deploy")
    time.sleep(0.15)  # past half its life
    second = issuer.grant(fleet="f", device_id="d1", deployment_id="dep1", manifest=v1, kind="deploy")
    assert second.serial > first.serial and second.expires_at > first.expires_at and second.counter == first.counter
    issuer.close()
