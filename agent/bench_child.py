"""Child process of :func:`agent.bench.run_benchmark`: measure one model, print one JSON line.

Runs as ``python -m agent.bench_child '<BenchSpec json>'``. It asks the kernel to kill it
when the agent dies (so a SIGKILLed agent leaves no benchmark behind) and reports either
``{"metrics": {...}}`` or ``{"error": ..., "reason": ...}``.
"""

from __future__ import annotations

import json
import os
import signal
import sys


def _die_with_parent() -> None:
    """Linux PR_SET_PDEATHSIG; elsewhere the parent's kill-on-timeout is the only guard."""
    parent = os.environ.get("EDGEFLEET_BENCH_PARENT")
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if parent and str(os.getppid()) != parent:  # parent already gone before prctl took effect
        os._exit(3)


def main(argv: list[str] | None = None) -> int:
    """Entry point; exit code 0 with metrics, 2 with a reported error."""
    _die_with_parent()
    from agent.bench import BenchSpec, measure
    from agent.errors import AgentError

    args = sys.argv[1:] if argv is None else argv
    try:
        metrics = measure(BenchSpec.from_json(args[0]))
    except AgentError as exc:
        print(json.dumps({"error": exc.detail, "reason": exc.reason.value}), flush=True)
        return 2
    print(json.dumps({"metrics": metrics.model_dump(mode="json")}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
