"""Child processes of the demo (agents, controller) that never outlive it.

Every child is started in its own process group and tracked; ``stop_all`` sends
SIGTERM, waits, then SIGKILLs stragglers, and is registered with ``atexit`` so
even an exception or Ctrl-C in the demo leaves nothing behind.
"""

from __future__ import annotations

import atexit
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Child:
    """One tracked child process and its log file."""

    name: str
    argv: list[str]
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Child:
        """Spawn the process with stdout/stderr appended to its log."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        env = {**os.environ, **self.env}
        self.proc = subprocess.Popen(  # noqa: S603 - argv built by us, no shell
            self.argv, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
        log.close()
        _REGISTRY.append(self)
        return self

    @property
    def alive(self) -> bool:
        """True while the process runs."""
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM the process group, then SIGKILL it if it does not exit in time."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            _signal_group(self.proc, signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                _signal_group(self.proc, signal.SIGKILL)
                self.proc.wait(timeout=5)
        return self.proc.returncode

    def kill9(self) -> None:
        """Simulate a power cut: SIGKILL, no chance to clean up."""
        if self.proc is not None and self.proc.poll() is None:
            _signal_group(self.proc, signal.SIGKILL)
            self.proc.wait(timeout=5)

    def tail(self, lines: int = 20) -> str:
        """Last lines of the log, for error messages."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""


def _signal_group(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass


_REGISTRY: list[Child] = []


def python_module(module: str, *args: str) -> list[str]:
    """argv running a module with this interpreter (works inside the venv without PATH)."""
    return [sys.executable, "-m", module, *args]


def stop_all() -> None:
    """Stop every child still running, newest first."""
    while _REGISTRY:
        child = _REGISTRY.pop()
        child.stop()


def wait_until(predicate: object, timeout: float, interval: float = 0.2) -> bool:
    """Poll ``predicate()`` until true or timeout; returns the last result."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(interval)
    return bool(predicate())  # type: ignore[operator]


atexit.register(stop_all)
