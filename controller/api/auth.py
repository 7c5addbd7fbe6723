"""Bearer API keys: generated once, stored only as sha256 hashes, each read-only or read-write.

Why sha256 and not argon2: API keys are 256-bit random tokens, not human passwords, so a
slow hash adds no protection against guessing and would cost ~50 ms per request on these
2-core machines (the job-status target is p95 < 20 ms). A leaked key file still reveals no
key. Keys come from ``EDGEFLEET_API_KEYS`` and/or ``EDGEFLEET_API_KEYS_FILE``, one
``name:role:sha256hex`` entry per item; ``edgefleet controller keygen`` prints a new key and
its entry.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

KEY_PREFIX = "efk_"
_ENTRY = re.compile(r"^(?P<name>[A-Za-z0-9_.-]{1,64}):(?P<role>rw|ro):(?:sha256:)?(?P<hash>[0-9a-f]{64})$")


class Role(StrEnum):
    """What a key may do."""

    READ_WRITE = "rw"
    READ_ONLY = "ro"


@dataclass(frozen=True)
class Principal:
    """Who made a request (recorded in the audit log and on jobs)."""

    name: str
    role: Role

    @property
    def can_write(self) -> bool:
        """True for read-write keys."""
        return self.role is Role.READ_WRITE


LOCAL = Principal("local", Role.READ_WRITE)  # loopback without any key configured (development)


class KeyConfigError(ValueError):
    """A key entry is malformed; the message names it (without the hash)."""


def hash_key(token: str) -> str:
    """sha256 hex of a presented token."""
    return hashlib.sha256(token.encode()).hexdigest()


def generate_key(name: str, role: Role = Role.READ_WRITE) -> tuple[str, str]:
    """A new random token and the ``name:role:sha256`` entry to configure; only the entry is stored."""
    if not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", name):
        raise KeyConfigError(f"key name {name!r} must be 1-64 characters of letters, digits, '_', '.', '-'")
    token = KEY_PREFIX + secrets.token_urlsafe(32)
    return token, f"{name}:{Role(role).value}:{hash_key(token)}"


class KeyRing:
    """The configured keys, looked up by hash."""

    def __init__(self, entries: list[str]) -> None:
        self._by_hash: dict[str, Principal] = {}
        for raw in entries:
            entry = raw.strip()
            if not entry or entry.startswith("#"):
                continue
            m = _ENTRY.match(entry)
            if not m:
                name = entry.split(":", 1)[0]
                raise KeyConfigError(f"API key entry {name!r} is not name:role:sha256hex with role rw or ro")
            self._by_hash[m["hash"]] = Principal(m["name"], Role(m["role"]))

    @classmethod
    def from_settings(cls, keys: str, keys_file: Path | None) -> KeyRing:
        """Keys from the comma-separated setting plus the file (one entry per line)."""
        entries = [e for e in keys.split(",") if e.strip()]
        if keys_file is not None:
            try:
                entries += keys_file.read_text().splitlines()
            except OSError as exc:
                raise KeyConfigError(f"cannot read API keys file {keys_file}: {exc}") from exc
        return cls(entries)

    def __len__(self) -> int:
        return len(self._by_hash)

    def lookup(self, token: str) -> Principal | None:
        """The principal for a presented token, or None."""
        return self._by_hash.get(hash_key(token))
