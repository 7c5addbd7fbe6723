"""Run the controller under uvicorn, refusing an unsafe bind.

The API has no other gate than its keys, so binding to anything but loopback without a
key configured would hand the fleet to the network: that is refused at start-up.
"""

from __future__ import annotations

import logging

from controller.api.auth import KeyRing
from controller.settings import Settings, is_loopback

log = logging.getLogger(__name__)


class UnsafeBindError(RuntimeError):
    """Binding to a non-loopback interface with no API key configured."""


def check_bind(host: str, keys: KeyRing) -> None:
    """Raise :class:`UnsafeBindError` unless ``host`` is loopback or at least one API key is configured."""
    if not is_loopback(host) and not len(keys):
        raise UnsafeBindError(
            f"refusing to listen on {host!r} without an API key: configure EDGEFLEET_API_KEYS or "
            "EDGEFLEET_API_KEYS_FILE (see `edgefleet apikey NAME`), or bind to 127.0.0.1")


def warn_open_reads(settings: Settings, keys: KeyRing) -> bool:
    """Log a warning when anyone may read; returns whether reads are open."""
    if len(keys) and settings.open_reads:
        log.warning("EDGEFLEET_OPEN_READS is on: the audit log, model downloads, device lists and /metrics are "
                    "readable without an API key by anyone who can reach %s:%s", settings.api_host, settings.api_port)
        return True
    return False


def serve(settings: Settings, host: str | None = None, port: int | None = None) -> None:
    """Start uvicorn in the foreground until SIGINT/SIGTERM; running jobs are then failed as interrupted."""
    import uvicorn

    from controller.api.app import create_app

    host = host or settings.api_host
    port = settings.api_port if port is None else port
    keys = KeyRing.from_settings(settings.api_keys, settings.api_keys_file)
    check_bind(host, keys)
    if not len(keys):
        log.warning("no API key configured: local development mode, writes allowed from this machine only")
    warn_open_reads(settings, keys)
    # The app's lifespan opens and closes the services (job runner, fleet): uvicorn re-raises the
    # SIGTERM/SIGINT it caught once it has shut down, so cleanup after ``run()`` returns would never run.
    app = create_app(settings)
    config = uvicorn.Config(app, host=host, port=port, log_level="info", access_log=False,
                            timeout_graceful_shutdown=5)
    uvicorn.Server(config).run()
