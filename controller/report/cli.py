"""``edgefleet report JOB_OR_VERSION_OR_DEPLOYMENT_OR_ROLLOUT [--out DIR] [--charts] [--open]``.

Fetches the report from the controller (``$EDGEFLEET_URL``, key ``$EDGEFLEET_API_KEY``), writes
``<out>/<id>/report.html`` and, with ``--charts``, every chart as SVG and PNG beside it; ``--open``
shows it in the default browser. Imports nothing heavy at module level.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


def register(sub: Any) -> None:
    """Add ``report``."""
    p = sub.add_parser("report", help="save (and open) the HTML report of a job, version, deployment or rollout")
    p.add_argument("ref", help="job, version, deployment or rollout id")
    p.add_argument("--out", type=Path, default=Path("build/reports"), help="folder (default build/reports)")
    p.add_argument("--charts", action="store_true", help="also save every chart as SVG and PNG")
    p.add_argument("--open", action="store_true", help="open the report in the default browser")
    p.add_argument("--url", default=None, help="controller URL (default $EDGEFLEET_URL or http://127.0.0.1:8080)")
    p.add_argument("--key", default=None, help="API key (default $EDGEFLEET_API_KEY)")
    p.set_defaults(func=_run)


def fetch_report(client: Any, ref: str, out: Path, *, charts: bool = False) -> Path:
    """Save the report (and optionally its charts) under ``out/ref``; returns the HTML path."""
    from controller.client_cli import ClientError

    folder = out / ref
    folder.mkdir(parents=True, exist_ok=True)
    resp = client.http.get(f"{client.base}/reports/{ref}")
    if resp.status_code >= 400:
        try:
            message = resp.json().get("message")
        except ValueError:
            message = resp.text[:200]
        raise ClientError(f"HTTP {resp.status_code}: {message}")
    html = folder / "report.html"
    html.write_bytes(resp.content)
    if charts:
        data = client.call("GET", f"/reports/{ref}", params={"format": "json"})
        (folder / "charts").mkdir(exist_ok=True)
        for section in data["sections"]:
            for chart in section["charts"]:
                for ext in ("svg", "png"):
                    client.download(f"/reports/{ref}/charts/{chart['name']}.{ext}",
                                    folder / "charts" / f"{chart['name']}.{ext}")
    return html


def _run(args: argparse.Namespace) -> int:
    from controller.client_cli import Client, ClientError

    try:
        path = fetch_report(Client(args.url, args.key, timeout=120), args.ref, args.out, charts=args.charts)
    except ClientError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(path)
    if args.open:
        import webbrowser

        webbrowser.open(path.resolve().as_uri())
    return 0
