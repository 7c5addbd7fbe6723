"""Typed agent errors; each carries the ReasonCode the controller is told."""

from __future__ import annotations

from common.errors import ReasonCode


class AgentError(Exception):
    """Base of every agent-side failure that ends up in a JobReport."""

    def __init__(self, reason: ReasonCode, detail: str) -> None:
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason
        self.detail = detail


class UpdateError(AgentError):
    """A step of an update failed before commit: the deployment is rolled back."""


class ArtifactVerificationError(UpdateError):
    """A downloaded or installed file does not match the signed manifest."""


class BenchmarkError(UpdateError):
    """The model could not be loaded or run on this device."""


class UnsupportedFormatError(UpdateError):
    """No runtime on this device runs the artifact's format."""

    def __init__(self, fmt: str, supported: list[str], hint: str = "") -> None:
        super().__init__(
            ReasonCode.UNSUPPORTED_FORMAT,
            f"format {fmt!r} not supported here; this device runs {', '.join(supported) or 'nothing'}"
            + (f" ({hint})" if hint else ""),
        )


class ConfigError(ValueError):
    """Agent configuration is invalid; the message names the setting."""
