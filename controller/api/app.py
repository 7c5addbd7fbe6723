"""The FastAPI application factory: routes under ``/api/v1``, OpenAPI at ``/docs``, one error mapping.

Example:
    >>> from controller.settings import Settings
    >>> app = create_app(Settings(compression_workspace="/tmp/ws"))  # doctest: +SKIP
    >>> # uvicorn.run(app, host="127.0.0.1", port=8080)
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI

from controller.api.errors import install_error_handlers
from controller.api.limits import BodySizeLimit
from controller.api.routes import conversions, deployments, devices, jobs, models, profiles, rollouts, search, system
from controller.api.services import Services, open_services
from controller.settings import Settings

API_PREFIX = "/api/v1"


def create_app(settings: Settings | None = None, *, services: Services | None = None,
               kinds: dict[str, Any] | None = None) -> FastAPI:
    """Build the app. Services (registry, job runner, fleet) open in the lifespan and close on shutdown.

    Args:
        settings: defaults to the environment.
        services: pre-built services (tests, embedding); the app then does not close them.
        kinds: extra job kinds merged into the defaults (used by tests and plug-ins).
    """
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        own = services is None
        app.state.services = services or open_services(settings, kinds=kinds)
        try:
            yield
        finally:
            if own:
                app.state.services.close()

    app = FastAPI(
        title="edgefleet controller",
        version="1.0.0",
        description="Compress models per device profile, manage versions with lineage, deploy to an MQTT fleet. "
                    "Every response is an envelope `{status, data, message}`; mutating calls need a bearer API key.",
        lifespan=lifespan,
        docs_url=None,  # served by controller.console with vendored Swagger UI assets (works offline)
        redoc_url=None,
        openapi_url="/openapi.json",
    )
    install_error_handlers(app)
    # the model file and its samples may each reach the limit; multipart framing is small
    app.add_middleware(BodySizeLimit, max_bytes=2 * settings.max_upload_bytes + 1024 * 1024)
    for module in (jobs, search, models, conversions, profiles, devices, deployments, rollouts, system):
        app.include_router(module.router, prefix=API_PREFIX)
    app.include_router(rollouts.metrics_router, prefix=API_PREFIX)
    app.include_router(rollouts.prometheus_router)  # Prometheus scrapes /metrics at the root
    from controller.console import mount

    mount(app, API_PREFIX)  # web console, offline /docs, …/report endpoints
    return app
