"""Client commands over the controller's REST API: models, jobs, deployments, devices, rollouts,
A/B tests, conversions and pipelines.

They talk to ``$EDGEFLEET_URL`` (default ``http://127.0.0.1:8080``) with ``$EDGEFLEET_API_KEY``
as the bearer key, from any machine. Answers are tables for people; ``--json`` prints the
envelope's ``data`` unchanged for scripts. Errors: the server's message on stderr and exit
code 1. ``--watch`` follows a job, deployment or rollout live until it finishes.
"""

from __future__ import annotations

import argparse
import json
import os
import re
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
                  TimeElapsedColumn(), TextColumn("{task.description}"), transient=False,
                  console=_live_console()) as bar:
        task = bar.add_task("queued", total=100, state="queued")
        while True:
            job = client.call("GET", f"/compression/jobs/{job_id}")
            bar.update(task, completed=job["progress"], description=job.get("stage") or "", state=job["state"])
            if job["state"] in TERMINAL:
                return job
            time.sleep(interval)


# ---------------------------------------------------------------- watching
def _live_console() -> Any:
    """Live displays go to stderr: stdout carries only the result, so ``--watch --json`` pipes cleanly."""
    from rich.console import Console

    return Console(stderr=True)


DEPLOY_DONE = {"committed", "rolled_back", "failed", "superseded"}
ROLLOUT_DONE = {"succeeded", "failed", "rolled_back", "cancelled"}


def _deployment_table(dep: dict[str, Any], progress: dict[str, str]) -> Any:
    from rich.table import Table

    t = Table(title=f"deployment {dep['id']} ({dep.get('kind', 'deploy')}): {dep.get('state')}", header_style="bold")
    for col in ("device", "state", "step", "reason", "detail"):
        t.add_column(col, overflow="fold")
    for d in dep.get("devices", []):
        state = d.get("state", "")
        style = {"committed": "green", "rolled_back": "yellow", "failed": "red"}.get(state, "")
        t.add_row(d.get("device_id", ""), f"[{style}]{state}[/]" if style else state,
                  progress.get(d.get("device_id", ""), "") if state not in DEPLOY_DONE else "",
                  d.get("reason") or "", (d.get("detail") or "")[:70])
    return t


def watch_deployment(client: Client, deployment_id: str, *, interval: float = 1.0,
                     timeout: float = 3600.0) -> dict[str, Any]:
    """Redraw each device's state (and the agent's current step: download, verify, benchmark…) until
    every device of the deployment has finished."""
    from rich.live import Live

    deadline = time.monotonic() + timeout
    with Live(refresh_per_second=4, transient=False, console=_live_console()) as live:
        while True:
            dep = client.call("GET", f"/deployments/{deployment_id}")
            progress = {}
            for d in dep.get("devices", []):
                if d.get("state") not in DEPLOY_DONE:
                    state = (client.call("GET", f"/devices/{d['device_id']}").get("state") or {})
                    progress[d["device_id"]] = state.get("update_state", "")
            live.update(_deployment_table(dep, progress))
            if all(d.get("state") in DEPLOY_DONE for d in dep.get("devices", [])) or time.monotonic() > deadline:
                return dep
            time.sleep(interval)


def watch_rollout(client: Client, rollout_id: str, *, interval: float = 1.0, timeout: float = 7200.0) -> Any:
    """Redraw a rollout's waves and device outcomes until it ends (or is paused)."""
    from rich.live import Live

    from controller.client_render import table

    deadline = time.monotonic() + timeout
    with Live(refresh_per_second=2, transient=False, console=_live_console()) as live:
        while True:
            r = client.call("GET", f"/rollouts/{rollout_id}")
            live.update(table(r.get("devices", []), title=f"rollout {r['id']}: {r['state']} — wave "
                              f"{r.get('wave')}/{r.get('waves')} {r.get('phase') or ''} {r.get('reason') or ''}"))
            if r["state"] in ROLLOUT_DONE | {"paused"} or time.monotonic() > deadline:
                return r
            time.sleep(interval)


