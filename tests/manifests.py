"""The one factory for test manifests: files hashed by ``common.manifest.blob_ref``, signed on request.

Why one: seven tests built a ``Manifest`` by hand with the same defaults and drifted in which
fields they set. Defaults describe an ONNX model for the ``rpi4`` profile judged by cosine;
a test overrides only what it is about.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from common.manifest import BlobRef, Manifest, blob_ref, sign_manifest

DEFAULTS: dict[str, Any] = {"model_id": "m1", "version": "v1", "profile": "rpi4", "format": "onnx",
                            "quality_metric": "cosine"}


def make_manifest(model: Path | None = None, golden: Path | None = None, *, chunk_size: int = 4096,
                  model_filename: str | None = None, golden_filename: str | None = None,
                  files: list[BlobRef] | None = None, **fields: Any) -> Manifest:
    """An unsigned manifest for a model file (and a golden file); ``files`` replaces both, ``fields`` override.

    Example:
        >>> make_manifest(Path("m.onnx"), profile="x86-edge", technique="int8")  # doctest: +SKIP
    """
    if files is None:
        files = [] if model is None else [blob_ref("model", model, chunk_size, filename=model_filename)]
        if golden is not None:
            files.append(blob_ref("golden", golden, chunk_size, filename=golden_filename))
    return Manifest(**{**DEFAULTS, "files": files, **fields})


def signed_manifest(model: Path | None = None, golden: Path | None = None, *,
                    key: Ed25519PrivateKey | None = None, **kwargs: Any) -> Manifest:
    """:func:`make_manifest` signed with ``key`` (None: a fresh key, for stores that only check a signature)."""
    return sign_manifest(make_manifest(model, golden, **kwargs), key or Ed25519PrivateKey.generate())
