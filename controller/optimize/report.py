"""``report.html``: a self-contained page (no network, no scripts) with the front and how to rebuild it.

The chart is drawn by matplotlib and inlined as SVG: quality against latency ratio for every
measured point, the Pareto front joined, the recommended build starred, the quality floor as a
line. Below it: the recommended build, the table of front points, the failed trials with their
reasons, and the commands that reproduce the recommended build and the whole search.
"""

from __future__ import annotations

import html
import io
import json
import shlex
from pathlib import Path
from typing import Any

from controller.optimize.result import SearchResult


def front_svg(result: SearchResult) -> str:
    """The front as an inline ``<svg>`` string."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    floor = result.meta["constraints"]["quality_floor"]
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    pts = [p for p in result.points if p.get("repeat_of") is None]
    feas = [p for p in pts if p["feasible"]]
    infeas = [p for p in pts if not p["feasible"]]
    if infeas:
        ax.scatter([p["latency_ratio"] for p in infeas], [p["quality"] for p in infeas], c="#bbbbbb", s=22,
                   label="measured, misses a constraint")
    if feas:
        ax.scatter([p["latency_ratio"] for p in feas], [p["quality"] for p in feas], c="#4c72b0", s=22,
                   label="measured, feasible")
    front = sorted((p for p in pts if p["pareto"]), key=lambda p: p["latency_ratio"])
    if front:
        ax.plot([p["latency_ratio"] for p in front], [p["quality"] for p in front], "o--", c="#dd8452", ms=7,
                mfc="none", label="Pareto front (all objectives)")
    rec = result.recommended
    if rec:
        ax.scatter([rec["latency_ratio"]], [rec["quality"]], marker="*", s=260, c="#c44e52", zorder=5,
                   label="recommended")
    ax.axhline(floor, color="#55a868", lw=1, ls=":", label=f"quality floor {floor}")
    ax.axvline(1.0, color="#999999", lw=0.8, ls="-")
    ax.set_xlabel("latency vs FP32 (p50 ratio, host, profile ORT tuning) — lower is better")
    ax.set_ylabel(f"quality ({result.meta['metric']}, FP32 = 1)")
    ax.set_title(f"{result.meta['model']} on {result.meta['profile']} — {result.meta['strategy']}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight")
    plt.close(fig)
    svg = buf.getvalue()
    return svg[svg.index("<svg"):]


def _fmt(v: Any, digits: int = 3) -> str:
    return "–" if v is None else f"{v:.{digits}f}" if isinstance(v, float) else html.escape(str(v))


def reproduce_commands(result: SearchResult, point: dict[str, Any], model: str) -> list[str]:
    """``edgefleet compress`` commands rebuilding ``point`` stage by stage.

    Stages after the first run on an ONNX file, so they take the search's calibration samples,
    which ``edgefleet optimize`` saves as ``calibration.npz`` in its output directory.
    """
    cmds, src = [], model
    for i, stage in enumerate(point["config"]["stages"]):
        out = f"stage{i + 1}-{stage['technique']}.onnx"
        cmd = ["edgefleet", "compress", "--model", src, "--config", json.dumps(stage["config"], sort_keys=True),
               "--out", out]
        if i > 0 or model.endswith(".onnx"):
            cmd += ["--calibration", "calibration.npz"]
        cmds.append(" ".join(shlex.quote(c) for c in cmd))
        src = out
    return cmds or [f"# the recommended build is the FP32 model itself ({model})"]


def write_report(result: SearchResult, out: Path, *, command: str | None = None) -> Path:
    """Write ``report.html`` beside ``pareto.json``."""
    meta, rec = result.meta, result.recommended
    rows = []
    for p in sorted((p for p in result.points if p["pareto"]), key=lambda p: p["latency_ratio"]):
        rows.append("<tr{}><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>"
                    "<td>{}</td><td>{}</td></tr>".format(
                        ' class="rec"' if p["recommended"] else "", p["trial"], html.escape(p["label"] or ""),
                        _fmt(p["quality"], 4), _fmt(p["latency_ratio"], 2), _fmt(p["figures"]["latency_p95_ms"], 2),
                        _fmt(p["size_ratio"]), _fmt(p["memory_ratio"], 2), "yes" if p["feasible"] else "no",
                        html.escape(p["version_id"] or "–")))
    failed = "".join(f"<li>trial {f['trial']} <code>{html.escape(f['label'] or '')}</code>: "
                     f"{html.escape(f['reason'])}</li>" for f in result.failed) or "<li>none</li>"
    model = meta["model"]
    rec_html = "<p><b>No recommended build.</b> " + html.escape(result.message) + "</p>"
    if rec:
        steps = "\n".join(reproduce_commands(result, rec, model))
        rec_html = (f"<p><b>{html.escape(rec['label'])}</b> (trial {rec['trial']}, file "
                    f"<code>{html.escape(rec['path'])}</code>, version <code>{html.escape(rec['version_id'] or '–')}"
                    f"</code>): quality {rec['quality']:.4f}, latency {rec['latency_ratio']:.2f}× FP32 (p95 "
                    f"{rec['figures']['latency_p95_ms']:.2f} ms on the host), size {rec['size_ratio']:.3f}×, memory "
                    f"{_fmt(rec['memory_ratio'], 2)}×.</p><p>Rebuild it stage by stage:</p><pre>"
                    f"{html.escape(steps)}</pre>")
    search_cmd = f"<p>Re-run (resumes the stored study):</p><pre>{html.escape(command)}</pre>" if command else ""
    title = f"edgefleet optimize: {html.escape(model)} on {html.escape(meta['profile'])}"
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>body{{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#222}}
table{{border-collapse:collapse;font-size:.9rem}}td,th{{border:1px solid #ccc;padding:.25rem .5rem;text-align:right}}
td:nth-child(2){{text-align:left}}tr.rec{{background:#fde8e8;font-weight:bold}}pre{{background:#f5f5f5;padding:.6rem;
overflow-x:auto;white-space:pre-wrap}}.muted{{color:#666;font-size:.85rem}}</style></head><body>
<h1>{html.escape(model)} on {html.escape(meta['profile'])}</h1>
<p>{html.escape(result.message)}</p>
<p class="muted">strategy {html.escape(meta['strategy'])}, {meta['trials']} trials ({meta['measured']} measured,
{meta['failed']} failed), metric {html.escape(meta['metric'])} on {html.escape(meta['data'])}; quality floor
{meta['constraints']['quality_floor']}, SLO p95 {meta['slo']['latency_p95_ms']} ms / {meta['slo']['memory_mb']} MB
(host latency × {meta['constraints']['latency_scale']}), max artifact {meta['max_artifact_mb']} MB; hypervolume
{meta['hypervolume']:.4f}. Latency: p50 ratio vs FP32, interleaved, 1 thread batch 1, ONNX Runtime on the host with the
profile's session tuning. Memory: peak-RSS increase of a fresh process.</p>
{front_svg(result)}
<h2>Recommended build</h2>{rec_html}
<h2>Pareto front</h2>
<table><tr><th>trial</th><th>build</th><th>quality</th><th>latency ×</th><th>p95 ms</th><th>size ×</th>
<th>memory ×</th><th>feasible</th><th>version</th></tr>{''.join(rows)}</table>
<h2>Failed trials</h2><ul>{failed}</ul>
<h2>Reproduce</h2>{search_cmd}
<p class="muted">Search space: {html.escape(json.dumps(meta['space']))}</p>
</body></html>
"""
    path = Path(out) / "report.html"
    path.write_text(page)
    return path
