"""Every domain error derives from ``common.errors.DomainError`` and carries the status the API answers with."""

from __future__ import annotations

import pytest

from common.errors import ConflictError, DomainError, InvalidInputError, NotFoundError, UnavailableError
from common.profiles import ProfileError
from controller.compression.errors import CalibrationError, InvalidConfigError, UnsupportedTechniqueError
from controller.conversion.errors import InvalidOptionsError, UnknownTargetError, UnsupportedOpError
from controller.fleet.errors import FleetError
from controller.jobs.models import InvalidJobSpecError, JobConflictError, JobNotFoundError
from controller.registry import errors as registry_errors
from controller.rollout.errors import RolloutNotFoundError, RolloutPlanError, RolloutStateError
from controller.zoo import UnknownZooModelError


@pytest.mark.parametrize(("exc", "family", "status", "code"), [
    (JobNotFoundError("no job"), NotFoundError, 404, "not_found"),
    (JobConflictError("finished"), ConflictError, 409, "conflict"),
    (InvalidJobSpecError("bad"), InvalidInputError, 422, "invalid_input"),
    (registry_errors.NotFoundError("no model"), NotFoundError, 404, "not_found"),
    (registry_errors.ConflictError("dup"), ConflictError, 409, "conflict"),
    (registry_errors.InvalidInputError("bad name"), InvalidInputError, 422, "invalid_input"),
    (RolloutNotFoundError("no rollout"), NotFoundError, 404, "not_found"),
    (RolloutStateError("finished"), ConflictError, 409, "conflict"),
    (RolloutPlanError("no devices"), InvalidInputError, 422, "invalid_input"),
    (FleetError("no broker"), UnavailableError, 503, "fleet_unavailable"),
    (ProfileError("unknown profile"), InvalidInputError, 422, "invalid_input"),
    (UnsupportedTechniqueError("no such"), InvalidInputError, 422, "invalid_input"),
    (InvalidConfigError("bits=3"), InvalidInputError, 422, "invalid_input"),
    (CalibrationError("shape"), DomainError, 400, "bad_request"),
    (UnknownTargetError("no converter"), NotFoundError, 404, "not_found"),
    (InvalidOptionsError("unknown option"), InvalidInputError, 422, "invalid_input"),
    (UnsupportedOpError("tflite", "MyOp", "blocks.2"), DomainError, 400, "bad_request"),
    (UnknownZooModelError("no zoo model 'x'"), NotFoundError, 404, "not_found"),
])
def test_domain_error_family_status_and_code(exc: DomainError, family: type, status: int, code: str) -> None:
    assert isinstance(exc, family) and isinstance(exc, DomainError)
    assert (exc.http_status, exc.code) == (status, code)
    assert exc.message and exc.message == str(exc)


def test_key_error_subclasses_keep_a_readable_message() -> None:
    """KeyError would repr() its argument; the user must read the sentence itself."""
    assert str(UnknownTargetError("no converter for target 'x'")) == "no converter for target 'x'"
    assert str(UnknownZooModelError("unknown zoo model 'x'")) == "unknown zoo model 'x'"
