"""Content-addressed blob store: ``<root>/<sha[:2]>/<sha>``, written atomically.

A blob's name is its sha256, so the same model uploaded twice is stored once,
and a file on disk can always be checked against its name. Writes go to a
temporary file in the same filesystem, are fsynced, then renamed into place:
a crash or a failed upload never leaves a half-written blob under a real name.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import time
from pathlib import Path

from controller.registry.errors import InvalidInputError, NotFoundError

_COPY_BLOCK = 1 << 20


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class StagedBlob:
    """A fully written, fsynced temporary file whose sha256 is known, waiting to be committed."""

    def __init__(self, store: BlobStore, tmp: Path, sha256: str, size: int) -> None:
        self.store = store
        self.tmp = tmp
        self.sha256 = sha256
        self.size = size
        self.created = False

    def commit(self) -> Path:
        """Rename into place; returns the final path. ``created`` says whether the blob is new."""
        final = self.store.path_for(self.sha256)
        if final.exists():
            self.tmp.unlink(missing_ok=True)
            return final
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(self.tmp, final)
        os.chmod(final, 0o444)
        _fsync_dir(final.parent)
        self.created = True
        return final

    def undo(self) -> None:
        """Remove what this staging wrote: the temp file, and the blob itself if commit created it."""
        self.tmp.unlink(missing_ok=True)
        if self.created:
            self.store.path_for(self.sha256).unlink(missing_ok=True)
            self.created = False


class BlobStore:
    """Files named by their sha256 under one root directory."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.tmp_dir = root / "tmp"
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        self._sweep_tmp()

    def _sweep_tmp(self, older_than_s: float = 3600.0) -> None:
        """Remove temp files left by a crashed writer (old enough not to belong to a live one)."""
        cutoff = time.time() - older_than_s
        for p in self.tmp_dir.iterdir():
            try:
                if p.stat().st_mtime < cutoff:
                    p.unlink()
            except OSError:
                pass

    def path_for(self, sha256: str) -> Path:
        """Where a blob with this digest lives (whether or not it exists)."""
        if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
            raise InvalidInputError(f"invalid sha256 {sha256!r}: expected 64 lowercase hex characters")
        return self.root / sha256[:2] / sha256

    def existing(self, sha256: str) -> Path:
        """Path of a stored blob; NotFoundError if it is not on disk."""
        path = self.path_for(sha256)
        if not path.is_file():
            raise NotFoundError(f"blob {sha256} is not in the store at {self.root}")
        return path

    def stage(self, *, path: Path | None = None, data: bytes | None = None) -> StagedBlob:
        """Copy a file (or bytes) into a temp file while hashing it, fsync, and return it staged.

        Nothing is visible under a blob name until :meth:`StagedBlob.commit`.
        """
        if (path is None) == (data is None):
            raise InvalidInputError("give exactly one of path= or data=")
        if path is not None and not Path(path).is_file():
            raise InvalidInputError(f"{path} is not a readable file")
        fd, tmp_name = tempfile.mkstemp(dir=self.tmp_dir, prefix="blob-")
        tmp = Path(tmp_name)
        digest = hashlib.sha256()
        size = 0
        try:
            with os.fdopen(fd, "wb") as out:
                if data is not None:
                    digest.update(data)
                    out.write(data)
                    size = len(data)
                else:
                    with Path(path).open("rb") as src:  # type: ignore[arg-type]
                        while block := src.read(_COPY_BLOCK):
                            digest.update(block)
                            out.write(block)
                            size += len(block)
                out.flush()
                os.fsync(out.fileno())
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        if size == 0:
            tmp.unlink(missing_ok=True)
            raise InvalidInputError("refusing to store an empty file")
        return StagedBlob(self, tmp, digest.hexdigest(), size)

    def remove(self, sha256: str) -> None:
        """Delete a blob file (used only when its registry row could not be written)."""
        self.path_for(sha256).unlink(missing_ok=True)

    def copy_out(self, sha256: str, dest: Path) -> Path:
        """Copy a blob to ``dest`` (e.g. a download), leaving the store untouched."""
        shutil.copyfile(self.existing(sha256), dest)
        return dest
