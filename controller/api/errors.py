"""Map every error to the envelope once: domain errors carry ``http_status``/``code``, routes never build 4xx bodies.

Domain packages (registry, jobs, compression, conversion, fleet, rollout, profiles) raise
subclasses of :class:`common.errors.DomainError`; this module is the single place that turns
them into HTTP, by reading the error's own ``http_status``, ``code`` and ``message``. Anything
unexpected becomes a 500 envelope whose message does not leak internals (the traceback goes
to the log).
"""

from __future__ import annotations

import logging
import re
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from common.errors import DomainError
from controller.api.envelope import error_body

log = logging.getLogger(__name__)

_HTTP_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
               405: "method_not_allowed", 409: "conflict", 413: "too_large", 415: "unsupported_media_type",
               422: "invalid_input", 503: "unavailable"}


class ApiError(DomainError):
    """An error raised by the API layer itself (auth, upload checks, missing optional services)."""

    def __init__(self, http_status: int, message: str, code: str | None = None, details: Any = None) -> None:
        super().__init__(message)
        self.http_status = http_status
        self.code = code or _HTTP_CODES.get(http_status, "error")
        self.details = details


def _loc(err: dict[str, Any]) -> str:
    return ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "request"


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers on ``app``: request validation, Starlette's HTTP errors, domain errors, the rest."""

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        msg = "; ".join(f"{_loc(e)}: {e.get('msg')}" for e in errors[:5])
        details = [{"loc": [str(p) for p in e.get("loc", ())], "msg": e.get("msg"), "type": e.get("type")}
                   for e in errors]
        return JSONResponse(status_code=422, content=error_body("invalid_input", f"invalid request: {msg}", details))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(exc.status_code, "error")
        headers = dict(getattr(exc, "headers", None) or {})
        if exc.status_code == 405:
            headers["Allow"] = ", ".join(allowed_methods(request))
        return JSONResponse(status_code=exc.status_code, content=error_body(code, str(exc.detail)),
                            headers=headers or None)

    @app.exception_handler(DomainError)
    async def _domain(_: Request, exc: DomainError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if exc.http_status == 401 else None
        message = exc.message or str(exc) or type(exc).__name__
        return JSONResponse(status_code=exc.http_status,
                            content=error_body(exc.code, message, getattr(exc, "details", None)), headers=headers)

    @app.exception_handler(Exception)
    async def _any(_: Request, exc: Exception) -> JSONResponse:
        log.error("unhandled error", exc_info=exc)
        return JSONResponse(status_code=500, content=error_body(
            "internal_error", f"internal error ({type(exc).__name__}); see the controller log"))


def allowed_methods(request: Request) -> list[str]:
    """Every method some route serves at this path.

    Starlette answers 405 from the first route whose path matched and lists only *its* methods;
    FastAPI registers one route per method, so ``GET, HEAD`` came back for a path that also takes
    ``DELETE``. RFC 9110 wants the full set in ``Allow``. The table is built once from the OpenAPI
    paths (included routers are nested objects whose internals change between FastAPI releases)
    plus the app's own top-level routes.
    """
    app = request.app
    table = getattr(app.state, "allow_table", None)
    if table is None:
        table = []
        for template, ops in app.openapi().get("paths", {}).items():
            pattern = re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(template))
            served = {m.upper() for m in ops if m in ("get", "put", "post", "delete", "patch", "options", "head")}
            table.append((re.compile(f"^{pattern}$"), served | ({"HEAD"} if "GET" in served else set())))
        for route in app.router.routes:
            if getattr(route, "methods", None) and getattr(route, "path_regex", None) is not None:
                table.append((route.path_regex, set(route.methods)))
        app.state.allow_table = table
    path = request.scope.get("path", "")
    return sorted(set().union(*(methods for regex, methods in table if regex.match(path))))


