"""Reason codes shared by agents and controller, and the protocol's own error type."""

from __future__ import annotations

from enum import StrEnum


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
