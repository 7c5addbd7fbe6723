"""A public "something changed in the fleet" signal: reports arrived, a deployment moved, a rollout acted.

The fleet service notifies after every applied report and every state message; the
rollout engine and the ``wait_*`` helpers sleep on it instead of polling the registry in
a tight loop. A notification carries no payload: whoever wakes re-reads the registry,
which stays the one source of truth.
"""

from __future__ import annotations

import threading


class ChangeNotifier:
    """Wake every waiter when the fleet's state may have changed.

    Example:
        >>> changes = ChangeNotifier()
        >>> changes.notify()
        >>> changes.wait(0.01)
        False
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()

    def notify(self) -> None:
        """Wake every thread blocked in :meth:`wait` (any thread; never blocks for long)."""
        with self._cond:
            self._cond.notify_all()

    def wait(self, timeout: float) -> bool:
        """Sleep until the next notification or ``timeout`` seconds; True if notified.

        A notification sent before the call is not remembered, so callers re-check their
        condition in a loop with a bounded timeout (as the waits of the fleet service do).
        """
        with self._cond:
            return self._cond.wait(max(0.0, timeout))
