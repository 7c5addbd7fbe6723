"""The update journal: the one durable record of where an update stands.

The state machine writes the journal *before* it enters a state (Mender's "persist first,
then enter"), so after a crash ``resume()`` knows exactly which step was running. It also
holds the counters that must never go backwards (JobReport and DeviceState sequence
numbers) and the per-deployment count of state stores that stops crash loops.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from agent.atomic import atomic_write_bytes

log = logging.getLogger(__name__)

JOURNAL_VERSION = 1
MAX_FINISHED = 64
"""How many finished deployment ids are remembered, so a retained desired is not re-applied."""
MAX_COMMITTED = 16
"""How many committed model sha256s are remembered: the models a fleet rollback may reinstate ungated."""


@dataclass
class JournalData:
    """Everything persisted between runs; plain JSON types only."""

    state: str = "idle"
    deployment_id: str | None = None
    desired: dict[str, Any] | None = None
    store_count: int = 0
    job_seq: int = 0
    state_seq: int = 0
    reason: str = "ok"
    detail: str = ""
    candidate_slot: str | None = None
    candidate_metrics: dict[str, Any] | None = None
    baseline_metrics: dict[str, Any] | None = None
    decision_reasons: list[str] = field(default_factory=list)
    finished: list[str] = field(default_factory=list)
    committed: list[str] = field(default_factory=list)
    grant_serial: int = 0
    """Highest grant serial accepted: an older grant is an instruction played back."""
    version_floor: dict[str, int] = field(default_factory=dict)
    """model id -> highest version counter committed: lower ones need a signed rollback instruction."""
    version: int = JOURNAL_VERSION

    def remember_committed(self, model_sha256: str) -> None:
        """Record a model this device committed (most recent last, bounded)."""
        if model_sha256 in self.committed:
            self.committed.remove(model_sha256)
        self.committed.append(model_sha256)
        del self.committed[:-MAX_COMMITTED]

    def remember_finished(self, deployment_id: str) -> None:
        """Record a deployment as done (committed, rolled back or rejected)."""
        if deployment_id in self.finished:
            return
        self.finished.append(deployment_id)
        del self.finished[:-MAX_FINISHED]

    def clear_deployment(self) -> None:
        """Forget the per-deployment fields once the machine is back to idle."""
        self.deployment_id = None
        self.desired = None
        self.store_count = 0
        self.reason = "ok"
        self.detail = ""
        self.candidate_slot = None
        self.candidate_metrics = None
        self.baseline_metrics = None
        self.decision_reasons = []


class Journal:
    """Atomic JSON journal at one path.

    Example:
        >>> import tempfile; j = Journal(Path(tempfile.mkdtemp()) / "journal.json")
        >>> d = j.load(); d.state = "download"; j.save(d); j.load().state
        'download'
    """

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> JournalData:
        """Read the journal; a missing one is a fresh idle device, an unreadable one is set aside."""
        try:
            raw = json.loads(self.path.read_bytes())
        except FileNotFoundError:
            return JournalData()
        except (OSError, ValueError) as exc:
            return self._quarantine(f"unreadable: {exc}")
        if not isinstance(raw, dict) or raw.get("version") != JOURNAL_VERSION:
            return self._quarantine(f"unknown journal version {raw.get('version') if isinstance(raw, dict) else raw!r}")
        known = {k: v for k, v in raw.items() if k in JournalData.__dataclass_fields__}
        try:
            return JournalData(**known)
        except TypeError as exc:
            return self._quarantine(str(exc))

    def save(self, data: JournalData) -> None:
        """Persist durably (tmp + fsync + rename + fsync dir)."""
        atomic_write_bytes(self.path, json.dumps(asdict(data), sort_keys=True, indent=1).encode())

    def _quarantine(self, why: str) -> JournalData:
        bad = self.path.with_suffix(".corrupt")
        log.error("journal %s %s; moved to %s and starting idle", self.path, why, bad)
        try:
            self.path.replace(bad)
        except OSError:
            log.exception("could not move the bad journal aside")
        return JournalData()
