"""The fleet's public change notification wakes waiters from another thread and times out otherwise."""

from __future__ import annotations

import threading
import time

from controller.fleet.changes import ChangeNotifier


def test_notify_wakes_a_waiter_and_silence_times_out() -> None:
    changes = ChangeNotifier()
    woke: list[bool] = []
    waiter = threading.Thread(target=lambda: woke.append(changes.wait(30)))
    waiter.start()
    deadline = time.monotonic() + 10
    while waiter.is_alive() and time.monotonic() < deadline:
        changes.notify()  # repeated: the waiter may not be waiting yet on the first one
        waiter.join(0.05)
    assert woke == [True]
    started = time.monotonic()
    assert changes.wait(0.05) is False and time.monotonic() - started < 5