# ---------------------------------------------------------------- handlers
_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def resolve_version(c: Client, ref: str) -> str:
    """A version id from ``VERSION_ID``, ``MODEL`` (its newest version) or ``MODEL@TAG``.

    Lets a person deploy what they just uploaded by name instead of copying a UUID.
    """
    if _UUID.match(ref):
        return ref
    name, _, tag = ref.partition("@")
    model = c.call("GET", f"/compression/models/{name}")
    if tag:
        version = (model.get("tags") or {}).get(tag)
        if not version:
            raise ClientError(f"model {name} has no tag {tag!r} (tags: {', '.join(model.get('tags') or {}) or 'none'})")
        return str(version)
    if not model.get("latest_version_id"):
        raise ClientError(f"model {name} has no version yet: upload one with `edgefleet models upload {name} FILE`")
    return str(model["latest_version_id"])


def _models(args: argparse.Namespace, c: Client) -> Any:
    a = args.action
    simple = {
        "show": lambda: c.call("GET", f"/compression/models/{args.model}"),
        "versions": lambda: c.call("GET", f"/compression/models/{args.model}/versions"),
        "version": lambda: c.call("GET", f"/compression/models/{args.model}/versions/{args.version}"),
        "import": lambda: c.call("POST", "/compression/models/import", json={"name": args.model, "zoo": args.zoo}),
        "rollback": lambda: c.call("POST", f"/compression/models/{args.model}/rollback",
                                   json={"tag": args.tag, "to_version_id": args.to, "reason": args.reason}),
        "delete": lambda: c.call("DELETE", f"/compression/models/{args.model}"
                                 + (f"/versions/{args.version}" if getattr(args, "version", None) else "")),
    }
    if a in simple:
        return simple[a]()
    if a == "list":
        return c.call("GET", "/compression/models", params={k: v for k, v in {
            "name": args.name, "tag": args.tag, "format": args.format, "profile": args.profile,
            "page": args.page}.items() if v is not None})
    if a == "upload":
        return upload(c, args.model, Path(args.file), profile=args.profile, samples=args.samples,
                      eval_samples=args.eval_samples)
    if a == "download":
        dest = Path(args.out or f"{args.model}-{args.version[:8]}.onnx")
        c.download(f"/compression/models/{args.model}/versions/{args.version}/download", dest)
        return {"saved": str(dest)}
    if a == "tag":
        body: dict[str, Any] = {"version_id": args.version}
        if args.expect is not None:
            body["expected_version_id"] = None if args.expect == "none" else args.expect
        return c.call("PUT", f"/compression/models/{args.model}/tags/{args.tag}", json=body)
    if a == "compress":
        body = {"version_id": resolve_version(c, args.version), "config": _params(args.param)}
        if args.technique:
            body["technique"] = args.technique
        if args.profile:
            body["profile"] = args.profile
        return _job(c, c.call("POST", f"/compression/{args.family}", json=body), args.watch)
    raise ClientError(f"unknown action {a}")


def upload(c: Client, name: str, path: Path, *, profile: str | None = None, samples: str | None = None,
           eval_samples: str | None = None) -> Any:
    """Upload an ONNX file (or a .zip of it and its weights) with optional real inputs: ``samples``
    (calibration data and golden set) and ``eval_samples`` (held-out: quality is measured on them)."""
    from contextlib import ExitStack

    data = {"name": name, **({"profile": profile} if profile else {})}
    with ExitStack() as stack:
        files = {}
        for field, value in (("file", str(path)), ("samples", samples), ("eval_samples", eval_samples)):
            if value:
                p = Path(value)
                files[field] = (p.name, stack.enter_context(p.open("rb")), "application/octet-stream")
        return c.call("POST", "/compression/models", data=data, files=files)


def _job(c: Client, job: dict[str, Any], watch: bool) -> dict[str, Any]:
    if not watch:
        return job
    done = watch_job(c, job["id"])
    if done["state"] != "succeeded":
        raise ClientError(f"job {done['state']}: {done.get('error')}")
    return done.get("result") or done


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
        dep = c.call("POST", "/deployments", json={"version_id": resolve_version(c, args.version),
                                                   "device_ids": args.devices})
        return _summary(watch_deployment(c, dep["id"])) if args.watch else dep
    if args.action == "watch":
        return _summary(watch_deployment(c, args.id))
    if args.action == "list":
        return c.call("GET", "/deployments")
    if args.action == "show":
        return c.call("GET", f"/deployments/{args.id}")
    return c.call("POST", f"/deployments/{args.id}/rollback", json={"reason": args.reason})


