"""Typed registry errors: raised below the API, mapped to HTTP status codes once by the REST layer.

Each error carries a stable ``code`` (wire name for the REST envelope) and a
message that says what was wrong and what to do about it, so the route layer
never has to invent wording.
"""

from __future__ import annotations

from common import errors


class RegistryError(errors.DomainError):
    """Base of every registry error; ``code`` is stable and suitable for an API response."""

    code = "registry_error"
    http_status = 500


class NotFoundError(RegistryError, errors.NotFoundError):
    """The named model, version, device, deployment or blob does not exist (HTTP 404)."""

    code = "not_found"
    http_status = 404


class ConflictError(RegistryError, errors.ConflictError):
    """The request clashes with current state: duplicate name, stale tag, deployed version (HTTP 409)."""

    code = "conflict"
    http_status = 409


class InvalidInputError(RegistryError, errors.InvalidInputError):
    """A value is malformed or not allowed: bad name, unknown parent, non-JSON metrics (HTTP 422)."""

    code = "invalid_input"
    http_status = 422
