"""HTTP client commands over the controller API (httpx): ``models``, ``jobs``, ``deploy``, ``devices``.

They talk to ``$EDGEFLEET_URL`` (default ``http://127.0.0.1:8080``) with ``$EDGEFLEET_API_KEY``
as the bearer key, print the envelope's ``data`` as JSON (``message`` on stderr), and exit
non-zero with the server's message on an error envelope, so scripts and CI can chain them.
``edgefleet jobs watch ID`` draws a live progress bar until the job finishes.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

TERMINAL = {"succeeded", "failed", "cancelled"}


class ClientError(RuntimeError):
    """The server answered with an error envelope or could not be reached."""


class Client:
    """Thin httpx wrapper that unwraps the ``{status, data, message}`` envelope."""

    def __init__(self, url: str | None = None, key: str | None = None, timeout: float = 30.0) -> None:
        import httpx

        self.base = (url or os.environ.get("EDGEFLEET_URL") or "http://127.0.0.1:8080").rstrip("/") + "/api/v1"
        key = key or os.environ.get("EDGEFLEET_API_KEY")
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.http = httpx.Client(headers=headers, timeout=timeout)

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        """One request; returns ``data`` or raises :class:`ClientError` with the server's message."""
        import httpx

        try:
            resp = self.http.request(method, self.base + path, **kwargs)
        except httpx.HTTPError as exc:
            raise ClientError(f"cannot reach the controller at {self.base}: {exc}") from exc
        try:
            body = resp.json()
        except ValueError:
            raise ClientError(f"HTTP {resp.status_code}: not a JSON response") from None
        if resp.status_code >= 400 or body.get("status") != "ok":
            raise ClientError(f"HTTP {resp.status_code}: {body.get('message') or body}")
        if body.get("message"):
            print(body["message"], file=sys.stderr)
        return body.get("data")

    def download(self, path: str, dest: Path) -> Path:
        """Stream a file response to ``dest``."""
        with self.http.stream("GET", self.base + path) as resp:
            if resp.status_code >= 400:
                resp.read()
                raise ClientError(f"HTTP {resp.status_code}: {resp.json().get('message')}")
            with dest.open("wb") as out:
                for chunk in resp.iter_bytes():
                    out.write(chunk)
        return dest


def _print(data: Any) -> None:
    print(json.dumps(data, indent=2, sort_keys=True, default=str))


def _params(pairs: list[str] | None) -> dict[str, Any]:
    """``key=value`` pairs; values parsed as JSON when they are JSON (numbers, true, lists), else strings."""
    out: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep:
            raise ClientError(f"parameter {pair!r} is not key=value")
        try:
            out[key] = json.loads(value)
        except ValueError:
            out[key] = value
    return out