def _summary(dep: dict[str, Any]) -> dict[str, Any]:
    """After a live table: the outcome in one line (the table already showed every device)."""
    states = [d.get("state") for d in dep.get("devices", [])]
    out = {"id": dep["id"], "state": dep.get("state"), **{s: states.count(s) for s in dict.fromkeys(states)}}
    if any(s in ("failed", "rolled_back") for s in states):
        raise ClientError(f"deployment {dep['id']} {dep.get('state')}: " + ", ".join(
            f"{d['device_id']} {d['state']} ({d.get('reason')})" for d in dep["devices"]
            if d.get("state") in ("failed", "rolled_back")))
    return out


def _devices(args: argparse.Namespace, c: Client) -> Any:
    if args.action == "list":
        return c.call("GET", "/devices")
    if args.action == "register" and args.out:
        return enroll(c, args.id, profile=args.profile, out=Path(args.out), data_dir=args.data_dir)
    if args.action == "register":
        return c.call("POST", "/devices", json={"id": args.id, "profile": args.profile or ""})
    if args.action == "revoke":
        return c.call("POST", f"/devices/{args.id}/revoke")
    return c.call("GET", f"/devices/{args.id}")


def enroll(c: Client, device_id: str, *, profile: str | None, out: Path, data_dir: str | None) -> dict[str, Any]:
    """Enroll over REST and write the bundle; returns what was written and how to start the agent."""
    from controller.enrollment import EnrollmentBundle

    if not profile:
        raise ClientError("enrolling a device needs --profile (e.g. rpi4; see `edgefleet profiles list`)")
    body: dict[str, Any] = {"profile": profile}
    if data_dir:
        body["data_dir"] = data_dir
    data = c.call("POST", f"/devices/{device_id}/enroll", json=body)
    written = EnrollmentBundle(device_id=device_id, files=data["files"]).write(out)
    return {"device_id": device_id, "files": [str(p) for p in written],
            "start": f"edgefleet agent --config {out / 'agent.toml'}"}


def _plan(args: argparse.Namespace) -> dict[str, Any]:
    plan: dict[str, Any] = {"strategy": "all_at_once" if args.all_at_once else "canary", "waves": args.waves,
                            "bake_s": args.bake}
    if args.canary is not None:
        plan["canary_count"] = args.canary
    if args.canary_percent is not None:
        plan["canary_percent"] = args.canary_percent
    return plan


def _rollouts(args: argparse.Namespace, c: Client) -> Any:
    a = args.action
    if a == "create":
        r = c.call("POST", "/rollouts", json={"version_id": resolve_version(c, args.version),
                                              "device_ids": args.devices,
                                              "plan": _plan(args)})
        return watch_rollout(c, r["id"]) if args.watch else r
    if a == "list":
        return c.call("GET", "/rollouts", params={"state": args.state} if args.state else {})
    if a == "show":
        return c.call("GET", f"/rollouts/{args.id}")
    if a == "watch":
        return watch_rollout(c, args.id)
    if a == "cancel":
        return c.call("POST", f"/rollouts/{args.id}/cancel", json={"rollback": args.rollback,
                                                                   "reason": args.reason})
    return c.call("POST", f"/rollouts/{args.id}/{a}")


def _ab(args: argparse.Namespace, c: Client) -> Any:
    if args.action == "start":
        r = c.call("POST", "/rollouts/ab", json={"a": resolve_version(c, args.a), "b": resolve_version(c, args.b),
                                                 "device_ids": args.devices,
                                                 "ratio": args.ratio})
        return watch_rollout(c, r["id"]) if args.watch else r
    if args.action == "verdict":
        return c.call("GET", f"/rollouts/{args.id}/verdict")
    return c.call("POST", f"/rollouts/{args.id}/promote")


def _conversions(args: argparse.Namespace, c: Client) -> Any:
    body: dict[str, Any] = {"version_id": resolve_version(c, args.version), "profile": args.profile,
                            "config": _params(args.param)}
    if args.target:
        body["target_format"] = args.target
    return _job(c, c.call("POST", "/conversions", json=body), args.watch)


def _step(text: str) -> dict[str, Any]:
    """``technique[:key=value,key=value]`` → a pipeline step."""
    technique, _, params = text.partition(":")
    return {"technique": technique, "config": _params([p for p in params.split(",") if p])}


def _pipeline(args: argparse.Namespace, c: Client) -> Any:
    body: dict[str, Any] = {"version_id": resolve_version(c, args.version), "steps": [_step(s) for s in args.step]}
    if args.profile:
        body["profile"] = args.profile
    return _job(c, c.call("POST", "/compression/pipeline", json=body), args.watch)


