"""``edgefleet controller`` (run the API) and ``edgefleet apikey``, plus the HTTP client commands.

Imports nothing heavy at module level: ``edgefleet --help`` must not load FastAPI.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any


def _add(sub: Any, name: str, **kwargs: Any) -> argparse.ArgumentParser | None:
    """Add a subcommand unless another module already registered that name."""
    if name in sub.choices:
        return None
    return sub.add_parser(name, **kwargs)


def register(sub: Any) -> None:
    """Add ``controller``, ``apikey`` and the client commands (``models``, ``jobs``, ``deploy``, ``devices``)."""
    p = _add(sub, "controller", help="run the controller REST API (settings from the environment)")
    if p is not None:
        p.add_argument("--host", default=None, help="bind address (default EDGEFLEET_API_HOST or 127.0.0.1)")
        p.add_argument("--port", type=int, default=None, help="port (default EDGEFLEET_API_PORT or 8080)")
        p.add_argument("--workspace", default=None, help="override COMPRESSION_WORKSPACE")
        p.add_argument("--with-broker", action="store_true",
                       help="also run the MQTT broker (mosquitto, as `edgefleet broker`) on EDGEFLEET_BROKER_PORT "
                            "and EDGEFLEET_BROKER_TLS_PORT (default 1883 / 8883), stopped with the controller")
        p.set_defaults(func=_run_controller)
    p = _add(sub, "apikey", help="generate an API key; prints the key once and the hashed entry to configure")
    if p is not None:
        p.add_argument("name", help="who the key is for (appears in the audit log)")
        p.add_argument("--read-only", action="store_true", help="key may only read")
        p.set_defaults(func=_run_apikey)
    from controller import client_cli

    client_cli.register(sub, _add)


def _run_controller(args: argparse.Namespace) -> int:
    from controller.api.server import UnsafeBindError, serve
    from controller.settings import Settings

    overrides = {"compression_workspace": args.workspace} if args.workspace else {}
    settings = Settings(**overrides)
    broker = None
    if getattr(args, "with_broker", False):
        from controller.broker import BrokerError

        try:
            broker, settings = _start_broker(settings)
        except BrokerError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    try:
        serve(settings, host=args.host, port=args.port)
    except UnsafeBindError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # uvicorn re-raises Ctrl-C after a clean shutdown
        return 130
    finally:
        if broker is not None:
            broker.stop()
    return 0


def _start_broker(settings: Any) -> tuple[Any, Any]:
    """mosquitto for this controller (accounts, CA and password under the broker folder); the
    settings returned point the fleet service at it."""
    from controller.broker import Credentials, start_mosquitto
    from controller.broker_cli import controller_password

    folder = settings.broker_folder
    host = settings.broker_host or "127.0.0.1"
    tls_port = settings.broker_tls_port or 8883
    creds = Credentials()
    creds.add("controller", controller_password(folder))
    handle = start_mosquitto(folder, creds, port=settings.broker_port, host=host, tls_port=tls_port,
                             tls_hosts=[settings.broker_public_host or host], keep_accounts=True)
    print(f"broker on {host}:{settings.broker_port}, TLS {tls_port} (CA {handle.ca_cert})", file=sys.stderr)
    return handle, settings.model_copy(update={"broker_host": host, "broker_tls_port": tls_port})


def _run_apikey(args: argparse.Namespace) -> int:
    from controller.api.auth import KeyConfigError, Role, generate_key

    try:
        token, entry = generate_key(args.name, Role.READ_ONLY if args.read_only else Role.READ_WRITE)
    except KeyConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"key (shown once, give it to the client as EDGEFLEET_API_KEY): {token}")
    print(f"entry (add to EDGEFLEET_API_KEYS or the keys file): {entry}")
    return 0
