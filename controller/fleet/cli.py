"""``edgefleet fleet status|deployment``: what the controller knows about devices and deployments.

From any machine over the REST API (``--url`` / ``$EDGEFLEET_URL``, ``$EDGEFLEET_API_KEY``), or
on the controller host with ``--workspace`` straight from the registry (no running controller
needed: SQLite WAL allows concurrent readers). Imports nothing heavy at module level, so
``edgefleet --help`` stays fast.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``fleet status`` and ``fleet deployment ID`` to the ``edgefleet`` parser."""
    p = sub.add_parser("fleet", help="devices and deployments as recorded by the controller")
    p.add_argument("--workspace", type=Path,
                   help="read this registry workspace directly instead of asking the controller over REST")
    p.add_argument("--url", default=None, help="controller URL (default $EDGEFLEET_URL or http://127.0.0.1:8080)")
    fsub = p.add_subparsers(dest="fleet_command", metavar="ACTION", required=True)
    st = fsub.add_parser("status", help="every device: presence, profile, active model, last benchmark")
    st.add_argument("--json", action="store_true", help="machine-readable output")
    st.set_defaults(func=_cmd_status)
    dep = fsub.add_parser("deployment", help="one deployment with each device's state and reason")
    dep.add_argument("deployment_id")
    dep.add_argument("--json", action="store_true", help="machine-readable output")
    dep.set_defaults(func=_cmd_deployment)


class _Remote:
    """The registry calls these commands make, answered by the controller's REST API."""

    def __init__(self, url: str | None) -> None:
        from controller.client_cli import Client

        self.client = Client(url)
        self.devices = self.deployments = self  # the registry's sub-stores these commands use

    def __enter__(self) -> _Remote:
        return self

    def __exit__(self, *exc: object) -> None:
        self.client.http.close()

    def list_devices(self) -> list:
        from types import SimpleNamespace

        return [SimpleNamespace(**d, as_dict=lambda d=d: d) for d in self.client.call("GET", "/devices")]

    def get_deployment(self, *, deployment_id: str) -> object:
        from types import SimpleNamespace

        from controller.client_cli import ClientError
        from controller.registry import NotFoundError

        try:
            data = self.client.call("GET", f"/deployments/{deployment_id}")
        except ClientError as exc:
            raise NotFoundError(str(exc)) from exc
        devices = [SimpleNamespace(**d, state=SimpleNamespace(value=d["state"])) for d in data.get("devices", [])]
        counts = {s: [d["state"] for d in data.get("devices", [])].count(s) for s in
                  dict.fromkeys(d["state"] for d in data.get("devices", []))}
        return SimpleNamespace(**{**data, "devices": devices, "state": SimpleNamespace(value=data["state"])},
                               as_dict=lambda: data, counts=lambda: counts)


def _source(args: argparse.Namespace) -> object:
    """The registry on this host (``--workspace``) or the controller's REST API."""
    if args.workspace:
        from controller.registry import Registry

        return Registry(args.workspace)
    return _Remote(args.url)


def _model(ref: dict | None) -> str:
    return f"{ref['model_id'][:8]}@{ref['version'][:8]}" if ref else "-"


def _cmd_status(args: argparse.Namespace) -> int:
    from controller.client_cli import ClientError

    try:
        with _source(args) as reg:  # type: ignore[attr-defined]
            return _print_status(args, reg.devices.list_devices())
    except ClientError as exc:
        print(f"error: {exc}")
        return 1


def _print_status(args: argparse.Namespace, devices: list) -> int:
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


def _cmd_deployment(args: argparse.Namespace) -> int:
    from controller.registry import NotFoundError

    with _source(args) as reg:  # type: ignore[attr-defined]
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
