"""Charts for reports, drawn with matplotlib (Agg) and returned as inline SVG text and PNG bytes.

Why matplotlib: it is well kept, already in the controller's environment, renders without a
display, and its SVG output (text kept as text) is a few KB per chart, so a report with six
charts stays far below the 2 MB budget and needs no JavaScript. Plotly would be nicer to hover
but its bundle alone is ~3.5 MB.

Every function takes plain data (lists, dicts) and returns a :class:`Chart`, so other report
writers (the optimisation search's Pareto report, the demo) can reuse them without knowing how
a job or a rollout is stored.

Example:
    >>> chart = bar_compare("size", ["reference", "candidate"], [90.9, 23.1], unit="MB")
    >>> chart.svg.startswith("<svg")
    True
"""

from __future__ import annotations

import io
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

_LOCK = threading.Lock()  # pyplot's state machine is not thread-safe; we use Figure objects but stay careful
PALETTE = ("#4269d0", "#efb118", "#ff725c", "#6cc5b0", "#3ca951", "#ff8ab7", "#a463f2", "#97bbf5")
OUTCOME_COLOURS = {"committed": "#3ca951", "succeeded": "#3ca951", "regressed": "#ff725c", "rolled_back": "#ff725c",
                   "failed": "#d62728", "timed_out": "#efb118", "skipped": "#bbbbbb", "pending": "#97bbf5",
                   "running": "#4269d0", "superseded": "#a463f2"}


@dataclass(frozen=True)
class Chart:
    """One chart: a stable file name, a caption, the SVG text (inline) and PNG bytes (for docs)."""

    name: str
    title: str
    svg: str
    png: bytes


def _figure(width: float, height: float) -> Any:
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    return fig


def _finish(fig: Any, name: str, title: str) -> Chart:
    import matplotlib

    with _LOCK, matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": name}):
        buf = io.StringIO()
        fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": None})
        png = io.BytesIO()
        fig.savefig(png, format="png", dpi=110)
    svg = buf.getvalue()
    svg = svg[svg.index("<svg"):]  # drop the XML prolog and doctype: the SVG is inlined in HTML
    svg = re.sub(r'\s(width|height)="[\d.]+pt"', "", svg, count=2)  # let CSS size it
    return Chart(name=name, title=title, svg=svg, png=png.getvalue())


def _style(ax: Any) -> None:
    ax.spines[["top", "right"]].set_visible(False)
    ax.grid(axis="y", alpha=0.3)


def bar_compare(name: str, labels: Sequence[str], values: Sequence[float], *, unit: str = "", title: str = "",
                colours: Sequence[str] | None = None) -> Chart:
    """Horizontal bars with the value written at the end (reference vs candidates)."""
    fig = _figure(6.4, 0.45 * len(labels) + 1.0)
    ax = fig.add_subplot()
    ys = range(len(labels))
    bars = ax.barh(list(ys), list(values), color=list(colours or PALETTE[:len(labels)]))
    ax.set_yticks(list(ys), list(labels))
    ax.invert_yaxis()
    ax.bar_label(bars, labels=[f"{v:.3g} {unit}".strip() for v in values], padding=3, fontsize=8)
    ax.set_xlabel(unit)
    ax.margins(x=0.18)
    ax.spines[["top", "right"]].set_visible(False)
    ax.set_title(title or name, fontsize=10)
    return _finish(fig, name, title or name)


def summary_ratios(name: str, ratios: dict[str, float | None], *, title: str = "candidate / FP32") -> Chart:
    """One bar per headline ratio (size, latency p50/p95, memory, quality) around the 1.0 line."""
    items = [(k, v) for k, v in ratios.items() if v is not None]
    fig = _figure(6.4, 0.42 * max(len(items), 1) + 1.0)
    ax = fig.add_subplot()
    labels = [k for k, _ in items]
    values = [float(v) for _, v in items]
    quality = [k.startswith("quality") for k, _ in items]
    colours = [("#3ca951" if v >= 0.99 else "#efb118" if v >= 0.95 else "#ff725c") if q else
               ("#3ca951" if v <= 1.0 else "#ff725c") for q, v in zip(quality, values, strict=True)]
    bars = ax.barh(range(len(values)), values, color=colours)
    ax.axvline(1.0, color="#333", lw=1, ls="--")
    ax.set_yticks(range(len(values)), labels)
    ax.invert_yaxis()
    ax.bar_label(bars, labels=[f"{v:.4f}" if q else f"×{v:.3g}" for q, v in zip(quality, values, strict=True)],
                 padding=3, fontsize=8)
    ax.margins(x=0.15)
    ax.spines[["top", "right"]].set_visible(False)
    ax.set_title(title, fontsize=10)
    return _finish(fig, name, title)


