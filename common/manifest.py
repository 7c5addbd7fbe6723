"""The artifact manifest: what a device may install, signed by the controller.

An agent trusts nothing it downloads until (1) the manifest's Ed25519 signature
verifies against the controller key it pinned at provisioning, and (2) each chunk
matches the per-chunk sha256 listed in that signed manifest, and (3) the whole
blob matches its sha256 and size. Per-chunk hashes let an agent reject one bad
chunk and ask for it again instead of restarting a large download.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    field_validator,
    model_serializer,
    model_validator,
)

from common.compat import UTC
from common.errors import ProtocolError, ReasonCode
from common.tensorrt_recipe import TensorrtRecipe

DEFAULT_CHUNK_SIZE = 128 * 1024
MAX_CHUNK_SIZE = 256 * 1024
Sha256 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
SafeName = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")]


class BlobRef(BaseModel):
    """One file of an artifact (the model, its golden set) and how it is chunked."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    role: Literal["model", "golden"]
    filename: SafeName
    sha256: Sha256
    size: int = Field(ge=1)
    chunk_size: int = Field(ge=1024, le=MAX_CHUNK_SIZE)
    chunk_sha256: list[Sha256]

    @field_validator("filename")
    @classmethod
    def _no_dots(cls, v: str) -> str:
        if ".." in v:
            raise ValueError("filename must not contain '..'")
        return v

    @property
    def chunk_count(self) -> int:
        """Number of chunks the blob is split into."""
        return len(self.chunk_sha256)


class Thresholds(BaseModel):
    """Regression gate an agent applies between the candidate and its active model.

    Ratios compare candidate to the active model's baseline measured on the same
    device; slacks absorb timer/RSS noise on tiny models so noise alone never
    triggers a rollback.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    max_latency_ratio: float = Field(default=1.25, gt=0)
    latency_slack_ms: float = Field(default=0.5, ge=0)
    max_memory_ratio: float = Field(default=1.3, gt=0)
    memory_slack_mb: float = Field(default=16.0, ge=0)
    min_quality: float = Field(default=0.98, ge=0, le=1)
    max_quality_drop: float = Field(default=0.02, ge=0, le=1)


class Manifest(BaseModel):
    """Signed description of an artifact for one device profile.

    ``tensorrt_recipe`` (optional, ONNX artifacts only) tells a device with TensorRT how to build
    the engine of the model blob; it is part of what is signed. It is additive: left out of the
    JSON (and of the signed bytes) when absent, so manifests without it are byte-for-byte what
    they were and ``schema_version`` stays 1. An agent that predates the field refuses a manifest
    carrying it as ``malformed_payload`` (unknown field), never silently ignores it.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    schema_version: Literal[1] = 1
    model_id: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]
    model_name: str = ""
    version: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]
    parent_version: str | None = None
    profile: str
    format: Literal["onnx", "tflite"]
    technique: str = "fp32"
    quality_metric: Literal["cosine", "top1"]
    files: list[BlobRef]
    thresholds: Thresholds = Thresholds()
    created_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    key_id: str = ""
    signature: str = ""
    tensorrt_recipe: TensorrtRecipe | None = None

    @model_validator(mode="after")
    def _recipe_fits_model(self) -> Manifest:
        """A recipe must describe the model blob this manifest ships, or the device would build
        (and cache under that model's key) an engine from an ONNX nobody checked."""
        recipe = self.tensorrt_recipe
        if recipe is None:
            return self
        if self.format != "onnx":
            raise ValueError(f"tensorrt_recipe needs format 'onnx', not {self.format!r}")
        models = [ref for ref in self.files if ref.role == "model"]
        if models and recipe.onnx_sha256 != models[0].sha256:
            raise ValueError("tensorrt_recipe.onnx_sha256 is not the sha256 of the manifest's model file")
        return self

    @model_serializer(mode="wrap")
    def _omit_absent_recipe(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """Keep manifests without a recipe exactly as before (wire JSON and signed bytes)."""
        data = handler(self)
        if data.get("tensorrt_recipe") is None:
            data.pop("tensorrt_recipe", None)
        return data

    def blob(self, role: str) -> BlobRef:
        """The file with the given role; a manifest without a model is refused at verification."""
        for ref in self.files:
            if ref.role == role:
                return ref
        raise ProtocolError(ReasonCode.MALFORMED_PAYLOAD, f"manifest has no {role!r} file")

    def signing_bytes(self) -> bytes:
        """Canonical JSON of everything but the signature: what is signed and verified."""
        data = self.model_dump(mode="json", exclude={"signature"})
        return json.dumps(data, sort_keys=True, separators=(",", ":")).encode()


def key_id(public_key: Ed25519PublicKey) -> str:
    """Short fingerprint naming a key, so rotated keys can be told apart."""
    from cryptography.hazmat.primitives import serialization

    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def sign_manifest(manifest: Manifest, private_key: Ed25519PrivateKey) -> Manifest:
    """Return the manifest with key id and Ed25519 signature filled in."""
    unsigned = manifest.model_copy(update={"key_id": key_id(private_key.public_key()), "signature": ""})
    sig = private_key.sign(unsigned.signing_bytes())
    return unsigned.model_copy(update={"signature": base64.b64encode(sig).decode()})


def verify_manifest(manifest: Manifest, public_key: Ed25519PublicKey) -> None:
    """Raise ProtocolError(SIGNATURE_INVALID) unless the pinned key signed exactly this manifest."""
    if not manifest.signature:
        raise ProtocolError(ReasonCode.SIGNATURE_INVALID, "manifest is not signed")
    if manifest.key_id != key_id(public_key):
        raise ProtocolError(
            ReasonCode.SIGNATURE_INVALID,
            f"manifest signed by key {manifest.key_id!r}, agent pins {key_id(public_key)!r}",
        )
    try:
        public_key.verify(base64.b64decode(manifest.signature, validate=True), manifest.signing_bytes())
    except (InvalidSignature, ValueError) as exc:
        raise ProtocolError(ReasonCode.SIGNATURE_INVALID, "signature does not match manifest") from exc
    manifest.blob("model")


def iter_chunks(path: Path, chunk_size: int = DEFAULT_CHUNK_SIZE) -> Iterator[bytes]:
    """Read a file chunk by chunk without holding it all in memory."""
    with path.open("rb") as fh:
        while block := fh.read(chunk_size):
            yield block


def blob_ref(role: str, path: Path, chunk_size: int = DEFAULT_CHUNK_SIZE, filename: str | None = None) -> BlobRef:
    """Describe a file for a manifest: whole and per-chunk sha256."""
    whole = hashlib.sha256()
    chunks: list[str] = []
    size = 0
    for block in iter_chunks(path, chunk_size):
        whole.update(block)
        chunks.append(hashlib.sha256(block).hexdigest())
        size += len(block)
    return BlobRef(
        role=role,  # type: ignore[arg-type]
        filename=filename or path.name,
        sha256=whole.hexdigest(),
        size=size,
        chunk_size=chunk_size,
        chunk_sha256=chunks,
    )


def read_chunk(path: Path, index: int, chunk_size: int) -> bytes:
    """One chunk of a file, for answering a chunk request."""
    with path.open("rb") as fh:
        fh.seek(index * chunk_size)
        return fh.read(chunk_size)


def sha256_file(path: Path) -> str:
    """Streaming sha256 of a file."""
    h = hashlib.sha256()
    for block in iter_chunks(path, 1 << 20):
        h.update(block)
    return h.hexdigest()