COLUMNS = {
    ("devices", "list"): ("id", "online", "profile", "active", "last_seen"),
    ("deploy", "list"): ("id", "kind", "state", "version_id", "created_at", "created_by"),
    ("jobs", "list"): ("id", "kind", "state", "progress", "stage", "created_at"),
    ("rollouts", "list"): ("id", "kind", "state", "wave", "waves", "phase", "outcomes", "reason"),
    ("models", "list"): ("name", "id", "version_count", "latest_version_id", "formats", "tags", "created_at"),
    ("models", "versions"): ("id", "technique", "format", "profile", "parent_id", "tags", "created_at"),
}


def _runner(handler: Callable[[argparse.Namespace, Client], Any],
            command: str) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        from controller.client_render import error, show

        try:
            data = handler(args, Client(args.url))
        except ClientError as exc:
            error(str(exc))
            return 1
        show(data, as_json=args.json, columns=COLUMNS.get((command, getattr(args, "action", ""))))
        return 0

    return run


# ---------------------------------------------------------------- parsers
def _parsers(p: argparse.ArgumentParser, common: argparse.ArgumentParser) -> Callable[..., argparse.ArgumentParser]:
    acts = p.add_subparsers(dest="action", required=True, metavar="ACTION")

    def action(name: str, help: str, *positionals: str) -> argparse.ArgumentParser:  # noqa: A002 - argparse's name
        q = acts.add_parser(name, parents=[common], help=help, description=help)
        for pos in positionals:
            q.add_argument(pos)
        return q

    return action


def _register_models(p: argparse.ArgumentParser, common: argparse.ArgumentParser) -> None:
    action = _parsers(p, common)
    q = action("list", "models, newest first")
    for opt in ("--name", "--tag", "--format", "--profile"):
        q.add_argument(opt)
    q.add_argument("--page", type=int)
    action("show", "one model with its tags", "model")
    action("versions", "a model's versions", "model")
    action("version", "one version: lineage, metrics, config", "model", "version")
    q = action("upload", "upload an ONNX file (or a .zip of it and its weight files) as a new version", "model",
               "file")
    q.add_argument("--samples", help=".npz of real inputs (keys = input names): calibration data and golden set")
    q.add_argument("--eval-samples", "--eval", dest="eval_samples",
                   help="held-out .npz, same layout: quality is measured on it")
    q.add_argument("--profile", help="profile the file was built for (default: none, deployable to any profile)")
    action("import", "import a model from the offline zoo (a job)", "model", "zoo")
    q = action("download", "download a version's file", "model", "version")
    q.add_argument("-o", "--out")
    q = action("tag", "point a tag at a version", "model", "tag", "version")
    q.add_argument("--expect", help="expected current holder (compare-and-set); 'none' = tag must be new")
    q = action("rollback", "move a tag back to an earlier version", "model")
    q.add_argument("--tag", default="production")
    q.add_argument("--to", default=None)
    q.add_argument("--reason", default="")
    q = action("delete", "delete a model or one version", "model")
    q.add_argument("--version")
    q = action("compress", "start a compression job on a version", "family", "version")
    q.add_argument("--technique", help="e.g. int8-static, int4-weight, prune-structured, svd")
    q.add_argument("--profile", help="device profile the output is built for")
    q.add_argument("-p", "--param", action="append", help="technique parameter key=value (repeatable)")
    q.add_argument("--watch", action="store_true", help="follow the job until it ends")


def _register_deploy(p: argparse.ArgumentParser, common: argparse.ArgumentParser) -> None:
    action = _parsers(p, common)
    q = action("create", "deploy a version (id, MODEL = its newest version, or MODEL@TAG) to devices", "version")
    q.add_argument("devices", nargs="+")
    q.add_argument("--watch", action="store_true", help="show each device's progress until all finish")
    action("watch", "follow a deployment until every device finished", "id")
    action("list", "deployments, newest first")
    action("show", "one deployment with every device's state and reason", "id")
    q = action("rollback", "send every device back to what it ran before", "id")
    q.add_argument("--reason", default="")