def latency_distribution(name: str, series: dict[str, dict[str, float]], *, title: str = "latency (ms)") -> Chart:
    """Box plots from quantile summaries (``min p25 p50 p75 max``, or ``p5 p95`` whiskers).

    ``series`` maps a label (``"FP32 t1 b1"``) to a dict with ``p50_ms`` and, when measured,
    ``quantiles_ms``; a series without quantiles is drawn as a p50..p95 box so older
    measurements still show.
    """
    stats = []
    for label, s in series.items():
        q = s.get("quantiles_ms") or {}
        p50, p95 = float(s.get("p50_ms", 0.0)), float(s.get("p95_ms", s.get("p50_ms", 0.0)))
        stats.append({"label": label, "med": float(q.get("p50", p50)), "q1": float(q.get("p25", p50)),
                      "q3": float(q.get("p75", p95)), "whislo": float(q.get("p5", q.get("min", p50))),
                      "whishi": float(q.get("p95", p95)), "mean": float(s.get("mean_ms", p50)),
                      "fliers": [v for v in (q.get("p99"),) if v is not None]})
    fig = _figure(6.4, 0.5 * max(len(stats), 1) + 1.2)
    ax = fig.add_subplot()
    if stats:
        artists = ax.bxp(stats, orientation="horizontal", showmeans=True, patch_artist=True, widths=0.55)
        for i, box in enumerate(artists["boxes"]):
            box.set_facecolor(PALETTE[(i // 2) % len(PALETTE)] if len(stats) > 2 else PALETTE[i % len(PALETTE)])
            box.set_alpha(0.75)
        ax.invert_yaxis()
    ax.set_xlabel("ms (box p25–p75, whiskers p5–p95, dot p99, ▲ mean)")
    ax.grid(axis="x", alpha=0.3)
    ax.spines[["top", "right"]].set_visible(False)
    ax.set_title(title, fontsize=10)
    return _finish(fig, name, title)


def size_breakdown(name: str, breakdown: dict[str, dict[str, int]], *,
                   title: str = "size by tensor type (MB)") -> Chart:
    """Stacked bars: for each model (label), bytes per category (dtype or op type)."""
    labels = list(breakdown)
    cats = sorted({c for parts in breakdown.values() for c in parts},
                  key=lambda c: -sum(p.get(c, 0) for p in breakdown.values()))
    biggest = max((sum(p.values()) for p in breakdown.values()), default=0)
    unit, div = ("MB", 1e6) if biggest >= 1e6 else ("KB", 1e3)
    title = title.replace("(MB)", f"({unit})")
    fig = _figure(6.4, 0.55 * max(len(labels), 1) + 1.3)
    ax = fig.add_subplot()
    left = [0.0] * len(labels)
    for i, cat in enumerate(cats):
        vals = [breakdown[lab].get(cat, 0) / div for lab in labels]
        ax.barh(range(len(labels)), vals, left=left, label=cat, color=PALETTE[i % len(PALETTE)])
        left = [a + b for a, b in zip(left, vals, strict=True)]
    for i, total in enumerate(left):
        ax.text(total, i, f" {total:.2f} {unit}", va="center", fontsize=8)
    ax.set_yticks(range(len(labels)), labels)
    ax.invert_yaxis()
    ax.margins(x=0.2)
    ax.legend(fontsize=7, ncols=min(4, max(len(cats), 1)), loc="upper center", bbox_to_anchor=(0.5, -0.18),
              frameon=False)
    ax.spines[["top", "right"]].set_visible(False)
    ax.set_title(title, fontsize=10)
    return _finish(fig, name, title)


def layer_drift(name: str, rows: Sequence[dict[str, Any]], *, title: str = "per-layer weight drift vs FP32",
                limit: int = 40) -> Chart:
    """Per-layer SQNR (dB, lower = more damage) in graph order; the worst ``limit`` layers when there are more."""
    rows = list(rows)
    if len(rows) > limit:
        worst = sorted(rows, key=lambda r: r["sqnr_db"])[:limit]
        keep = {r["name"] for r in worst}
        rows = [r for r in rows if r["name"] in keep]
    fig = _figure(6.8, max(2.0, 0.22 * len(rows) + 1.2))
    ax = fig.add_subplot()
    vals = [min(float(r["sqnr_db"]), 80.0) for r in rows]
    colours = ["#ff725c" if v < 20 else "#efb118" if v < 30 else "#3ca951" for v in vals]
    ax.barh(range(len(rows)), vals, color=colours)
    ax.set_yticks(range(len(rows)), [_short(r["name"]) for r in rows], fontsize=7)
    ax.invert_yaxis()
    ax.axvline(20, color="#ff725c", lw=0.8, ls=":")
    ax.axvline(30, color="#efb118", lw=0.8, ls=":")
    ax.set_xlabel("weight SQNR dB vs FP32 (higher = closer; < 20 dB red, < 30 dB amber; capped at 80)")
    ax.grid(axis="x", alpha=0.3)
    ax.spines[["top", "right"]].set_visible(False)
    ax.set_title(title, fontsize=10)
    return _finish(fig, name, title)


def _short(text: str, n: int = 42) -> str:
    return text if len(text) <= n else "…" + text[-(n - 1):]


def device_figures(name: str, rows: Sequence[dict[str, Any]], *, title: str = "on-device p95 latency (ms)") -> Chart:
    """Per device: candidate vs baseline p95, the bar coloured by the device's decision."""
    fig = _figure(6.6, 0.5 * max(len(rows), 1) + 1.3)
    ax = fig.add_subplot()
    ys = list(range(len(rows)))
    cand = [float(r.get("p95_ms") or 0.0) for r in rows]
    base = [float(r.get("baseline_p95_ms") or 0.0) for r in rows]
    colours = [OUTCOME_COLOURS.get(str(r.get("outcome")), "#4269d0") for r in rows]
    ax.barh([y + 0.2 for y in ys], cand, height=0.38, color=colours, label="candidate (colour = decision)")
    ax.barh([y - 0.2 for y in ys], base, height=0.38, color="#cccccc", label="baseline (active before)")
    for y, c, r in zip(ys, cand, rows, strict=True):
        ax.text(c, y + 0.2, f" {c:.3g} {r.get('outcome', '')}", va="center", fontsize=7)
    ax.set_yticks(ys, [str(r["device_id"]) for r in rows], fontsize=8)
    ax.invert_yaxis()
    ax.margins(x=0.3)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncols=2, frameon=False)
    ax.spines[["top", "right"]].set_visible(False)
    ax.set_title(title, fontsize=10)
    return _finish(fig, name, title)


def timeline(name: str, lanes: Sequence[dict[str, Any]], events: Sequence[dict[str, Any]], *,
             title: str = "rollout timeline") -> Chart:
    """Gantt-like lanes (one per device: start → end coloured by outcome) and decision markers.

    ``lanes``: ``{"label", "start_s", "end_s", "outcome"}``; ``events``: ``{"t_s", "kind"}``, both in
    seconds since the rollout was created.
    """
    fig = _figure(7.0, 0.36 * max(len(lanes), 1) + 1.8)
    ax = fig.add_subplot()
    for i, lane in enumerate(lanes):
        width = max(float(lane["end_s"]) - float(lane["start_s"]), 0.05)
        ax.broken_barh([(float(lane["start_s"]), width)], (i - 0.35, 0.7),
                       color=OUTCOME_COLOURS.get(str(lane["outcome"]), "#4269d0"))
        ax.text(float(lane["start_s"]) + width, i, f" {lane['outcome']}", va="center", fontsize=7)
    ax.set_yticks(range(len(lanes)), [str(lane["label"]) for lane in lanes], fontsize=8)
    ax.invert_yaxis()
    seen: set[str] = set()
    for j, ev in enumerate(events):
        colour = "#ff725c" if "rollback" in ev["kind"] or "abort" in ev["kind"] else "#555555"
        ax.axvline(float(ev["t_s"]), color=colour, lw=0.7, ls=":")
        if ev["kind"] not in seen:
            seen.add(ev["kind"])
            ax.text(float(ev["t_s"]), -0.6 - 0.45 * (j % 3), ev["kind"], fontsize=6.5, rotation=0, color=colour)
    ax.set_xlabel("seconds since the rollout started")
    ax.set_ylim(len(lanes) - 0.5, -2.0)
    ax.grid(axis="x", alpha=0.3)
    ax.spines[["top", "right"]].set_visible(False)
    ax.set_title(title, fontsize=10)
    return _finish(fig, name, title)


def pareto(name: str, points: Sequence[dict[str, Any]], *, x: str, y: str, frontier: Sequence[int] = (),
           title: str = "Pareto front") -> Chart:
    """Scatter of candidates over two objectives with the non-dominated ones joined (for search reports)."""
    fig = _figure(6.4, 4.2)
    ax = fig.add_subplot()
    xs = [float(p[x]) for p in points]
    ys = [float(p[y]) for p in points]
    ax.scatter(xs, ys, color="#97bbf5", s=22, label="candidates")
    front = sorted((xs[i], ys[i], str(points[i].get("label", ""))) for i in frontier)
    if front:
        ax.plot([f[0] for f in front], [f[1] for f in front], "-o", color="#ff725c", ms=5, label="Pareto front")
        for fx, fy, lab in front:
            ax.annotate(lab, (fx, fy), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel(x)
    ax.set_ylabel(y)
    ax.legend(fontsize=7, frameon=False)
    _style(ax)
    ax.set_title(title, fontsize=10)
    return _finish(fig, name, title)
