"""Thread-safe counters of what the fleet service saw (messages per kind, refusals, chunks sent)."""

from __future__ import annotations

import threading
from collections import Counter


class Counters:
    """A :class:`collections.Counter` safe to bump from paho's network thread and the chunk sender."""

    def __init__(self) -> None:
        self._counts: Counter[str] = Counter()
        self._lock = threading.Lock()

    def count(self, key: str, n: int = 1) -> None:
        """Add ``n`` to one counter."""
        with self._lock:
            self._counts[key] += n

    def snapshot(self) -> dict[str, int]:
        """A copy of every counter."""
        with self._lock:
            return dict(self._counts)
