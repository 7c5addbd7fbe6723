"""The chart helpers other report writers reuse (the optimisation search's Pareto report, the demo)."""

from __future__ import annotations

import json

from controller.report import Report, Section, Table
from controller.report.charts import bar_compare, latency_distribution, pareto


def test_pareto_chart_draws_the_front_and_labels_it():
    points = [{"label": "fp32", "size_mb": 91, "p95_ms": 80}, {"label": "int8", "size_mb": 23, "p95_ms": 42},
              {"label": "bad", "size_mb": 60, "p95_ms": 90}]
    chart = pareto("pareto", points, x="size_mb", y="p95_ms", frontier=[0, 1])
    assert chart.svg.startswith("<svg") and "Pareto front" in chart.svg and "int8" in chart.svg
    assert "bad" not in chart.svg  # only the frontier is annotated
    assert chart.png[:4] == b"\x89PNG"


def test_latency_boxes_fall_back_to_p50_p95_and_bars_label_values():
    chart = latency_distribution("lat", {"old measurement": {"p50_ms": 4.0, "p95_ms": 6.0}})
    assert "old measurement" in chart.svg
    bars = bar_compare("size", ["fp32", "int8"], [90.9, 23.1], unit="MB")
    assert "23.1 MB" in bars.svg and "90.9 MB" in bars.svg


def test_a_hand_made_report_writes_html_json_and_charts(tmp_path):
    chart = bar_compare("size", ["a", "b"], [1.0, 2.0])
    report = Report(kind="search", ref="s-1", title="search <1>", verdict="2 on the front", verdict_ok=True,
                    sections=[Section("front", figures=[("points", "3")], charts=[chart],
                                      tables=[Table(["x", "y"], [[1.5, None], [{"a": 1}, True]])], code="{}")])
    html = report.write(tmp_path).read_text()
    assert "search &lt;1&gt;" in html and "<script" not in html  # escaped, no script
    assert "–" in html and "yes" in html  # None and True formatted
    data = json.loads((tmp_path / "report.json").read_text())
    assert data["sections"][0]["charts"] == [{"name": "size", "title": "size"}]
    assert (tmp_path / "charts" / "size.svg").read_text().startswith("<svg")
    assert report.chart("size") is chart
