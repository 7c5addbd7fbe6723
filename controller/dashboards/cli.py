"""``edgefleet homeassistant publish`` and ``edgefleet grafana-dashboard``: hooks for the dashboards users run."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any


def register(sub: Any) -> None:
    """Add ``homeassistant publish`` and ``grafana-dashboard``."""
    p = sub.add_parser("homeassistant", help="Home Assistant MQTT discovery for the fleet's devices")
    hsub = p.add_subparsers(dest="ha_command", metavar="ACTION", required=True)
    pub = hsub.add_parser("publish", help="publish retained discovery configs for every device (via the controller)")
    pub.add_argument("--prefix", default="homeassistant", help="discovery prefix (default homeassistant)")
    pub.add_argument("--url", default=None, help="controller URL (default $EDGEFLEET_URL)")
    pub.add_argument("--key", default=None, help="read-write API key (default $EDGEFLEET_API_KEY)")
    pub.set_defaults(func=_publish)
    g = sub.add_parser("grafana-dashboard", help="print the Grafana dashboard JSON for the controller's /metrics")
    g.set_defaults(func=_grafana)


def _publish(args: argparse.Namespace) -> int:
    from controller.client_cli import Client, ClientError

    try:
        data = Client(args.url, args.key).call("POST", "/fleet/homeassistant", params={"prefix": args.prefix})
    except ClientError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(data))
    return 0


def _grafana(args: argparse.Namespace) -> int:
    from controller.dashboards import GRAFANA_DASHBOARD

    sys.stdout.write(GRAFANA_DASHBOARD.read_text())
    return 0
