"""A/B model slots on disk: ``slots/a``, ``slots/b`` and an atomic ``current`` pointer.

A candidate is installed into the slot that is *not* current, so the running model is
never touched until commit flips the pointer; rollback is then just "leave the pointer
where it is and clear the candidate". Each slot holds the model file, its golden set,
the signed manifest and the baseline benchmark measured on this device when it was
committed (what the next candidate is compared with).
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Literal

from pydantic import ValidationError

from agent.atomic import atomic_write_bytes, fsync_dir
from agent.errors import ArtifactVerificationError
from common.errors import ReasonCode
from common.manifest import Manifest, sha256_file
from common.messages import BenchMetrics, ModelRef

log = logging.getLogger(__name__)

SlotName = Literal["a", "b"]
SLOT_NAMES: tuple[SlotName, SlotName] = ("a", "b")
MANIFEST_FILE = "manifest.json"
BASELINE_FILE = "baseline.json"


class Slot:
    """One slot folder."""

    def __init__(self, root: Path, name: SlotName) -> None:
        self.name: SlotName = name
        self.path = root / name

    def manifest(self) -> Manifest | None:
        """The manifest of the installed model, or None for an empty or half-written slot."""
        try:
            return Manifest.model_validate_json((self.path / MANIFEST_FILE).read_bytes())
        except FileNotFoundError:
            return None
        except (OSError, ValidationError, ValueError):
            log.warning("slot %s has an unreadable manifest; treating it as empty", self.name)
            return None

    def file(self, role: str) -> Path:
        """Path of the file with the given role (``model`` / ``golden``)."""
        manifest = self.manifest()
        if manifest is None:
            raise FileNotFoundError(f"slot {self.name} is empty")
        return self.path / manifest.blob(role).filename

    def model_ref(self) -> ModelRef | None:
        """What this slot holds, as reported in DeviceState."""
        manifest = self.manifest()
        return model_ref(manifest) if manifest else None

    def baseline(self) -> BenchMetrics | None:
        """Benchmark of this model measured on this device, if one was stored."""
        try:
            return BenchMetrics.model_validate_json((self.path / BASELINE_FILE).read_bytes())
        except (OSError, ValidationError, ValueError):
            return None

    def write_baseline(self, metrics: BenchMetrics) -> None:
        """Store the on-device benchmark next to the model."""
        atomic_write_bytes(self.path / BASELINE_FILE, metrics.model_dump_json().encode())

    def clear(self) -> None:
        """Empty the slot (the manifest goes first so a crash never leaves a slot that looks valid)."""
        (self.path / MANIFEST_FILE).unlink(missing_ok=True)
        if self.path.exists():
            shutil.rmtree(self.path)

    def install(self, manifest: Manifest, sources: dict[str, Path]) -> None:
        """Copy verified files in and check them again; the manifest is written last, marking it complete.

        Raises:
            ArtifactVerificationError: a copied file does not match the signed manifest.
        """
        self.clear()
        self.path.mkdir(parents=True)
        for ref in manifest.files:
            dest = self.path / ref.filename
            shutil.copyfile(sources[ref.role], dest)
            if dest.stat().st_size != ref.size or sha256_file(dest) != ref.sha256:
                self.clear()
                raise ArtifactVerificationError(
                    ReasonCode.HASH_MISMATCH, f"{ref.role} file changed while installing into slot {self.name}"
                )
        fsync_dir(self.path)
        atomic_write_bytes(self.path / MANIFEST_FILE, manifest.model_dump_json().encode())

    def verify(self) -> Manifest:
        """Re-check every installed file against the manifest (before benchmark and commit).

        Raises:
            ArtifactVerificationError: slot empty or a file differs.
        """
        manifest = self.manifest()
        if manifest is None:
            raise ArtifactVerificationError(ReasonCode.HASH_MISMATCH, f"slot {self.name} holds no installed model")
        for ref in manifest.files:
            path = self.path / ref.filename
            if not path.exists() or path.stat().st_size != ref.size or sha256_file(path) != ref.sha256:
                raise ArtifactVerificationError(
                    ReasonCode.HASH_MISMATCH, f"slot {self.name}: {ref.filename} does not match its manifest"
                )
        return manifest


class SlotStore:
    """The two slots and the pointer saying which one is active.

    Example:
        >>> import tempfile; store = SlotStore(Path(tempfile.mkdtemp()))
        >>> store.current() is None, store.inactive().name
        (True, 'a')
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.slots = {name: Slot(root, name) for name in SLOT_NAMES}

    @property
    def pointer(self) -> Path:
        """The ``current`` pointer file."""
        return self.root / "current"

    def current_name(self) -> SlotName | None:
        """Name of the active slot, or None before the first commit."""
        try:
            name = self.pointer.read_text().strip()
        except FileNotFoundError:
            return None
        return name if name in SLOT_NAMES else None  # type: ignore[return-value]

    def current(self) -> Slot | None:
        """The active slot if it holds a model."""
        name = self.current_name()
        if name is None or self.slots[name].manifest() is None:
            return None
        return self.slots[name]

    def inactive(self) -> Slot:
        """The slot a candidate is installed into."""
        name = self.current_name()
        return self.slots["b" if name == "a" else "a"]

    def previous(self) -> Slot | None:
        """The non-active slot if it still holds a model (the one a commit replaced)."""
        slot = self.inactive()
        return slot if self.current_name() is not None and slot.manifest() is not None else None

    def activate(self, name: SlotName) -> None:
        """Flip the pointer atomically: the commit point."""
        atomic_write_bytes(self.pointer, name.encode())

    def local_files(self) -> dict[str, Path]:
        """Files installed in either slot by sha256: a download can reuse them instead of fetching again
        (the golden set shared by a model lineage, or a fleet rollback to the model in the other slot)."""
        found: dict[str, Path] = {}
        for slot in self.slots.values():
            manifest = slot.manifest()
            for ref in manifest.files if manifest else []:
                found[ref.sha256] = slot.path / ref.filename
        return found

    def describe(self) -> dict[str, object]:
        """Small JSON-able summary for logs."""
        return {name: (json.loads(s.model_ref().model_dump_json()) if s.model_ref() else None)
                for name, s in self.slots.items()} | {"current": self.current_name()}


def model_ref(manifest: Manifest) -> ModelRef:
    """The ModelRef naming a manifest's model file."""
    return ModelRef(
        model_id=manifest.model_id,
        version=manifest.version,
        sha256=manifest.blob("model").sha256,
        format=manifest.format,
    )
