"""Resumable chunked download of an artifact's files, one file per chunk on disk.

Each chunk is checked against the per-chunk sha256 of the *signed* manifest as it arrives,
so a corrupt or truncated chunk is dropped and asked for again instead of poisoning the
file; duplicates are idempotent and order does not matter. Chunks are stored as separate
files, so after a crash the download continues with the chunks still missing. Requests
go out in windows so a small device is never flooded with a whole model at once.
"""

from __future__ import annotations

import hashlib
import logging
import math
import shutil
import time
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path

from agent.atomic import atomic_write_bytes
from agent.errors import ArtifactVerificationError
from common.errors import ReasonCode
from common.manifest import BlobRef, Manifest, sha256_file

log = logging.getLogger(__name__)


class ChunkOutcome(StrEnum):
    """What happened to one received chunk."""

    STORED = "stored"
    DUPLICATE = "duplicate"
    CORRUPT = "corrupt"
    UNKNOWN = "unknown"


def expected_chunk_count(ref: BlobRef) -> int:
    """Chunks a blob of this size must have."""
    return math.ceil(ref.size / ref.chunk_size)


class BlobDownload:
    """Chunks of one file under ``<root>/<sha256>/``."""

    def __init__(self, root: Path, ref: BlobRef) -> None:
        self.ref = ref
        self.dir = root / ref.sha256
        self.dir.mkdir(parents=True, exist_ok=True)
        self.have: set[int] = set()
        self._scan()

    @property
    def assembled_path(self) -> Path:
        """Where the verified whole file is written."""
        return self.dir / "blob"

    def _chunk_path(self, index: int) -> Path:
        return self.dir / f"{index}.chunk"

    def _expected_len(self, index: int) -> int:
        last = self.ref.chunk_count - 1
        return self.ref.chunk_size if index < last else self.ref.size - self.ref.chunk_size * last

    def _valid(self, index: int, payload: bytes) -> bool:
        return (
            len(payload) == self._expected_len(index)
            and hashlib.sha256(payload).hexdigest() == self.ref.chunk_sha256[index]
        )

    def _scan(self) -> None:
        """Re-check chunks left by an earlier run; a bad one (torn write, power cut) is deleted."""
        for path in self.dir.glob("*.chunk"):
            try:
                index = int(path.stem)
            except ValueError:
                continue
            if 0 <= index < self.ref.chunk_count and self._valid(index, path.read_bytes()):
                self.have.add(index)
            else:
                path.unlink(missing_ok=True)

    def import_file(self, path: Path) -> int:
        """Take missing chunks from a local copy (e.g. the same golden set already in a slot); returns chunks taken.

        Every chunk still passes :meth:`accept`, so a local file that differs is simply not used.
        """
        taken = 0
        with path.open("rb") as fh:
            for index in self.missing():
                fh.seek(index * self.ref.chunk_size)
                if self.accept(index, fh.read(self.ref.chunk_size)) is ChunkOutcome.STORED:
                    taken += 1
        return taken

    def missing(self) -> list[int]:
        """Indices not yet stored, ascending."""
        return [i for i in range(self.ref.chunk_count) if i not in self.have]

    def complete(self) -> bool:
        """All chunks are on disk."""
        return len(self.have) == self.ref.chunk_count

    def accept(self, index: int, payload: bytes) -> ChunkOutcome:
        """Check and store one chunk."""
        if not 0 <= index < self.ref.chunk_count:
            return ChunkOutcome.UNKNOWN
        if index in self.have:
            return ChunkOutcome.DUPLICATE
        if not self._valid(index, payload):
            return ChunkOutcome.CORRUPT
        atomic_write_bytes(self._chunk_path(index), payload, durable=False)
        self.have.add(index)
        return ChunkOutcome.STORED

    def assemble(self) -> Path:
        """Join the chunks and check whole-file size and sha256 against the manifest.

        Raises:
            ArtifactVerificationError: the joined file does not match (the chunks are discarded).
        """
        target = self.assembled_path
        if target.exists() and target.stat().st_size == self.ref.size and sha256_file(target) == self.ref.sha256:
            return target
        whole = hashlib.sha256()
        tmp = target.with_suffix(".tmp")
        with tmp.open("wb") as out:
            for index in range(self.ref.chunk_count):
                data = self._chunk_path(index).read_bytes() if index in self.have else b""
                whole.update(data)
                out.write(data)
        size = tmp.stat().st_size
        if size != self.ref.size or whole.hexdigest() != self.ref.sha256:
            tmp.unlink(missing_ok=True)
            self.discard()
            raise ArtifactVerificationError(
                ReasonCode.HASH_MISMATCH,
                f"{self.ref.role} file {self.ref.filename}: got {size} bytes sha256 {whole.hexdigest()[:12]}…, "
                f"manifest says {self.ref.size} bytes sha256 {self.ref.sha256[:12]}…",
            )
        tmp.replace(target)
        return target

    def discard(self) -> None:
        """Delete everything downloaded for this blob."""
        shutil.rmtree(self.dir, ignore_errors=True)
        self.have.clear()


