"""Job kinds for the process-isolation tests, importable by a job process via EDGEFLEET_JOB_PLUGINS."""

from __future__ import annotations

import os
import time

from controller.jobs import JobContext, JobKind


def _echo(ctx: JobContext) -> dict:
    ctx.progress(50, "echoing")
    return {"echo": ctx.job.spec.get("x"), "pid": os.getpid()}


def _slow(ctx: JobContext) -> dict:
    for i in range(int(ctx.job.spec.get("steps", 600))):
        ctx.progress(min(99, i), "sleeping")
        time.sleep(0.05)
    return {}


def _deaf(ctx: JobContext) -> dict:
    """Never reports progress: only the supervisor can stop it."""
    time.sleep(float(ctx.job.spec.get("seconds", 60)))
    return {}


def _crash(ctx: JobContext) -> dict:
    ctx.progress(10, "about to crash")
    os._exit(7)


JOB_KINDS = {name: JobKind(name, fn) for name, fn in
             [("echo", _echo), ("slow", _slow), ("deaf", _deaf), ("crash", _crash)]}
