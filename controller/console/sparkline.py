"""Sparklines as a few bytes of inline SVG, drawn on the server.

A devices page holds 50 rows with two sparklines each and must answer in well under 300 ms:
a ``<polyline>`` per series costs microseconds and no script, while a charting library
would cost a canvas and a script run per cell. The device page's full telemetry charts use
the vendored uPlot instead (zoom, axes, tooltips).
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape


def sparkline(values: Sequence[float | None], *, width: int = 120, height: int = 24, colour: str = "#4269d0",
              zero_floor: bool = False) -> str:
    """An SVG polyline of the values (gaps skipped); an em dash when there is nothing to draw.

    Example:
        >>> sparkline([1, 3, 2]).startswith("<svg")
        True
    """
    pts = [(i, float(v)) for i, v in enumerate(values) if v is not None]
    if not pts:
        return "–"
    lo = 0.0 if zero_floor else min(v for _, v in pts)
    hi = max(v for _, v in pts)
    span = (hi - lo) or 1.0
    n = max(len(values) - 1, 1)
    coords = " ".join(f"{i * (width - 2) / n + 1:.1f},{height - 2 - (v - lo) / span * (height - 4):.1f}"
                      for i, v in pts)
    last = pts[-1][1]
    title = escape(f"last {last:.3g}, min {min(v for _, v in pts):.3g}, max {hi:.3g} ({len(pts)} samples)")
    return (f'<svg class="spark" viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img">'
            f"<title>{title}</title><polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"1.5\" "
            f'points="{coords}"/></svg>')