RequestFn = Callable[[str, list[int]], None]
"""Sends a ChunkRequest for (blob sha256, missing indices)."""


class Downloader:
    """All files of one manifest: windowed requests, re-requests when idle, stall detection.

    Example:
        >>> dl = Downloader(root, manifest, request=lambda sha, idx: None)  # doctest: +SKIP
        >>> dl.start(); dl.on_chunk(sha, 0, payload)  # doctest: +SKIP
    """

    def __init__(
        self,
        root: Path,
        manifest: Manifest,
        request: RequestFn,
        *,
        window: int = 64,
        clock: Callable[[], float] = time.monotonic,
        local: dict[str, Path] | None = None,
    ) -> None:
        self.blobs = {ref.sha256: BlobDownload(root, ref) for ref in manifest.files}
        self.reused = 0
        for sha, path in (local or {}).items():
            blob = self.blobs.get(sha)
            if blob is not None and not blob.complete() and path.exists():
                self.reused += blob.import_file(path)
        self._request = request
        self._window = max(1, window)
        self._clock = clock
        self._requested: dict[str, set[int]] = {sha: set() for sha in self.blobs}
        self.last_progress = clock()
        self.last_request = 0.0
        self.corrupt = 0

    def complete(self) -> bool:
        """Every file has all its chunks."""
        return all(b.complete() for b in self.blobs.values())

    @property
    def corrupt_budget(self) -> int:
        """Corrupt chunks tolerated before the download is abandoned (each one triggers a re-request)."""
        return max(32, sum(b.ref.chunk_count for b in self.blobs.values()))

    def missing_count(self) -> int:
        """Chunks still to come, over all files."""
        return sum(len(b.missing()) for b in self.blobs.values())

    def start(self) -> None:
        """Ask for the first window of every file (after a restart: only what is missing)."""
        self.last_progress = self._clock()
        self._refill(force=True)

    def _refill(self, *, force: bool = False) -> None:
        for sha, blob in self.blobs.items():
            missing = blob.missing()
            if not missing:
                continue
            outstanding = self._requested[sha] & set(missing)
            if force:
                outstanding = set()
            if len(outstanding) > self._window // 2:
                continue
            fresh = [i for i in missing if i not in outstanding][: self._window - len(outstanding)]
            if fresh:
                self._requested[sha] = outstanding | set(fresh)
                self.last_request = self._clock()
                self._request(sha, fresh)

    def on_chunk(self, sha: str, index: int, payload: bytes) -> ChunkOutcome:
        """Store a received chunk; a corrupt one is asked for again straight away."""
        blob = self.blobs.get(sha)
        if blob is None:
            return ChunkOutcome.UNKNOWN
        outcome = blob.accept(index, payload)
        if outcome is ChunkOutcome.STORED:
            self.last_progress = self._clock()
            self._refill()
        elif outcome is ChunkOutcome.CORRUPT:
            self.corrupt += 1
            log.warning("chunk %d of %s failed its sha256/size check; asking again", index, sha[:12])
            self.last_request = self._clock()
            self._request(sha, [index])
        return outcome

    def tick(self, rerequest_after_s: float) -> None:
        """Re-request everything missing when nothing has arrived for a while (lost messages, controller restart)."""
        now = self._clock()
        if self.complete():
            return
        if now - max(self.last_progress, self.last_request) >= rerequest_after_s:
            log.info("no chunk for %.1fs; re-requesting %d missing", now - self.last_progress, self.missing_count())
            self._refill(force=True)

    def stalled_for(self) -> float:
        """Seconds since the last chunk was stored."""
        return self._clock() - self.last_progress

    def assemble(self) -> dict[str, Path]:
        """Verified whole files by role."""
        return {blob.ref.role: blob.assemble() for blob in self.blobs.values()}

    def discard(self) -> None:
        """Delete every partial or assembled file of this manifest."""
        for blob in self.blobs.values():
            blob.discard()
