"""Typed errors of the optimiser: each names what to change (HTTP 422 through the one domain base)."""

from __future__ import annotations

from common.errors import DomainError, InvalidInputError


class OptimizeError(DomainError):
    """Base of every optimiser error (bad request, nothing to search, unusable profile)."""


class InvalidSearchError(OptimizeError, InvalidInputError):
    """The request cannot be searched as given (unknown strategy, metric, objective, empty space)."""


class UnsupportedProfileError(OptimizeError, InvalidInputError):
    """The profile cannot run what the search builds (e.g. no ONNX runtime on the device)."""


class CandidateFailed(Exception):  # noqa: N818 - a trial outcome, recorded, never raised to the user
    """A candidate crashed or collapsed: recorded as a failed trial with ``reason``, the search goes on."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
