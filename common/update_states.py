"""The device update-state vocabulary: one StrEnum for the agent, the wire and the controller.

The agent persists these values in its journal and sends them in every ``JobReport``
(typed by pydantic, so an unknown name is a malformed payload, not a silent string);
the controller maps them once to a per-device deployment status
(:func:`controller.registry.records.job_state_to_status`). Values never change.
"""

from __future__ import annotations

from enum import StrEnum


class UpdateState(StrEnum):
    """Persisted update states of the agent's state machine; wire values never change."""

    IDLE = "idle"
    DOWNLOAD = "download"
    VERIFY = "verify"
    INSTALL = "install"
    BENCHMARK = "benchmark"
    COMMIT = "commit"
    ROLLBACK = "rollback"
    FAILURE = "failure"
