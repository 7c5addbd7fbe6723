"""The response envelope every endpoint returns: ``{status, data, message}``.

One shape for success and failure lets a client check ``status`` and print ``message``
without knowing which endpoint it called; ``data`` holds the resource (or, for errors,
a machine-readable ``code`` and details).
"""

from __future__ import annotations

from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, Field

T = TypeVar("T")


class Envelope(BaseModel, Generic[T]):
    """Success envelope."""

    status: Literal["ok", "error"] = "ok"
    data: T | None = None
    message: str = ""


class ErrorData(BaseModel):
    """``data`` of an error envelope."""

    code: str = Field(description="stable machine-readable error code, e.g. not_found, invalid_input, conflict")
    details: Any = None


class ErrorEnvelope(BaseModel):
    """Error envelope (documented on every route's 4xx responses)."""

    status: Literal["error"] = "error"
    data: ErrorData
    message: str


class Page(BaseModel, Generic[T]):
    """One page of a list."""

    items: list[T]
    total: int
    page: int
    page_size: int


def ok(data: Any = None, message: str = "") -> dict[str, Any]:
    """Build a success envelope (FastAPI validates it against the route's response model)."""
    return {"status": "ok", "data": data, "message": message}


def error_body(code: str, message: str, details: Any = None) -> dict[str, Any]:
    """Build an error envelope body."""
    return {"status": "error", "data": {"code": code, "details": details}, "message": message}


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorEnvelope, "description": desc}
    for code, desc in [(400, "bad request"), (401, "missing or invalid API key"), (403, "read-only key"),
                       (404, "not found"), (409, "conflict with current state"), (413, "upload too large"),
                       (422, "invalid input")]
}
