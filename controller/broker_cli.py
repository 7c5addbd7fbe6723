"""``edgefleet broker``: run mosquitto configured for the fleet, until SIGTERM/SIGINT.

Creates on first run, under ``EDGEFLEET_BROKER_DIR`` (default ``WORKSPACE/broker``): the
controller's broker password (``controller.password``, 0600: the controller reads it from
there, so no password travels through the environment), the dynamic-security accounts file
and, with ``--tls-port``, the CA and the broker's certificate. Later runs keep the accounts
that enrollment added. mosquitto runs as the ``mosquitto`` account when started as root.
"""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import sys
import threading
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``broker`` to the ``edgefleet`` command."""
    p = sub.add_parser("broker", help="run the MQTT broker (mosquitto) for the fleet",
                       description="Run mosquitto for the fleet: per-device accounts bound to their client id and "
                                   "fleet, a TLS listener with the controller's CA, as an unprivileged user.")
    p.add_argument("--dir", type=Path, help="broker folder (default EDGEFLEET_BROKER_DIR or WORKSPACE/broker)")
    p.add_argument("--host", default=None, help="listen address (default EDGEFLEET_BROKER_HOST or 127.0.0.1)")
    p.add_argument("--port", type=int, default=None, help="plain MQTT port (default EDGEFLEET_BROKER_PORT or 1883)")
    p.add_argument("--tls-port", type=int, default=None,
                   help="TLS port with the controller's CA (default EDGEFLEET_BROKER_TLS_PORT; none = no TLS)")
    p.add_argument("--tls-host", action="append", default=None,
                   help="name or IP devices use to reach the broker (repeatable; default the listen address)")
    p.set_defaults(func=run)


def controller_password(folder: Path) -> str:
    """The controller's broker password, created (0600) on first use."""
    path = folder / "controller.password"
    if path.exists():
        return path.read_text().strip()
    folder.mkdir(parents=True, exist_ok=True)
    password = secrets.token_urlsafe(24)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(password + "\n")
    return password


def run(args: argparse.Namespace) -> int:
    """Start mosquitto and block until a signal; exit non-zero if it dies on its own."""
    from controller.broker import BrokerError, Credentials, start_mosquitto
    from controller.settings import Settings

    settings = Settings()
    folder = (args.dir or settings.broker_folder).expanduser().resolve()
    host = args.host or settings.broker_host or "127.0.0.1"
    port = args.port or settings.broker_port
    tls_port = args.tls_port or settings.broker_tls_port
    creds = Credentials()
    creds.add("controller", controller_password(folder))
    tls_hosts = args.tls_host or [settings.broker_public_host or host]
    try:
        handle = start_mosquitto(folder, creds, port=port, host=host, tls_port=tls_port, tls_hosts=tls_hosts,
                                 keep_accounts=True)
    except BrokerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"broker listening on {host}:{port}" + (f", TLS on {tls_port} (CA {handle.ca_cert})" if tls_port else ""))
    print(f"controller password in {folder / 'controller.password'}; start the controller with "
          f"EDGEFLEET_BROKER_HOST={host} EDGEFLEET_BROKER_PORT={port}"
          + (f" EDGEFLEET_BROKER_TLS_PORT={tls_port}" if tls_port else "")
          + (f" EDGEFLEET_BROKER_DIR={folder}" if args.dir else ""), flush=True)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    try:
        while not stop.wait(1.0):
            if handle.returncode is not None:
                print(f"error: mosquitto exited with {handle.returncode}; see {folder / 'mosquitto.log'}",
                      file=sys.stderr)
                return 1
    finally:
        handle.stop()
    return 0
