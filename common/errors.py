"""Reason codes shared by agents and controller, and the protocol's own error type."""

from __future__ import annotations

from common.compat import StrEnum


class ReasonCode(StrEnum):
    """Why something was accepted or refused; wire values never change."""

    OK = "ok"
    MALFORMED_PAYLOAD = "malformed_payload"
    UNSUPPORTED_SCHEMA = "unsupported_schema"
    SIGNATURE_INVALID = "signature_invalid"
    HASH_MISMATCH = "hash_mismatch"
    CHUNK_CORRUPT = "chunk_corrupt"
    SIZE_EXCEEDED = "size_exceeded"
    WRONG_PROFILE = "wrong_profile"
    UNSUPPORTED_FORMAT = "unsupported_format"
    LOAD_FAILED = "load_failed"
    BENCHMARK_FAILED = "benchmark_failed"
    REGRESSION_LATENCY = "regression_latency"
    REGRESSION_MEMORY = "regression_memory"
    REGRESSION_QUALITY = "regression_quality"
    DOWNLOAD_TIMEOUT = "download_timeout"
    SUPERSEDED = "superseded"
    CANCELLED = "cancelled"
    ROLLBACK_REQUESTED = "rollback_requested"
    INTERRUPTED = "interrupted"
    DISK_FULL = "disk_full"
    REPLAYED = "replayed"
    EXPIRED = "expired"
    WRONG_TARGET = "wrong_target"
    ROLLBACK_REFUSED = "rollback_refused"


class ProtocolError(ValueError):
    """A message that cannot be accepted; carries the reason code the sender will be told."""

    def __init__(self, reason: ReasonCode, detail: str) -> None:
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason
        self.detail = detail


class DomainError(Exception):
    """Base of every typed error a domain package raises below the REST layer.

    Why one base: the API maps errors to HTTP in one handler by reading ``http_status`` and
    ``code``, never by guessing from class names, and a new package gets a correct response
    by subclassing one of the four families below. ``code`` is the stable wire name of the
    REST envelope; ``message`` says what was wrong and what to do about it.

    Example:
        >>> class UnknownWidgetError(NotFoundError): ...
        >>> err = UnknownWidgetError("no widget 'w1'; list them with GET /widgets")
        >>> (err.http_status, err.code, err.message)
        (404, 'not_found', "no widget 'w1'; list them with GET /widgets")
    """

    code: str = "error"
    http_status: int = 500

    def __init__(self, message: str = "", *args: object) -> None:
        super().__init__(message, *args)
        self.message = message


class NotFoundError(DomainError, LookupError):
    """The named thing does not exist (HTTP 404)."""

    code = "not_found"
    http_status = 404


class ConflictError(DomainError):
    """The request clashes with the current state (HTTP 409)."""

    code = "conflict"
    http_status = 409


class InvalidInputError(DomainError, ValueError):
    """A value is malformed or not allowed (HTTP 422)."""

    code = "invalid_input"
    http_status = 422


class UnavailableError(DomainError):
    """A service the request needs is not reachable or not configured (HTTP 503)."""

    code = "unavailable"
    http_status = 503
