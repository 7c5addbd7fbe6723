"""Typed rollout errors, mapped to HTTP once (same ``http_status`` contract as the registry's)."""

from __future__ import annotations

from common.errors import ConflictError, DomainError, InvalidInputError, NotFoundError


class RolloutError(DomainError):
    """Base of rollout errors; ``http_status`` for the REST layer."""

    http_status = 500
    code = "rollout_error"


class RolloutNotFoundError(RolloutError, NotFoundError):
    """No rollout / A/B test with that id."""

    http_status = 404
    code = "not_found"


class RolloutStateError(RolloutError, ConflictError):
    """The operation does not fit the rollout's state (e.g. resume a finished rollout)."""

    http_status = 409
    code = "conflict"


class RolloutPlanError(RolloutError, InvalidInputError):
    """The plan or target is invalid (no devices, bad percentages, ...)."""

    http_status = 422
    code = "invalid_input"
