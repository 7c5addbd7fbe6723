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
    parser.add_argument("--device-id", required=True, help="this device's id (also its MQTT client id and username)")
    parser.add_argument("--fleet", required=True, help="fleet name (topic level under fl/v1/)")
    parser.add_argument("--profile", required=True, help="device profile id from profiles/ or a path to a .toml")
    parser.add_argument("--broker", type=_broker, default=("127.0.0.1", 1883), help="HOST:PORT")
    parser.add_argument("--username", help="MQTT username (default: the device id)")
    parser.add_argument("--password-file", type=Path, help="file holding the MQTT password")
    parser.add_argument("--data-dir", type=Path, required=True, help="journal, slots and downloads live here")
    parser.add_argument("--controller-key", type=Path, required=True, help="pinned controller Ed25519 public key (PEM)")
    parser.add_argument("--telemetry-interval", type=float, default=30.0, help="seconds between telemetry samples")
    parser.add_argument("--threads", type=int, help="inference threads (default: profile cores, capped by this CPU)")
    parser.add_argument("--bench-runs", type=int, default=50, help="timed runs per benchmark")
    parser.add_argument("--bench-warmup", type=int, default=5, help="warm-up runs per benchmark")
    parser.add_argument("--download-timeout", type=float, default=300.0, help="seconds without a chunk before failing")
    parser.add_argument("--rerequest-interval", type=float, default=3.0, help="seconds idle before re-requesting")
    parser.add_argument("--tls-ca", type=Path, help="broker CA certificate (PEM): connect with TLS")
    parser.add_argument("--accept-ungranted", action="store_true",
                        help="accept desired states without a signed grant (controllers older than this agent; "
                             "disables anti-rollback/expiry checks: upgrade window only)")
    parser.add_argument("--fresh-baseline", action="store_true",
                        help="re-benchmark the active model before each candidate (noisy shared hosts)")


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
        agent = Agent(_config(args, AgentConfig))
    except (ConfigError, ProfileError, OSError, ValueError) as exc:
        log.error("cannot start the agent: %s", exc)
        return 2

    def _stop(signum: int, frame: object) -> None:
        log.info("signal %d: shutting down", signum)
        agent.stop_event.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    return agent.run_forever()


def _config(args: argparse.Namespace, config_cls: type) -> object:
    password = args.password_file.read_text().strip() if args.password_file else None
    return config_cls(
        device_id=args.device_id,
        fleet=args.fleet,
        profile_id=args.profile,
        data_dir=args.data_dir,
        controller_key=args.controller_key,
        broker_host=args.broker[0],
        broker_port=args.broker[1],
        username=args.username or args.device_id,
        password=password,
        threads=args.threads,
        bench_runs=args.bench_runs,
        bench_warmup=args.bench_warmup,
        telemetry_interval_s=args.telemetry_interval,
        download_timeout_s=args.download_timeout,
        rerequest_interval_s=args.rerequest_interval,
        fresh_baseline=args.fresh_baseline,
        accept_ungranted=args.accept_ungranted,
        tls_ca=args.tls_ca,
    )


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``agent`` to the ``edgefleet`` command."""
    parser = sub.add_parser("agent", help="run the on-device agent", description=__doc__.splitlines()[0])
    add_arguments(parser)
    parser.set_defaults(func=run)
