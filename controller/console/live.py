"""Server-sent events for the console: one watcher thread per app turns store changes into named events.

Why poll the stores and not hook every writer: job progress is written by job *processes*,
device state by paho's network thread, rollout decisions by the engine thread; the SQLite
files and the fleet's message counters are the one place all of them meet. One thread
computes a cheap stamp per topic every ``interval_s`` (0.25 s) and, when a stamp moves,
pushes the topic name (``devices``, ``telemetry``, ``jobs``, ``deployments``, ``rollouts``)
to every connected browser, which re-fetches the matching fragments with its own key.
Events carry no data, so the stream itself reveals nothing a key would protect.
The thread runs only while someone listens.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

log = logging.getLogger(__name__)

TOPICS = ("devices", "telemetry", "jobs", "deployments", "rollouts")
TICKET_TTL_S = 60.0


class ChangeFeed:
    """Watches the stores and fans named change events out to asyncio subscribers."""

    def __init__(self, services: Any, *, interval_s: float = 0.25, idle_stop_s: float = 30.0) -> None:
        self.services = services
        self.interval_s = interval_s
        self.idle_stop_s = idle_stop_s
        self._subs: dict[int, tuple[asyncio.AbstractEventLoop, asyncio.Queue[str], set[str]]] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stamps: dict[str, Any] = {}
        self._tickets: dict[str, float] = {}
        self.stats = {"ticks": 0, "events": 0, "errors": 0}

    # ------------------------------------------------------------------ tickets (EventSource sends no headers)
    def issue_ticket(self) -> str:
        """A one-use ticket for ``/console/stream`` given to a caller who passed the read check."""
        now = time.monotonic()
        with self._lock:
            self._tickets = {t: exp for t, exp in self._tickets.items() if exp > now}
            ticket = secrets.token_urlsafe(24)
            self._tickets[ticket] = now + TICKET_TTL_S
        return ticket

    def redeem(self, ticket: str) -> bool:
        """True once for a ticket issued less than a minute ago."""
        with self._lock:
            exp = self._tickets.pop(ticket, None)
        return exp is not None and exp > time.monotonic()

    # ------------------------------------------------------------------ subscribers
    async def subscribe(self) -> AsyncIterator[str]:
        """Yield topic names as they change, plus a ``ping`` every 15 s to keep proxies from closing the stream."""
        loop = asyncio.get_running_loop()
        q: asyncio.Queue[str] = asyncio.Queue(maxsize=256)
        pending: set[str] = set()  # topics queued but not yet sent: one pending event per topic is enough
        with self._lock:
            self._subs[id(q)] = (loop, q, pending)
            if self._thread is None or not self._thread.is_alive():
                self._stamps = self._snapshot()
                self._thread = threading.Thread(target=self._run, name="console-feed", daemon=True)
                self._thread.start()
        try:
            while True:
                try:
                    topic = await asyncio.wait_for(q.get(), timeout=15.0)
                except TimeoutError:
                    yield "ping"
                    continue
                pending.discard(topic)
                yield topic
        finally:
            with self._lock:
                self._subs.pop(id(q), None)

    def _publish(self, topic: str) -> None:
        with self._lock:
            subs = list(self._subs.values())
        for loop, q, pending in subs:
            with contextlib.suppress(RuntimeError):  # the subscriber's loop is closing: nothing to tell
                loop.call_soon_threadsafe(_put, q, pending, topic)
        self.stats["events"] += 1

    def _run(self) -> None:
        idle_since: float | None = None
        while True:
            time.sleep(self.interval_s)
            with self._lock:
                listening = bool(self._subs)
            if not listening:
                idle_since = idle_since or time.monotonic()
                if time.monotonic() - idle_since > self.idle_stop_s:
                    with self._lock:
                        if not self._subs:
                            self._thread = None
                            return
                continue
            idle_since = None
            self.check()

    def check(self) -> list[str]:
        """Compare the stamps with the last ones; publish and return the topics that moved."""
        self.stats["ticks"] += 1
        try:
            now = self._snapshot()
        except Exception:  # noqa: BLE001 - a busy database must not kill the feed: try again next tick
            self.stats["errors"] += 1
            log.debug("console feed snapshot failed", exc_info=True)
            return []
        moved = [t for t in TOPICS if now.get(t) != self._stamps.get(t)]
        self._stamps = now
        for topic in moved:
            self._publish(topic)
        return moved

    def _snapshot(self) -> dict[str, Any]:
        from controller.console import queries

        return queries.stamps(self.services)


def _put(q: asyncio.Queue[str], pending: set[str], topic: str) -> None:
    """On the subscriber's loop: queue the topic unless it is already waiting (coalesce bursts)."""
    if topic in pending or q.full():
        return
    pending.add(topic)
    q.put_nowait(topic)


def feed_for(services: Any) -> ChangeFeed:
    """The app's feed (one per :class:`Services`)."""
    extra = services.extra
    feed = extra.get("console_feed")
    if feed is None:
        feed = extra.setdefault("console_feed", ChangeFeed(services))
    return feed
