"""``edgefleet agent`` / ``python -m agent``: run one device's agent until SIGTERM.

Only argparse is imported at module level so ``edgefleet --help`` stays fast; the daemon
(paho, psutil, onnxruntime) is imported when the command runs.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def _broker(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {value!r}")
    return host, int(port)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The agent's options (shared by ``edgefleet agent`` and ``python -m agent``)."""
    parser.add_argument("--config", type=Path,
                        help="agent.toml from `edgefleet devices register --out DIR`; options below override it")
    parser.add_argument("--device-id", help="this device's id (also its MQTT client id and username)")
    parser.add_argument("--fleet", help="fleet name (topic level under fl/v1/)")
    parser.add_argument("--profile", help="device profile id from profiles/ or a path to a .toml")
    parser.add_argument("--broker", type=_broker, help="HOST:PORT (default 127.0.0.1:1883)")
    parser.add_argument("--username", help="MQTT username (default: the device id)")
    parser.add_argument("--password-file", type=Path, help="file holding the MQTT password")
    parser.add_argument("--data-dir", type=Path, help="journal, slots and downloads live here")
    parser.add_argument("--controller-key", type=Path, help="pinned controller Ed25519 public key (PEM)")
    parser.add_argument("--telemetry-interval", type=float, help="seconds between telemetry samples (default 30)")
    parser.add_argument("--threads", type=int, help="inference threads (default: profile cores, capped by this CPU)")
    parser.add_argument("--bench-runs", type=int, help="timed runs per benchmark (default 50)")
    parser.add_argument("--bench-warmup", type=int, help="warm-up runs per benchmark (default 5)")
    parser.add_argument("--download-timeout", type=float, help="seconds without a chunk before failing (default 300)")
    parser.add_argument("--rerequest-interval", type=float, help="seconds idle before re-requesting (default 3)")
    parser.add_argument("--max-auth-failures", type=int,
                        help="refused logins in a row before exiting with code 3 (default 5; 0 = retry forever)")
    parser.add_argument("--tls-ca", type=Path, help="broker CA certificate (PEM): connect with TLS")
    parser.add_argument("--accept-ungranted", action="store_true", default=None,
                        help="accept desired states without a signed grant (controllers older than this agent; "
                             "disables anti-rollback/expiry checks: upgrade window only)")
    parser.add_argument("--fresh-baseline", action="store_true", default=None,
                        help="re-benchmark the active model before each candidate (noisy shared hosts)")
    parser.add_argument("--serve-socket", type=Path,
                        help="Unix socket where applications call the active model (default DATA_DIR/serve.sock)")
    parser.add_argument("--serve-port", type=int, help="also serve on this loopback TCP port")
    parser.add_argument("--no-serve", action="store_true", default=None,
                        help="do not serve the active model to applications")


def run(args: argparse.Namespace) -> int:
    """Build the config from parsed args and run the agent until SIGTERM/SIGINT."""
    import logging
    import signal

    from agent.config import AgentConfig
    from agent.daemon import Agent
    from agent.errors import ConfigError
    from common.profiles import ProfileError

    log = logging.getLogger(__name__)
    try:
        agent = Agent(AgentConfig(**config_kwargs(args)))
    except (ConfigError, ProfileError, OSError, ValueError, TypeError) as exc:
        log.error("cannot start the agent: %s", exc)
        return 2

    def _stop(signum: int, frame: object) -> None:
        log.info("signal %d: shutting down", signum)
        agent.stop_event.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    return agent.run_forever()


_FLAGS = {  # CLI option -> AgentConfig field, for options that override the config file
    "device_id": "device_id", "fleet": "fleet", "profile": "profile_id", "data_dir": "data_dir",
    "controller_key": "controller_key", "username": "username", "threads": "threads", "bench_runs": "bench_runs",
    "bench_warmup": "bench_warmup", "telemetry_interval": "telemetry_interval_s",
    "download_timeout": "download_timeout_s", "rerequest_interval": "rerequest_interval_s",
    "fresh_baseline": "fresh_baseline", "tls_ca": "tls_ca", "serve_socket": "serve_socket",
    "serve_port": "serve_port", "max_auth_failures": "max_auth_failures",
    "accept_ungranted": "accept_ungranted",
}
REQUIRED = ("device_id", "fleet", "profile_id", "data_dir", "controller_key")


def config_kwargs(args: argparse.Namespace) -> dict[str, object]:
    """AgentConfig arguments: the ``--config`` file first, then every option given on the command line.

    Raises:
        ConfigError: a required setting is in neither (named with its option).
    """
    from agent.config import read_config_file
    from agent.errors import ConfigError

    out: dict[str, object] = read_config_file(args.config) if getattr(args, "config", None) else {}
    for flag, name in _FLAGS.items():
        value = getattr(args, flag, None)
        if value is not None:
            out[name] = value
    if args.broker is not None:
        out["broker_host"], out["broker_port"] = args.broker
    if args.password_file is not None:
        try:
            out["password"] = args.password_file.read_text().strip()
        except OSError as exc:
            raise ConfigError(f"cannot read --password-file {args.password_file}: {exc}") from exc
    if args.no_serve:
        out["serve"] = False
    missing = [name for name in REQUIRED if out.get(name) is None]
    if missing:
        flags = ", ".join("--" + next(f for f, n in _FLAGS.items() if n == m).replace("_", "-") for m in missing)
        raise ConfigError(f"missing {flags} (or give --config agent.toml from `edgefleet devices register --out`)")
    out.setdefault("username", out["device_id"])
    return out


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``agent`` to the ``edgefleet`` command."""
    parser = sub.add_parser(
        "agent", help="run the on-device agent",
        description="Run this device's agent: receive, verify, benchmark and commit or roll back models; serve the "
                    "active one to applications. Start it from an enrollment bundle with --config.")
    add_arguments(parser)
    parser.set_defaults(func=run)
