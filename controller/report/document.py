"""The report document: sections of figures, tables, charts and the config, rendered to one HTML file.

A report is data first (:class:`Report`, JSON-ready through :meth:`Report.as_dict`) and HTML
second, so the API can serve either and other writers (the optimisation search, the demo)
can assemble their own sections and reuse the template. The HTML is self-contained: CSS
inline, charts as inline SVG, no script, no external URL — it opens from a mail attachment
on an offline laptop.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from common.errors import NotFoundError
from controller.report.charts import Chart

MAX_REPORT_BYTES = 2 * 1024 * 1024
_TEMPLATES = Path(__file__).parent / "templates"


class ReportError(NotFoundError):
    """A report cannot be made (unknown reference, unknown chart); the message says which and why (HTTP 404)."""


@dataclass
class Table:
    """Columns and rows of plain values (formatted by the template)."""

    columns: list[str]
    rows: list[list[Any]]
    caption: str = ""


@dataclass
class Section:
    """A titled block: short key figures, tables, charts, notes and an optional code block."""

    title: str
    figures: list[tuple[str, str]] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    charts: list[Chart] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    code: str | None = None
    code_caption: str = ""


@dataclass
class Report:
    """A whole report about one job, version, deployment or rollout."""

    kind: str
    ref: str
    title: str
    subtitle: str = ""
    verdict: str = ""
    verdict_ok: bool | None = None
    sections: list[Section] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)
    created_at: str = field(default_factory=lambda: datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC"))

    @property
    def charts(self) -> list[Chart]:
        """Every chart of every section, in order."""
        return [c for s in self.sections for c in s.charts]

    def chart(self, name: str) -> Chart:
        """One chart by file name (without extension)."""
        for c in self.charts:
            if c.name == name:
                return c
        raise ReportError(f"report {self.ref} has no chart {name!r}; charts: {', '.join(c.name for c in self.charts)}")

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: the figures and tables, the chart names (not their bytes), the raw data."""
        return {"kind": self.kind, "ref": self.ref, "title": self.title, "subtitle": self.subtitle,
                "verdict": self.verdict, "verdict_ok": self.verdict_ok, "created_at": self.created_at,
                "sections": [{"title": s.title, "figures": s.figures,
                              "tables": [{"caption": t.caption, "columns": t.columns, "rows": t.rows}
                                         for t in s.tables],
                              "charts": [{"name": c.name, "title": c.title} for c in s.charts],
                              "notes": s.notes, "code": s.code} for s in self.sections],
                "data": self.data}

    def html(self) -> str:
        """The self-contained HTML page."""
        return _env().get_template("report.html.j2").render(report=self, fmt=fmt)

    def write(self, folder: Path) -> Path:
        """Write ``report.html``, ``report.json`` and ``charts/<name>.svg|png`` under ``folder``; returns the HTML path.

        Written to temporary names then renamed, so a reader never sees half a report.
        """
        folder.mkdir(parents=True, exist_ok=True)
        charts = folder / "charts"
        charts.mkdir(exist_ok=True)
        for c in self.charts:
            _atomic_write(charts / f"{c.name}.svg", c.svg.encode())
            _atomic_write(charts / f"{c.name}.png", c.png)
        _atomic_write(folder / "report.json", json.dumps(self.as_dict(), indent=2, default=str).encode())
        html = self.html().encode()
        if len(html) > MAX_REPORT_BYTES:  # never expected (charts are a few KB of SVG); say so rather than hide it
            raise ReportError(f"report {self.ref} is {len(html)} bytes, over the {MAX_REPORT_BYTES}-byte budget")
        _atomic_write(folder / "report.html", html)
        return folder / "report.html"


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)


def fmt(value: Any) -> str:
    """Numbers with 4 significant digits, None as a dash, everything else as text."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict | list):
        return json.dumps(value, default=str)
    return str(value)


_ENV: Any = None


def _env() -> Any:
    global _ENV
    if _ENV is None:
        from jinja2 import Environment, FileSystemLoader, select_autoescape

        _ENV = Environment(loader=FileSystemLoader(str(_TEMPLATES)), autoescape=select_autoescape(["html", "j2"]),
                           trim_blocks=True, lstrip_blocks=True)
    return _ENV