def watch_job(client: Client, job_id: str, interval: float = 0.5) -> dict[str, Any]:
    """Poll a job and draw a rich progress bar (percent + current stage) until it is finished."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("[bold]{task.fields[state]:>9}"), BarColumn(), TextColumn("{task.percentage:>5.1f}%"),
                  TimeElapsedColumn(), TextColumn("{task.description}"), transient=False) as bar:
        task = bar.add_task("queued", total=100, state="queued")
        while True:
            job = client.call("GET", f"/compression/jobs/{job_id}")
            bar.update(task, completed=job["progress"], description=job.get("stage") or "", state=job["state"])
            if job["state"] in TERMINAL:
                return job
            time.sleep(interval)


# ---------------------------------------------------------------- handlers
def _models(args: argparse.Namespace, c: Client) -> Any:  # noqa: C901 - one branch per subcommand
    a = args.action
    if a == "list":
        return c.call("GET", "/compression/models", params={k: v for k, v in {
            "name": args.name, "tag": args.tag, "format": args.format, "profile": args.profile,
            "page": args.page}.items() if v is not None})
    if a == "show":
        return c.call("GET", f"/compression/models/{args.model}")
    if a == "versions":
        return c.call("GET", f"/compression/models/{args.model}/versions")
    if a == "version":
        return c.call("GET", f"/compression/models/{args.model}/versions/{args.version}")
    if a == "upload":
        from contextlib import ExitStack

        data = {"name": args.model, **({"profile": args.profile} if args.profile else {})}
        with ExitStack() as stack:
            files = {}
            for field, value in (("file", args.file), ("samples", getattr(args, "samples", None)),
                                 ("eval_samples", getattr(args, "eval_samples", None))):
                if value:
                    path = Path(value)
                    files[field] = (path.name, stack.enter_context(path.open("rb")), "application/octet-stream")
            return c.call("POST", "/compression/models", data=data, files=files)
    if a == "import":
        return c.call("POST", "/compression/models/import", json={"name": args.model, "zoo": args.zoo})
    if a == "download":
        dest = Path(args.out or f"{args.model}-{args.version[:8]}.onnx")
        c.download(f"/compression/models/{args.model}/versions/{args.version}/download", dest)
        return {"saved": str(dest)}
    if a == "tag":
        body: dict[str, Any] = {"version_id": args.version}
        if args.expect is not None:
            body["expected_version_id"] = None if args.expect == "none" else args.expect
        return c.call("PUT", f"/compression/models/{args.model}/tags/{args.tag}", json=body)
    if a == "rollback":
        return c.call("POST", f"/compression/models/{args.model}/rollback",
                      json={"tag": args.tag, "to_version_id": args.to, "reason": args.reason})
    if a == "delete":
        suffix = f"/versions/{args.version}" if args.version else ""
        return c.call("DELETE", f"/compression/models/{args.model}{suffix}")
    if a == "compress":
        body = {"version_id": args.version, "config": _params(args.param)}
        if args.technique:
            body["technique"] = args.technique
        job = c.call("POST", f"/compression/{args.family}", json=body)
        return watch_job(c, job["id"]) if args.watch else job
    raise ClientError(f"unknown action {a}")


def _jobs(args: argparse.Namespace, c: Client) -> Any:
    if args.action == "list":
        return c.call("GET", "/compression/jobs", params={"state": args.state} if args.state else {})
    if args.action == "show":
        return c.call("GET", f"/compression/jobs/{args.id}")
    if args.action == "cancel":
        return c.call("POST", f"/compression/jobs/{args.id}/cancel")
    job = watch_job(c, args.id)
    if job["state"] != "succeeded":
        raise ClientError(f"job {job['state']}: {job.get('error')}")
    return job


def _deploy(args: argparse.Namespace, c: Client) -> Any:
    if args.action == "create":
        return c.call("POST", "/deployments", json={"version_id": args.version, "device_ids": args.devices})
    if args.action == "list":
        return c.call("GET", "/deployments")
    if args.action == "show":
        return c.call("GET", f"/deployments/{args.id}")
    return c.call("POST", f"/deployments/{args.id}/rollback", json={"reason": args.reason})


def _devices(args: argparse.Namespace, c: Client) -> Any:
    if args.action == "list":
        return c.call("GET", "/devices")
    if args.action == "register":
        return c.call("POST", "/devices", json={"id": args.id, "profile": args.profile or ""})
    return c.call("GET", f"/devices/{args.id}")


def _runner(handler: Callable[[argparse.Namespace, Client], Any]) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        try:
            _print(handler(args, Client(args.url)))
        except ClientError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        return 0

    return run


# ---------------------------------------------------------------- parsers
def register(sub: Any, add: Callable[..., argparse.ArgumentParser | None]) -> None:
    """Add the client subcommands (``add`` skips names another module already registered)."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", default=None, help="controller URL (default $EDGEFLEET_URL or http://127.0.0.1:8080)")

    p = add(sub, "models", help="models and versions over the REST API")
    if p is not None:
        acts = p.add_subparsers(dest="action", required=True)
        q = acts.add_parser("list", parents=[common])
        for opt in ("--name", "--tag", "--format", "--profile"):
            q.add_argument(opt)
        q.add_argument("--page", type=int)
        for name in ("show", "versions"):
            acts.add_parser(name, parents=[common]).add_argument("model")
        q = acts.add_parser("version", parents=[common])
        q.add_argument("model")
        q.add_argument("version")
        q = acts.add_parser("upload", parents=[common], help="upload an ONNX file (or a .zip of it and its "
                            "weight files)")
        q.add_argument("model")
        q.add_argument("file")
        q.add_argument("--profile")
        q.add_argument("--samples", help="calibration .npz (input names as keys, samples on axis 0)")
        q.add_argument("--eval-samples", help="held-out .npz, same layout: quality is measured on it")
        q = acts.add_parser("import", parents=[common], help="import a zoo model (a job)")
        q.add_argument("model")
        q.add_argument("zoo")
        q = acts.add_parser("download", parents=[common])
        q.add_argument("model")
        q.add_argument("version")
        q.add_argument("-o", "--out")
        q = acts.add_parser("tag", parents=[common])
        q.add_argument("model")
        q.add_argument("tag")
        q.add_argument("version")
        q.add_argument("--expect", help="expected current holder (compare-and-set); 'none' = tag must be new")
        q = acts.add_parser("rollback", parents=[common])
        q.add_argument("model")
        q.add_argument("--tag", default="production")
        q.add_argument("--to", default=None)
        q.add_argument("--reason", default="")
        q = acts.add_parser("delete", parents=[common])
        q.add_argument("model")
        q.add_argument("--version")
        q = acts.add_parser("compress", parents=[common], help="start a compression job on a version")
        q.add_argument("family", choices=["quantize", "prune", "distill", "decompose"])
        q.add_argument("version")
        q.add_argument("--technique")
        q.add_argument("-p", "--param", action="append", help="technique parameter key=value (repeatable)")
        q.add_argument("--watch", action="store_true")
        p.set_defaults(func=_runner(_models))

    p = add(sub, "jobs", help="follow and cancel jobs")
    if p is not None:
        acts = p.add_subparsers(dest="action", required=True)
        acts.add_parser("list", parents=[common]).add_argument("--state")
        for name in ("show", "watch", "cancel"):
            acts.add_parser(name, parents=[common]).add_argument("id")
        p.set_defaults(func=_runner(_jobs))

    p = add(sub, "deploy", help="deployments over the REST API")
    if p is not None:
        acts = p.add_subparsers(dest="action", required=True)
        q = acts.add_parser("create", parents=[common])
        q.add_argument("version")
        q.add_argument("devices", nargs="+")
        acts.add_parser("list", parents=[common])
        acts.add_parser("show", parents=[common]).add_argument("id")
        q = acts.add_parser("rollback", parents=[common])
        q.add_argument("id")
        q.add_argument("--reason", default="")
        p.set_defaults(func=_runner(_deploy))

    p = add(sub, "devices", help="devices over the REST API")
    if p is not None:
        acts = p.add_subparsers(dest="action", required=True)
        acts.add_parser("list", parents=[common])
        acts.add_parser("show", parents=[common]).add_argument("id")
        q = acts.add_parser("register", parents=[common])
        q.add_argument("id")
        q.add_argument("--profile")
        p.set_defaults(func=_runner(_devices))
