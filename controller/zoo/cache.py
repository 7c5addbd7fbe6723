"""Where the zoo keeps what it builds once: exported ONNX files and trained weights.

The cache lives in ``$EDGEFLEET_CACHE`` (default ``~/.cache/edgefleet``). Entries are keyed by a
hash of the code that produced them, so editing a model definition or its training recipe builds a
fresh entry instead of silently serving a stale one. Writes are atomic (temp file + rename) because
tests, the benchmark and the demo may build the same entry from several processes at once.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path


def cache_dir() -> Path:
    """The root cache directory, created on first use."""
    from controller.settings import Settings

    root = Settings().cache_dir
    root.mkdir(parents=True, exist_ok=True)
    return root


def code_key(*parts: str | bytes, files: tuple[Path, ...] = ()) -> str:
    """A short stable hash of strings and source files (what makes a cache entry stale)."""
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part.encode() if isinstance(part, str) else part)
        digest.update(b"\0")
    for file in files:
        digest.update(Path(file).read_bytes())
    return digest.hexdigest()[:16]


def cached_file(path: Path, build: Callable[[Path], None]) -> Path:
    """Return ``path``, calling ``build(tmp)`` to create it atomically when it does not exist yet."""
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        build(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
