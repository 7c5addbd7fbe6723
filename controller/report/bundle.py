"""Write a set of reports at once (the demo's stages, a release): one folder each plus an index page."""

from __future__ import annotations

import logging
from html import escape
from pathlib import Path
from typing import Any

from controller.report.builders import deployment_report, version_report

log = logging.getLogger(__name__)


def write_reports(registry: Any, folder: Path, *, deployments: dict[str, str] | None = None,
                  versions: dict[str, str] | None = None) -> dict[str, Path]:
    """``name → report.html`` for every deployment and version given, plus ``folder/index.html`` linking them.

    A report that cannot be made is logged and left out of the index (the caller's story goes on).
    """
    written: dict[str, Path] = {}
    jobs = [(f"version-{n}", version_report, v) for n, v in (versions or {}).items()]
    jobs += [(f"stage-{n}", deployment_report, d) for n, d in (deployments or {}).items()]
    for name, build, ref in jobs:
        try:
            written[name] = build(registry, ref).write(folder / name)
        except Exception:  # noqa: BLE001 - one report failing must not lose the others
            log.exception("could not write report %s (%s)", name, ref)
    items = "".join(f'<li><a href="{escape(p.relative_to(folder).as_posix())}">{escape(n)}</a></li>'
                    for n, p in written.items())
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "index.html").write_text(f"<!doctype html><meta charset='utf-8'><title>edgefleet reports</title>"
                                       f"<h1>edgefleet reports</h1><ul>{items}</ul>")
    return written
