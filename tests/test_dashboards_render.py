"""Offline checks of the matplotlib renderer (the live test renders against the real stack)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from mqttlb.dashboards.build import GENERATED_DIR
from mqttlb.dashboards.execute import PanelResult, TargetResult, Window
from mqttlb.dashboards.render import annotation_times, format_value, render_png, with_gaps
from mqttlb.dashboards.resolve import resolve_panels, resolve_variables
from mqttlb.prometheus_api import RangeSeries

NOW = 1_800_000_000.0


def test_annotation_marks_start_each_burst() -> None:
    series = RangeSeries(
        {"kind": "rebalance"}, [(100, 1.0), (102, 2.0), (104, 1.0), (130, 1.0), (132, 0.0), (134, 3.0)]
    )
    assert annotation_times([("actions", [series], None)], step=2) == [100, 130, 134]


def test_missing_samples_break_lines() -> None:
    gapped = with_gaps(RangeSeries({}, [(0, 1.0), (2, 1.0), (20, 1.0)]), step=2)
    assert [t for t, _ in gapped.points] == [0, 2, 4, 20]
    assert math.isnan(gapped.points[2][1])


def test_values_are_formatted_with_their_unit() -> None:
    assert format_value(0.756, "percentunit") == "75.6%"
    assert format_value(2.0, "cps") == "2/s"
    assert format_value(math.nan, "short") == "NaN"


@pytest.mark.parametrize("name", ["mqttlb-rebalancer", "mqttlb-cluster-balance"])
def test_render_draws_each_panel_kind(name: str, tmp_path: Path) -> None:
    dashboard = json.loads((GENERATED_DIR / f"{name}.json").read_text())
    window = Window.last(300, 5, now=NOW)
    variables = resolve_variables(dashboard, {"node": ["node1", "node2"]})
    panels = resolve_panels(dashboard, variables, window.interval)
    points = [(NOW - 300 + 5 * i, float(i % 7)) for i in range(61)]
    results = []
    for i, panel in enumerate(p for p in panels if p.type != "row"):
        if i == 0:  # one panel shows a failed query, one shows no data, the rest data
            results.append(PanelResult(panel, [TargetResult(panel.targets[0], [], "bad_data: parse error")]))
        elif i == 1:
            results.append(PanelResult(panel, [TargetResult(t, []) for t in panel.targets]))
        else:
            found = [RangeSeries({"node": "node1", "alertname": "MqttBrokerCpuHigh", "kind": "rebalance"}, points)]
            results.append(PanelResult(panel, [TargetResult(t, found) for t in panel.targets]))
    out = render_png(
        "title",
        "subtitle",
        [p for p in panels if p.type == "row"],
        results,
        window,
        tmp_path / "x.png",
        annotations=[NOW - 100],
    )
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 50_000
    assert not list(tmp_path.glob(".*.tmp.png"))
