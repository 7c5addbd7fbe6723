"""Capped, jittered exponential backoff for reconnects.

Jitter spreads a fleet's reconnects after a broker restart so thousands of devices do
not hit it in the same second; the cap keeps an offline device from waiting forever.
"""

from __future__ import annotations

import random


class Backoff:
    """Delay sequence ``min * 2**n`` capped at ``max``, each drawn from [50%, 100%] of that.

    Example:
        >>> b = Backoff(0.5, 30.0, rng=random.Random(1))
        >>> [round(b.next(), 2) for _ in range(3)]
        [0.28, 0.92, 1.76]
    """

    def __init__(self, min_s: float = 0.5, max_s: float = 30.0, *, rng: random.Random | None = None) -> None:
        self.min_s = min_s
        self.max_s = max_s
        self.attempt = 0
        self._rng = rng or random.Random()

    def next(self) -> float:
        """The next delay; grows until :meth:`reset`."""
        ceiling = min(self.max_s, self.min_s * 2**self.attempt)
        self.attempt = min(self.attempt + 1, 32)
        return self._rng.uniform(ceiling / 2, ceiling)

    def reset(self) -> None:
        """A connection succeeded: start small again."""
        self.attempt = 0
