"""Keep Home Assistant's MQTT discovery configs published for every device of the fleet.

The configs themselves come from :mod:`controller.fleet.homeassistant` (one retained config per
sensor, pointing at the agents' own telemetry and state topics) and are published through
``FleetService.publish_ha_discovery``; this module decides *when*: once for every known device
at start, then for each device the registry learns about later (checked every ``interval_s``).
Retained configs survive a controller restart, so re-publishing at start is idempotent.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

log = logging.getLogger(__name__)


class HomeAssistantAnnouncer:
    """A daemon thread publishing discovery configs for devices not yet announced."""

    def __init__(self, fleet: Any, *, prefix: str = "homeassistant", interval_s: float = 5.0) -> None:
        self.fleet = fleet
        self.prefix = prefix
        self.interval_s = interval_s
        self.announced: set[str] = set()
        self.published = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def announce_new(self) -> int:
        """Publish configs for every device not announced yet; returns how many configs were published."""
        new = [d.id for d in self.fleet.registry.devices.list_devices() if d.id not in self.announced]
        if not new:
            return 0
        n = self.fleet.publish_ha_discovery(new, prefix=self.prefix)
        self.announced.update(new)
        self.published += n
        log.info("published %d Home Assistant discovery configs for %d device(s)", n, len(new))
        return n

    def start(self) -> HomeAssistantAnnouncer:
        """Announce now and keep announcing new devices in the background."""
        self._thread = threading.Thread(target=self._run, name="ha-discovery", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while True:
            try:
                self.announce_new()
            except Exception:  # noqa: BLE001 - broker away for a moment: try again next round
                log.warning("Home Assistant discovery publish failed; retrying", exc_info=True)
            if self._stop.wait(self.interval_s):
                return

    def stop(self) -> None:
        """Stop the thread (the retained configs stay on the broker)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None
