"""How the client shows answers: tables for people (rich), JSON for scripts (``--json``).

The REST envelope's ``data`` is either one object, a list of objects or a page
(``{"items": [...], "total": n}``). One renderer handles all three, picking the columns a
person wants first and summarising nested values, so a 180-line model version fits on a
screen; ``--json`` prints everything, unchanged.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import Any

PREFERRED = ("id", "name", "device_id", "state", "online", "profile", "kind", "technique", "format", "version",
             "model_id", "progress", "stage", "wave", "waves", "phase", "outcomes", "reason", "size_bytes",
             "created_at", "created_by")
MAX_COLUMNS = 8
MAX_CELL = 60


def cell(value: Any) -> str:
    """A value as a short table cell: nested objects summarised, long text cut."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict):
        if {"model_id", "version"} <= value.keys():
            return f"{str(value['model_id'])[:8]}@{str(value['version'])[:8]}"
        text = ", ".join(f"{k}={cell(v)}" for k, v in value.items() if not isinstance(v, dict | list))
        return _cut(text or "{…}")
    if isinstance(value, list):
        return f"[{len(value)}]" if value and isinstance(value[0], dict) else _cut(", ".join(map(str, value)))
    return _cut(str(value))


def _cut(text: str) -> str:
    return text if len(text) <= MAX_CELL else text[: MAX_CELL - 1] + "…"


def columns_for(rows: Sequence[dict[str, Any]], wanted: Sequence[str] | None = None) -> list[str]:
    """Requested columns, else the preferred ones present, then other scalar fields, at most MAX_COLUMNS."""
    keys: dict[str, None] = {}
    for row in rows:
        keys.update(dict.fromkeys(row))
    if wanted:
        return [c for c in wanted if c in keys]
    first = [k for k in PREFERRED if k in keys]
    rest = [k for k in keys if k not in first and not any(isinstance(r.get(k), dict | list) for r in rows)]
    return (first + rest)[:MAX_COLUMNS]


def table(rows: Sequence[dict[str, Any]], wanted: Sequence[str] | None = None, title: str | None = None) -> Any:
    """A rich Table of rows."""
    from rich.table import Table

    cols = columns_for(rows, wanted)
    out = Table(title=title, header_style="bold", show_lines=False)
    for col in cols:
        out.add_column(col.replace("_", " "), overflow="fold")
    for row in rows:
        out.add_row(*(cell(row.get(c)) for c in cols))
    return out


def details(obj: dict[str, Any], title: str | None = None) -> list[Any]:
    """One object: a field/value table, then a table per nested list of objects (devices, items…)."""
    from rich.table import Table

    head = Table(title=title, show_header=False, box=None, padding=(0, 2))
    head.add_column(style="bold")
    head.add_column(overflow="fold")
    nested = []
    for key, value in obj.items():
        if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            nested.append(table(value, title=key.replace("_", " ")))
        else:
            head.add_row(key.replace("_", " "), cell(value))
    return [head, *nested]


def show(data: Any, *, as_json: bool = False, columns: Sequence[str] | None = None, title: str | None = None) -> None:
    """Print a REST answer for a person (tables) or a script (``as_json``)."""
    if as_json:
        print(json.dumps(data, indent=2, sort_keys=True, default=str))
        return
    from rich.console import Console

    # piped output (a file, less, a test) gets a wide page so ids are never folded mid-way
    console = Console(soft_wrap=False, width=None if sys.stdout.isatty() else 200)
    if isinstance(data, dict) and isinstance(data.get("items"), list):
        rest = {k: v for k, v in data.items() if k != "items"}
        console.print(table(data["items"], columns, title) if data["items"] else "no items")
        if rest:
            console.print(" ".join(f"{k}={v}" for k, v in rest.items()), style="dim")
    elif isinstance(data, list):
        rows = [r for r in data if isinstance(r, dict)]
        console.print(table(rows, columns, title) if rows else "nothing yet")
    elif isinstance(data, dict):
        for part in details(data, title):
            console.print(part)
    else:
        console.print(str(data))


def error(message: str) -> None:
    """An error line on stderr (what scripts and people both read)."""
    print(f"error: {message}", file=sys.stderr)