def _register_rollouts(p: argparse.ArgumentParser, common: argparse.ArgumentParser) -> None:
    action = _parsers(p, common)
    q = action("create", "canary then waves (or all at once), stopped and rolled back on regressions", "version")
    q.add_argument("devices", nargs="+")
    q.add_argument("--canary", type=int, help="canary size (devices)")
    q.add_argument("--canary-percent", type=float, help="canary size (percent of the devices)")
    q.add_argument("--waves", type=int, default=3, help="waves after the canary")
    q.add_argument("--bake", type=float, default=0.0, help="seconds to wait between waves")
    q.add_argument("--all-at-once", action="store_true")
    q.add_argument("--watch", action="store_true")
    action("list", "rollouts, newest first").add_argument("--state")
    action("show", "one rollout with its devices and decisions", "id")
    action("watch", "follow a rollout until it ends", "id")
    action("pause", "no new wave starts", "id")
    action("resume", "resume a paused rollout", "id")
    q = action("cancel", "cancel a rollout", "id")
    q.add_argument("--rollback", action="store_true", help="send started devices back")
    q.add_argument("--reason", default="cancelled by operator")


def _register_ab(p: argparse.ArgumentParser, common: argparse.ArgumentParser) -> None:
    action = _parsers(p, common)
    q = action("start", "deploy variant A and B (versions) split across devices", "a", "b")
    q.add_argument("devices", nargs="+")
    q.add_argument("--ratio", type=float, default=0.5, help="share of devices on B")
    q.add_argument("--watch", action="store_true")
    action("verdict", "per-variant figures from the devices, difference and winner", "id")
    action("promote", "roll the winner out to the whole A/B group", "id")


def register(sub: Any, add: Callable[..., argparse.ArgumentParser | None]) -> None:
    """Add the client subcommands (``add`` skips names another module already registered)."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", default=None, help="controller URL (default $EDGEFLEET_URL or http://127.0.0.1:8080)")
    common.add_argument("--json", action="store_true", help="print the answer as JSON (for scripts)")

    groups: list[tuple[str, str, Callable[..., Any], Callable[[argparse.Namespace, Client], Any] | None]] = [
        ("models", "models and versions", _register_models, _models),
        ("deploy", "deployments", _register_deploy, _deploy),
        ("rollouts", "rollouts: canary, waves, pause, cancel", _register_rollouts, _rollouts),
        ("ab", "A/B tests between two versions", _register_ab, _ab),
    ]
    for name, help_text, build, handler in groups:
        p = add(sub, name, help=help_text)
        if p is not None:
            build(p, common)
            p.set_defaults(func=_runner(handler, name))

    p = add(sub, "jobs", help="follow and cancel jobs")
    if p is not None:
        action = _parsers(p, common)
        action("list", "jobs, newest first").add_argument("--state")
        action("show", "one job", "id")
        action("watch", "follow a job with a progress bar", "id")
        action("cancel", "cancel a queued or running job", "id")
        p.set_defaults(func=_runner(_jobs, "jobs"))

    p = add(sub, "devices", help="devices: list, enroll, revoke")
    if p is not None:
        action = _parsers(p, common)
        action("list", "every device with presence and active model")
        action("show", "one device", "id")
        q = action("register", "register a device; with --out: enroll it (broker account + agent bundle)", "id")
        q.add_argument("--profile")
        q.add_argument("--out", help="write the enrollment bundle (agent.toml, password, keys) to this folder")
        q.add_argument("--data-dir", help="the agent's state folder on the device (default /var/lib/edgefleet)")
        action("revoke", "delete the device's broker account: it is disconnected now", "id")
        p.set_defaults(func=_runner(_devices, "devices"))

    p = add(sub, "conversions", help="convert a version for a device profile on the controller (a job)")
    if p is not None:
        q = _parsers(p, common)("create", "convert a version (a job)", "version")
        q.add_argument("--profile", required=True)
        q.add_argument("--target", choices=["onnx", "tflite", "coreml", "tensorrt"],
                       help="default: the profile's format")
        q.add_argument("-p", "--param", action="append", help="converter parameter key=value (repeatable)")
        q.add_argument("--watch", action="store_true")
        p.set_defaults(func=_runner(_conversions, "conversions"))

    p = add(sub, "pipeline", help="run compression steps in order on the controller (a job)")
    if p is not None:
        q = _parsers(p, common)("run", "each step's output is the next step's input and a new version", "version")
        q.add_argument("--step", action="append", required=True,
                       help="technique[:key=value,...], e.g. prune-structured:ratio=0.3 (repeatable, in order)")
        q.add_argument("--profile")
        q.add_argument("--watch", action="store_true")
        p.set_defaults(func=_runner(_pipeline, "pipeline"))
