"""The web console and the offline API docs, served by the controller itself.

``mount(app)`` adds: the console (``/console/``, server-rendered Jinja2 + htmx, live updates
by server-sent events), the vendored static assets (``/console/static``: htmx, uPlot,
Swagger UI; no CDN, so it works on an air-gapped network), ``/docs`` with those local Swagger
UI assets, ``/redoc`` with vendored ReDoc, and the report endpoints. See ``docs/console.md``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

STATIC = Path(__file__).parent / "static"


def mount(app: Any, api_prefix: str = "/api/v1") -> None:
    """Register the console, its assets, the offline ``/docs`` and the ``…/report`` routes on ``app``."""
    from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
    from fastapi.responses import HTMLResponse
    from fastapi.staticfiles import StaticFiles

    from controller.console.routes import router, shell_router
    from controller.dashboards.routes import router as dashboards_router
    from controller.report.routes import router as report_router

    app.include_router(report_router, prefix=api_prefix)
    app.include_router(dashboards_router, prefix=api_prefix)
    app.mount("/console/static", StaticFiles(directory=str(STATIC)), name="console-static")

    async def swagger() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json", title=f"{app.title} — API",
            swagger_js_url="/console/static/vendor/swagger-ui/swagger-ui-bundle.js",
            swagger_css_url="/console/static/vendor/swagger-ui/swagger-ui.css",
            swagger_favicon_url="/console/static/vendor/swagger-ui/favicon-32x32.png",
            swagger_ui_parameters={"validatorUrl": None})  # no badge fetched from swagger.io: fully offline

    async def redoc() -> HTMLResponse:
        return get_redoc_html(openapi_url=app.openapi_url or "/openapi.json", title=f"{app.title} — API reference",
                              redoc_js_url="/console/static/vendor/redoc/redoc.standalone.js",
                              redoc_favicon_url="/console/static/vendor/swagger-ui/favicon-32x32.png",
                              with_google_fonts=False)

    app.add_api_route("/docs", swagger, include_in_schema=False, response_class=HTMLResponse)
    app.add_api_route("/redoc", redoc, include_in_schema=False, response_class=HTMLResponse)
    app.include_router(router)
    app.include_router(shell_router)
