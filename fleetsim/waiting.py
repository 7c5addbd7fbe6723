"""The one way tests, benchmarks and the fleet doubles wait for something on another thread, process or device.

Why one: a hand-written poll loop per test file drifted (some returned False on timeout, some
raised without saying what they waited for). :func:`wait_until` returns the predicate's first
truthy value and, on timeout, fails with what it waited for; a caller whose contract is "False
on timeout" catches that one ``AssertionError``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until(predicate: Callable[[], T], timeout: float = 10.0, what: str | Callable[[], str] = "condition",
               interval: float = 0.02, *, condition: threading.Condition | None = None) -> T:
    """Poll ``predicate`` until it returns a truthy value, and return that value.

    Args:
        predicate: checked at once, then every ``interval`` seconds, and a last time at the deadline.
        timeout: seconds before failing; generous bounds keep tests stable on a loaded machine.
        what: what is awaited (or a callable building it at failure time), for the failure message.
        interval: seconds between checks.
        condition: a held ``threading.Condition`` notified when the state changes: wait on it
            instead of sleeping, so the check runs as soon as the state moves.

    Raises:
        AssertionError: the predicate stayed falsy for ``timeout`` seconds.

    Example:
        >>> wait_until(lambda: 42, timeout=1, what="the answer")
        42
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        left = deadline - time.monotonic()
        if left <= 0:
            break
        if condition is not None:
            condition.wait(min(left, interval))
        else:
            time.sleep(min(left, interval))
    label = what() if callable(what) else what
    raise AssertionError(f"timed out after {timeout:g}s waiting for {label}")
