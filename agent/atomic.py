"""Crash-safe file replacement: write a temp file, fsync it, rename over the target, fsync the folder.

After a power cut or SIGKILL a reader sees either the old content or the new, never a torn file;
the journal, the slot pointer and slot metadata all go through here.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


def fsync_dir(path: Path) -> None:
    """Make a rename inside ``path`` durable (no-op where directories cannot be opened, e.g. Windows)."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write_bytes(path: Path, data: bytes, *, durable: bool = True) -> None:
    """Replace ``path`` with ``data`` atomically.

    Args:
        path: target file; its folder is created if missing.
        data: the full new content.
        durable: fsync file and folder (skip only for data that is re-verified anyway, like chunks).

    Example:
        >>> import tempfile; p = Path(tempfile.mkdtemp()) / "x.json"
        >>> atomic_write_bytes(p, b"{}"); p.read_bytes()
        b'{}'
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        if durable:
            fh.flush()
            os.fsync(fh.fileno())
    os.replace(tmp, path)
    if durable:
        fsync_dir(path.parent)
