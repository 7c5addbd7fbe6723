"""What ``agent/`` and ``common/`` need from Python 3.11, on the 3.9 and 3.10 that devices ship.

Raspberry Pi OS (Debian 11) has 3.9, Ubuntu 22.04 and JetPack 6 have 3.10; the agent must
run there. Everything version-dependent lives here so the rest of the code reads like 3.11.
CI checks the minimum version of ``agent/`` and ``common/`` statically with vermin.
"""

from __future__ import annotations

import datetime as _dt
import enum

UTC = _dt.timezone.utc
"""``datetime.UTC`` (3.11) is this same object."""

try:
    from enum import StrEnum  # novermin - 3.11; the fallback below behaves the same for our use
except ImportError:  # Python < 3.11

    class StrEnum(str, enum.Enum):  # type: ignore[no-redef]  # noqa: UP042 - the 3.9 backport itself
        """``str`` enum whose ``str()`` and format are the value, like 3.11's ``enum.StrEnum``."""

        def __str__(self) -> str:
            return str(self.value)

        def __format__(self, spec: str) -> str:
            return format(str(self.value), spec)

try:
    import tomllib  # novermin - 3.11
except ModuleNotFoundError:  # Python < 3.11: the same parser, packaged as tomli
    import tomli as tomllib  # type: ignore[no-redef]

__all__ = ["UTC", "StrEnum", "tomllib"]
