"""``edgefleet fleet status|deployment``: what the registry knows about devices and rollouts.

Reads the registry only (no broker connection), so it works while the controller
runs (SQLite WAL allows concurrent readers) and after it stopped. Imports nothing
heavy at module level, so ``edgefleet --help`` stays fast.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``fleet status`` and ``fleet deployment ID`` to the ``edgefleet`` parser."""
    p = sub.add_parser("fleet", help="devices and deployments as recorded by the controller")
    p.add_argument("--workspace", type=Path, help="registry workspace (default: COMPRESSION_WORKSPACE)")
    fsub = p.add_subparsers(dest="fleet_command", metavar="ACTION", required=True)
    st = fsub.add_parser("status", help="every device: presence, profile, active model, last benchmark")
    st.add_argument("--json", action="store_true", help="machine-readable output")
    st.set_defaults(func=_cmd_status)
    dep = fsub.add_parser("deployment", help="one deployment with each device's state and reason")
    dep.add_argument("deployment_id")
    dep.add_argument("--json", action="store_true", help="machine-readable output")
    dep.set_defaults(func=_cmd_deployment)


def _workspace(args: argparse.Namespace) -> Path:
    if args.workspace:
        return args.workspace
    from controller.settings import Settings

    return Settings().compression_workspace


def _model(ref: dict | None) -> str:
    return f"{ref['model_id'][:8]}@{ref['version'][:8]}" if ref else "-"


def _cmd_status(args: argparse.Namespace) -> int:
    from controller.registry import Registry

    with Registry(_workspace(args)) as reg:
        devices = reg.devices.list_devices()
        if args.json:
            print(json.dumps([d.as_dict() for d in devices], indent=2, default=str))
            return 0
        if not devices:
            print("no devices recorded yet")
            return 0
        print(f"{'device':<24} {'online':<6} {'profile':<18} {'active':<18} {'p95 ms':>8} {'quality':>8}  decision")
        for d in devices:
            bench = d.last_bench or {}
            metrics = bench.get("candidate_metrics") or {}
            p95 = f"{metrics['latency_p95_ms']:.2f}" if metrics else "-"
            quality = f"{metrics['quality']:.4f}" if metrics else "-"
            print(
                f"{d.id:<24} {'yes' if d.online else 'no':<6} {d.profile:<18} {_model(d.active):<18} "
                f"{p95:>8} {quality:>8}  {bench.get('decision', '-')}"
            )
    return 0


def _cmd_deployment(args: argparse.Namespace) -> int:
    from controller.registry import NotFoundError, Registry

    with Registry(_workspace(args)) as reg:
        try:
            dep = reg.deployments.get_deployment(deployment_id=args.deployment_id)
        except NotFoundError as exc:
            print(f"error: {exc}")
            return 1
        if args.json:
            out = dep.as_dict()
            out.pop("manifest", None)
            print(json.dumps(out, indent=2, default=str))
            return 0
        print(f"deployment {dep.id} ({dep.kind}) version {dep.version_id}: {dep.state.value} {dep.counts()}")
        for d in dep.devices:
            print(f"  {d.device_id:<24} {d.state.value:<12} {d.reason:<20} {d.detail[:80]}")
    return 0
