"""Load generated dashboards and run their panel queries against Prometheus."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mqttlb.dashboards.resolve import (
    Discover,
    Interval,
    ResolvedPanel,
    ResolvedTarget,
    Variable,
    resolve_annotations,
    resolve_panels,
    resolve_variables,
)
from mqttlb.prometheus_api import PrometheusApi, PrometheusApiError, RangeSeries


def load_dashboard(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: not a readable dashboard JSON file ({exc})") from exc
    if not isinstance(data, dict) or not isinstance(data.get("panels"), list) or not data.get("uid"):
        raise ValueError(f"{path}: not a Grafana dashboard (needs uid and panels)")
    return data


def load_dashboards(directory: Path) -> list[tuple[Path, dict[str, Any]]]:
    paths = sorted(Path(directory).glob("*.json"))
    if not paths:
        raise ValueError(f"{directory}: no dashboard JSON files (run `mqttlb dashboards generate`)")
    return [(p, load_dashboard(p)) for p in paths]


def discoverer(prom: PrometheusApi, start: float, end: float) -> Discover:
    return lambda selector, label: prom.label_values(selector, label, start, end)


@dataclass(frozen=True)
class TargetResult:
    target: ResolvedTarget
    series: list[RangeSeries]
    error: str | None = None

    @property
    def has_data(self) -> bool:
        return any(not math.isnan(v) for s in self.series for _, v in s.points)


@dataclass(frozen=True)
class PanelResult:
    panel: ResolvedPanel
    results: list[TargetResult]

    @property
    def errors(self) -> list[str]:
        return [f"{r.target.ref_id}: {r.error}" for r in self.results if r.error]

    @property
    def empty_targets(self) -> list[str]:
        return [r.target.ref_id for r in self.results if not r.error and not r.has_data]


@dataclass(frozen=True)
class Window:
    start: float
    end: float
    interval: Interval

    @classmethod
    def last(cls, range_seconds: float, scrape_seconds: float = 5.0, now: float | None = None) -> Window:
        end = time.time() if now is None else now
        return cls(end - range_seconds, end, Interval.for_range(range_seconds, scrape_seconds))


def resolve_dashboard(
    dashboard: Mapping[str, Any],
    window: Window,
    overrides: Mapping[str, Sequence[str]] | None = None,
    prom: PrometheusApi | None = None,
) -> tuple[dict[str, Variable], list[ResolvedPanel]]:
    discover = discoverer(prom, window.start, window.end) if prom else None
    variables = resolve_variables(dashboard, overrides, discover)
    return variables, resolve_panels(dashboard, variables, window.interval)


def run_target(prom: PrometheusApi, expr: str, window: Window) -> tuple[list[RangeSeries], str | None]:
    if not expr.strip():
        return [], "empty query"
    try:
        return prom.query_range(expr, window.start, window.end, window.interval.step_seconds), None
    except PrometheusApiError as exc:
        return [], str(exc)


def run_panels(prom: PrometheusApi, panels: Sequence[ResolvedPanel], window: Window) -> list[PanelResult]:
    results = []
    for panel in panels:
        if panel.type == "row":
            continue
        target_results = []
        for target in panel.targets:
            found, error = run_target(prom, target.expr, window)
            target_results.append(TargetResult(target, found, error))
        results.append(PanelResult(panel, target_results))
    return results


def run_annotations(
    prom: PrometheusApi, dashboard: Mapping[str, Any], variables: Mapping[str, Variable], window: Window
) -> list[tuple[str, list[RangeSeries], str | None]]:
    out = []
    for name, expr in resolve_annotations(dashboard, variables, window.interval):
        found, error = run_target(prom, expr, window)
        out.append((name, found, error))
    return out
