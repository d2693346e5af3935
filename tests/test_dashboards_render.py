"""Offline checks of the matplotlib renderer (the live test renders against the real stack)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from mqttlb.dashboards.build import GENERATED_DIR
from mqttlb.dashboards.execute import PanelResult, TargetResult, Window
from mqttlb.dashboards.render import annotation_times, format_value, reduce, render_png, with_gaps
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
    assert format_value(1.3333, "none", decimals=0) == "1"  # action counts: whole numbers
    assert format_value(0.756, "percentunit", decimals=0) == "76%"


def test_stat_reductions_follow_grafana() -> None:
    busy_then_idle = [math.nan, 5.0, 1.2, 1.1, math.nan]
    assert reduce(busy_then_idle, "lastNotNull") == 1.1  # the range's newest value
    assert math.isnan(reduce(busy_then_idle, "last"))
    assert reduce(busy_then_idle, "firstNotNull") == 5.0
    assert reduce(busy_then_idle, "mean") == pytest.approx(7.3 / 3)
    assert reduce(busy_then_idle, "max") == 5.0 and reduce(busy_then_idle, "min") == 1.1
    assert math.isnan(reduce([], "lastNotNull")) and math.isnan(reduce([math.nan], "mean"))
    with pytest.raises(ValueError, match="'median' is not supported"):
        reduce([1.0], "median")


def test_resolved_panels_carry_what_the_renderer_draws() -> None:
    rebalancer = json.loads((GENERATED_DIR / "mqttlb-rebalancer.json").read_text())
    window = Window.last(300, 5, now=NOW)
    panels = {p.title: p for p in resolve_panels(rebalancer, resolve_variables(rebalancer), window.interval)}
    decided, applied = panels["Endpoint weights: decided vs applied"].targets
    assert decided.dashed and not applied.dashed
    assert decided.line_width is not None and applied.line_width is not None
    assert decided.line_width > applied.line_width
    assert panels["Actions taken"].extra["decimals"] == 0
    balance = json.loads((GENERATED_DIR / "mqttlb-cluster-balance.json").read_text())
    stats = {p.title: p for p in resolve_panels(balance, resolve_variables(balance), window.interval)}
    ratio = stats["Busiest / idlest node"]
    assert ratio.extra["calcs"] == ("lastNotNull",) and ratio.extra["color_mode"] == "value"
    assert ratio.extra["value_texts"] == {0.0: "idle (mean < 10%)"}
    assert stats["Nodes up"].extra["color_mode"] == "none"


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
