"""Map every error to the envelope once: domain errors carry ``http_status``/``code``, routes never build 4xx bodies.

Domain packages (registry, jobs, compression, profiles) raise typed exceptions; this
module is the single place that turns them into HTTP. Anything unexpected becomes a 500
envelope whose message does not leak internals (the traceback goes to the log).
"""

from __future__ import annotations

import logging
import re
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from controller.api.envelope import error_body

log = logging.getLogger(__name__)

_HTTP_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
               405: "method_not_allowed", 409: "conflict", 413: "too_large", 415: "unsupported_media_type",
               422: "invalid_input", 503: "unavailable"}


class ApiError(Exception):
    """An error raised by the API layer itself (auth, upload checks, missing optional services)."""

    def __init__(self, http_status: int, message: str, code: str | None = None, details: Any = None) -> None:
        super().__init__(message)
        self.http_status = http_status
        self.message = message
        self.code = code or _HTTP_CODES.get(http_status, "error")
        self.details = details


def _domain_status(exc: Exception) -> int | None:
    """HTTP status of a typed domain error (anything with an int ``http_status``), else None."""
    status = getattr(exc, "http_status", None)
    if isinstance(status, int) and 400 <= status < 600:
        return status
    name = type(exc).__name__
    if name.endswith("NotFoundError") or isinstance(exc, LookupError | FileNotFoundError):
        return 404
    if name in {"ProfileError", "UnsupportedTechniqueError", "ConfigError", "InvalidConfigError",
                "UnsupportedTargetError", "ZooError", "UnknownModelError"} or name.endswith("ConfigError"):
        return 422
    if name.endswith("ConflictError"):
        return 409
    return None


def _loc(err: dict[str, Any]) -> str:
    return ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "request"


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers on ``app``."""

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

    @app.exception_handler(ApiError)
    async def _api(_: Request, exc: ApiError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if exc.http_status == 401 else None
        return JSONResponse(status_code=exc.http_status, content=error_body(exc.code, exc.message, exc.details),
                            headers=headers)

    async def _domain(_: Request, exc: Exception) -> JSONResponse:
        status = _domain_status(exc) or 400
        code = getattr(exc, "code", None)
        code = code if isinstance(code, str) else _HTTP_CODES.get(status, "error")
        message = getattr(exc, "message", None) or str(exc) or type(exc).__name__
        return JSONResponse(status_code=status, content=error_body(code, message))

    for cls in domain_error_classes():
        app.add_exception_handler(cls, _domain)

    @app.exception_handler(Exception)
    async def _any(request: Request, exc: Exception) -> JSONResponse:
        if _domain_status(exc) is not None:  # a typed error from a package not listed above
            return await _domain(request, exc)
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


def domain_error_classes() -> list[type[Exception]]:
    """Base classes of the typed errors of every domain package that is installed.

    Registering them by class (not only via the catch-all) keeps Starlette from logging
    a traceback for what is an ordinary 4xx.
    """
    import importlib

    classes: list[type[Exception]] = []
    for module, names in [("controller.jobs.models", ["JobError"]),
                          ("controller.registry.errors", ["RegistryError"]),
                          ("common.profiles", ["ProfileError"]),
                          ("controller.compression.errors", ["CompressionError"]),
                          ("controller.conversion.errors", ["ConversionError"]),
                          ("controller.fleet.errors", ["FleetError"]),
                          ("controller.rollout.errors", ["RolloutError"])]:
        try:
            mod = importlib.import_module(module)
        except ImportError:
            continue
        classes += [c for n in names if isinstance(c := getattr(mod, n, None), type) and issubclass(c, Exception)]
    return classes
