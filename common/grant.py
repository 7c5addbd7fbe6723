"""The controller's signed instruction to install one manifest on one device (anti-rollback, anti-replay).

A :class:`~common.manifest.Manifest` says *what* an artifact is and is signed once per artifact,
so on its own it can be replayed: an older, validly signed manifest republished under a new
deployment id was committed (issue #13 G). Like Uptane's director metadata, a :class:`Grant` binds
one manifest (by digest) to one deployment, fleet and device (or profile), with an expiry, and
carries two counters the agent keeps high-water marks of:

* ``counter``: the version counter of (fleet, model): each version gets the next number the first
  time it is granted in the fleet, so a higher counter is a later release. An agent refuses a
  counter below the highest it committed for that model (``rollback_refused``) unless the grant's
  ``rollback_to`` names the manifest's model sha256: an explicit, signed rollback instruction.
* ``serial``: a per-fleet sequence of grants. A grant older than the newest one the agent accepted
  is an old instruction played back (``replayed``).

Signed with the same Ed25519 key as manifests; verified against the key the agent pins.
"""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import datetime
from typing import Annotated, Literal

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from pydantic import BaseModel, ConfigDict, Field

from common.compat import UTC
from common.errors import ProtocolError, ReasonCode
from common.manifest import Manifest, key_id

Id = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]
Sha256 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
Counter = Annotated[int, Field(ge=1, le=2**63 - 1)]


def manifest_digest(manifest: Manifest) -> str:
    """sha256 of the manifest's signed bytes plus its signature: names exactly one signed manifest."""
    return hashlib.sha256(manifest.signing_bytes() + manifest.signature.encode()).hexdigest()


class Grant(BaseModel):
    """Signed: install ``manifest_sha256`` on ``device_id`` (or any device of ``profile``) for ``deployment_id``."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    fleet: Id
    device_id: Id | None = None
    profile: str | None = Field(default=None, max_length=64)
    deployment_id: Id
    kind: Literal["deploy", "rollback"] = "deploy"
    model_id: Id
    version: Id
    counter: Counter
    serial: Counter
    rollback_to: Sha256 | None = None
    manifest_sha256: Sha256
    issued_at: datetime
    expires_at: datetime
    key_id: str = ""
    signature: str = ""

    def signing_bytes(self) -> bytes:
        """Canonical JSON of everything but the signature."""
        data = self.model_dump(mode="json", exclude={"signature"})
        return json.dumps(data, sort_keys=True, separators=(",", ":")).encode()


def sign_grant(grant: Grant, private_key: Ed25519PrivateKey) -> Grant:
    """The grant with key id and signature filled in."""
    unsigned = grant.model_copy(update={"key_id": key_id(private_key.public_key()), "signature": ""})
    sig = private_key.sign(unsigned.signing_bytes())
    return unsigned.model_copy(update={"signature": base64.b64encode(sig).decode()})


def grant_for(*, manifest: Manifest, deployment_id: str, kind: str, fleet: str, device_id: str,
              counter: int, serial: int, private_key: Ed25519PrivateKey, ttl_s: float = 3600.0,
              rollback_to: str | None = None) -> Grant:
    """A signed grant for one device (what the controller's issuer makes; also used by stubs and tests)."""
    from datetime import timedelta

    now = datetime.now(UTC)
    return sign_grant(Grant(
        fleet=fleet, device_id=device_id, deployment_id=deployment_id, kind=kind,  # type: ignore[arg-type]
        model_id=manifest.model_id, version=manifest.version, counter=counter, serial=serial,
        rollback_to=rollback_to, manifest_sha256=manifest_digest(manifest), issued_at=now,
        expires_at=now + timedelta(seconds=ttl_s)), private_key)


def verify_grant(grant: Grant | None, public_key: Ed25519PublicKey) -> Grant:
    """Raise ProtocolError(SIGNATURE_INVALID) unless the pinned key signed exactly this grant."""
    if grant is None or not grant.signature:
        raise ProtocolError(ReasonCode.SIGNATURE_INVALID,
                            "desired carries no signed grant (a controller older than this agent?)")
    if grant.key_id != key_id(public_key):
        raise ProtocolError(ReasonCode.SIGNATURE_INVALID, f"grant signed by key {grant.key_id!r}, "
                                                          f"agent pins {key_id(public_key)!r}")
    try:
        public_key.verify(base64.b64decode(grant.signature, validate=True), grant.signing_bytes())
    except (InvalidSignature, ValueError) as exc:
        raise ProtocolError(ReasonCode.SIGNATURE_INVALID, "grant signature does not match") from exc
    return grant


def check_grant_binding(grant: Grant, *, manifest: Manifest, deployment_id: str, kind: str, fleet: str,
                        device_id: str, profile: str, now: datetime | None = None) -> None:
    """The grant is for this manifest, deployment, fleet and device, and has not expired.

    Raises ProtocolError with ``replayed`` (bound to something else), ``wrong_target`` (another
    fleet, device or profile) or ``expired``.
    """
    if grant.manifest_sha256 != manifest_digest(manifest) or grant.deployment_id != deployment_id \
            or grant.kind != kind or grant.model_id != manifest.model_id or grant.version != manifest.version:
        raise ProtocolError(ReasonCode.REPLAYED,
                            f"grant of deployment {grant.deployment_id} ({grant.model_id}@{grant.version}, "
                            f"{grant.kind}) does not cover deployment {deployment_id} of "
                            f"{manifest.model_id}@{manifest.version} ({kind})")
    if grant.fleet != fleet:
        raise ProtocolError(ReasonCode.WRONG_TARGET, f"grant is for fleet {grant.fleet!r}, not {fleet!r}")
    if grant.device_id is not None and grant.device_id != device_id:
        raise ProtocolError(ReasonCode.WRONG_TARGET, f"grant is for device {grant.device_id!r}, not {device_id!r}")
    if grant.device_id is None and grant.profile != profile:
        raise ProtocolError(ReasonCode.WRONG_TARGET, f"grant is for profile {grant.profile!r}, not {profile!r}")
    now = now or datetime.now(UTC)
    expires = grant.expires_at if grant.expires_at.tzinfo else grant.expires_at.replace(tzinfo=UTC)
    if expires <= now:
        raise ProtocolError(ReasonCode.EXPIRED, f"grant expired at {expires.isoformat()} (device clock "
                                                f"{now.isoformat()}); the controller re-signs on re-deploy")
