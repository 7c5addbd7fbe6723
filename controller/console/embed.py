"""Serve the controller's API and console from a process that already holds the registry and fleet (the demo).

The demo drives the registry and fleet service in its own process; this starts the same FastAPI
app over *those* objects under uvicorn in a thread on a free loopback port, so a person can
watch the story in the console while it runs. No key is configured: the controller's local
development mode, which only ever binds to loopback.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass
class EmbeddedConsole:
    """A running in-process controller app: its URL and how to stop it."""

    url: str
    server: Any
    thread: threading.Thread
    services: Any

    def stop(self) -> None:
        """Stop uvicorn and the job runner (the registry and fleet belong to the caller)."""
        self.server.should_exit = True
        self.thread.join(15)
        self.services.runner.shutdown()
        store = getattr(self.services.runner, "store", None)
        if store is not None:
            store.close()
        engine = self.services.extra.pop("rollouts", None)
        if engine is not None:
            engine.stop()


def serve_embedded(registry: Any, fleet: Any, workspace: Path, *, fleet_name: str = "default",
                   port: int | None = None, timeout: float = 20.0) -> EmbeddedConsole:
    """Start the app over ``registry`` and ``fleet`` on ``127.0.0.1:<port>`` (a free one by default)."""
    import uvicorn

    from controller.api.app import create_app
    from controller.api.auth import KeyRing
    from controller.api.services import Services
    from controller.broker import free_port
    from controller.jobs import JobStore, LocalJobRunner
    from controller.jobs.kinds import default_kinds
    from controller.settings import Settings

    settings = Settings(compression_workspace=workspace, fleet=fleet_name, job_isolation="thread")
    services = Services(settings=settings, keys=KeyRing([]), registry=registry, runner=None,  # type: ignore[arg-type]
                        fleet=fleet)
    services.runner = LocalJobRunner(JobStore(settings.jobs_db_path), default_kinds(), max_workers=1,
                                     workspace=workspace, services=services, isolation="thread")
    services.runner.start()
    port = port or free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(settings, services=services), host="127.0.0.1", port=port,
                                           log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, name="embedded-console", daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            services.runner.shutdown()
            raise RuntimeError("the embedded console did not start")
        time.sleep(0.05)
    return EmbeddedConsole(url=f"http://127.0.0.1:{port}", server=server, thread=thread, services=services)
