"""Draw a dashboard's panels into one PNG with matplotlib, laid out on Grafana's grid.

A reviewer without Grafana sees the same queries, the same layout (repeated rows expanded), the
threshold lines at the alert marks and the rebalancer's action annotations.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.dates as mdates  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.ticker import FuncFormatter, PercentFormatter  # noqa: E402

from mqttlb.dashboards.execute import PanelResult, TargetResult, Window  # noqa: E402
from mqttlb.dashboards.resolve import ResolvedPanel, legend  # noqa: E402
from mqttlb.prometheus_api import RangeSeries  # noqa: E402

GRID_COLUMNS = 24
INCH_PER_COLUMN = 0.85
INCH_PER_ROW = 0.42
MARGIN_INCH = 0.3
HEADER_INCH = 1.0
COLOURS = {"green": "#37872d", "orange": "#fa6400", "red": "#c4162a", "blue": "#1f60c4"}
KEY = (
    "dashed horizontal lines: thresholds (what each means is in the panel's description)   \u2502   "
    "orange vertical lines: rebalancer actions   \u2502   stats: last value in the range, sparkline behind"
)


def format_value(value: float, unit: str, decimals: int | None = None) -> str:
    """A value as the panel shows it: ``0.756`` in ``percentunit`` -> ``75.6%``; ``decimals`` fixes the digits."""
    if math.isnan(value):
        return "NaN"
    if unit == "percentunit":
        return f"{value:.1%}" if decimals is None else f"{value:.{decimals}%}"
    if decimals is not None:
        text = f"{value:.{decimals}f}"
    else:
        text = f"{value:.3g}" if unit in ("s", "cps", "ops") else f"{value:.4g}"
    if unit == "s":
        return f"{text} s"
    if unit in ("cps", "ops"):
        return f"{text}/s"
    return text


def reduce(values: Sequence[float], calc: str) -> float:
    """Grafana's stat reductions over a series' samples (NaN = null); NaN when nothing is left.

    Raises ValueError for a reduction this renderer does not know.
    """
    present = [v for v in values if not math.isnan(v)]
    if calc in ("last", "first"):
        chosen = values[-1] if calc == "last" else values[0]
        return chosen if values else math.nan
    if not present:
        return math.nan
    reductions = {
        "lastNotNull": lambda: present[-1],
        "firstNotNull": lambda: present[0],
        "mean": lambda: sum(present) / len(present),
        "max": lambda: max(present),
        "min": lambda: min(present),
    }
    if calc not in reductions:
        raise ValueError(f"stat reduction {calc!r} is not supported (use one of {sorted(reductions)}, last, first)")
    return reductions[calc]()


def _x(t: float) -> float:
    """Unix time -> matplotlib's date number (UTC)."""
    return float(mdates.date2num(dt.datetime.fromtimestamp(t, tz=dt.UTC)))


def _times(series: RangeSeries) -> list[float]:
    return [_x(t) for t, _ in series.points]


def with_gaps(series: RangeSeries, step: float) -> RangeSeries:
    """Insert a NaN where samples are missing, so lines break there as they do in Grafana."""
    points: list[tuple[float, float]] = []
    for t, v in series.points:
        if points and t - points[-1][0] > 1.5 * step:
            points.append((points[-1][0] + step, math.nan))
        points.append((t, v))
    return RangeSeries(series.labels, points)


def _time_axis(ax: Axes, window: Window) -> None:
    locator = mdates.AutoDateLocator(tz=dt.UTC, maxticks=8)
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator, tz=dt.UTC, show_offset=False))
    ax.set_xlim(_x(window.start), _x(window.end))


def _threshold_colour(panel: ResolvedPanel, value: float) -> str:
    colour = "black"
    for name, limit in panel.thresholds:
        if limit is None or value >= limit:
            colour = COLOURS.get(name, name)
    return colour


def _message(ax: Axes, text: str, colour: str = "grey") -> None:
    ax.text(
        0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color=colour, fontsize=9, wrap=True
    )


def _format_axis(ax: Axes, panel: ResolvedPanel, window: Window) -> None:
    if panel.unit == "percentunit":
        ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    else:
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _pos: format_value(v, panel.unit)))
    _time_axis(ax, window)
    ax.tick_params(labelsize=7)
    ax.grid(alpha=0.3)
    if panel.extra.get("centred"):
        low, high = ax.get_ylim()
        limit = max(abs(low), abs(high), 1e-9)
        ax.set_ylim(-limit, limit)
        ax.axhline(0, color="black", linewidth=0.6)
    else:
        low, high = ax.get_ylim()
        vmin, vmax = panel.extra.get("min"), panel.extra.get("max")
        ax.set_ylim(low if vmin is None else vmin, high if vmax is None else max(vmax, low))


def _draw_thresholds(ax: Axes, panel: ResolvedPanel) -> None:
    if not panel.threshold_lines:
        return
    for name, limit in panel.thresholds:
        if limit is not None:
            ax.axhline(
                limit,
                color=COLOURS.get(name, name),
                linestyle="--",
                linewidth=1,
                alpha=0.8,
                label=f"threshold {format_value(limit, panel.unit)}",
            )


def _draw_timeseries(ax: Axes, panel: ResolvedPanel, results: Sequence[TargetResult], window: Window) -> None:
    step_days = window.interval.step_seconds / 86400
    stack_base: dict[float, float] = {}
    for result in results:
        for found in result.series:
            name = legend(result.target.legend, found.labels)
            series = with_gaps(found, window.interval.step_seconds)
            times = _times(series)
            values = [v for _, v in series.points]
            if panel.bars:
                ax.bar(times, values, width=step_days, label=name, alpha=0.7)
            elif panel.stacked:
                base = [stack_base.get(t, 0.0) for t, _ in series.points]
                top = [b + (0.0 if math.isnan(v) else v) for b, v in zip(base, values, strict=True)]
                ax.fill_between(times, base, top, step="post", alpha=0.5, label=name)
                stack_base.update({t: v for (t, _), v in zip(series.points, top, strict=True)})
            else:
                style: dict[str, Any] = {
                    "label": name,
                    "linewidth": result.target.line_width or (1.5 if panel.stepped else 1.2),
                    "linestyle": "--" if result.target.dashed else "-",
                    "zorder": 2 if result.target.dashed else 3,  # a thin solid line stays visible on top
                    "alpha": 0.6 if result.target.dashed else 1.0,
                }
                if panel.stepped:
                    ax.step(times, values, where="post", **style)
                else:
                    ax.plot(times, values, **style)
    _draw_thresholds(ax, panel)
    _format_axis(ax, panel, window)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=6, loc="upper left", ncol=2, framealpha=0.6)


def _draw_stat(ax: Axes, panel: ResolvedPanel, results: Sequence[TargetResult]) -> None:
    """The panel's reduction (``lastNotNull``: the range's newest value), coloured as Grafana's
    ``colorMode`` says, over a sparkline of the range."""
    ax.set_axis_off()
    calc = str(panel.extra.get("calcs", ("lastNotNull",))[0])
    coloured = panel.extra.get("color_mode") in ("value", "background")
    lines = []
    for result in results:
        for series in result.series:
            value = reduce([v for _, v in series.points], calc)
            lines.append((legend(result.target.legend, series.labels), value, series))
    if len(lines) == 1:
        _sparkline(ax, lines[0][2], _threshold_colour(panel, lines[0][1]) if coloured else "grey")
    texts = panel.extra.get("value_texts") or {}
    for i, (name, value, _series) in enumerate(lines[:4]):
        y = 0.55 - i * 0.3 if len(lines) > 1 else 0.55
        mapped = texts.get(value)  # a value mapping shows its text, in the text colour
        ax.text(
            0.5,
            y,
            mapped or format_value(value, panel.unit, panel.extra.get("decimals")),
            ha="center",
            va="center",
            transform=ax.transAxes,
            fontsize=(14 if mapped else 20) if len(lines) == 1 else 12,
            color=_threshold_colour(panel, value) if coloured and not mapped else "black",
            weight="bold",
        )
        if len(lines) > 1:
            ax.text(0.5, y - 0.12, name, ha="center", transform=ax.transAxes, fontsize=7)


def _sparkline(ax: Axes, series: RangeSeries, colour: str) -> None:
    points = [(t, v) for t, v in series.points if not math.isnan(v)]
    if len(points) < 2:
        return
    spark = ax.inset_axes((0.0, 0.0, 1.0, 0.3))
    spark.set_axis_off()
    times, values = [t for t, _ in points], [v for _, v in points]
    spark.fill_between(times, min(0.0, min(values)), values, color=colour, alpha=0.15, linewidth=0)
    spark.plot(times, values, color=colour, alpha=0.5, linewidth=0.8)
    spark.set_xlim(times[0], times[-1])


def _draw_state_timeline(ax: Axes, results: Sequence[TargetResult], window: Window) -> None:
    rows = [(legend(r.target.legend, s.labels), s) for r in results for s in r.series]
    step = window.interval.step_seconds
    for i, (_, series) in enumerate(rows):
        spans = [(t, step) for t, v in series.points if not math.isnan(v) and v >= 1]
        ax.broken_barh(
            [(_x(t), w / 86400) for t, w in spans],
            (i - 0.4, 0.8),
            color=COLOURS["red"],
            alpha=0.8,
        )
    ax.set_yticks(range(len(rows)), [name for name, _ in rows], fontsize=7)
    _time_axis(ax, window)
    ax.tick_params(axis="x", labelsize=7)


def _draw_annotations(ax: Axes, annotation_times: Sequence[float]) -> None:
    for t in annotation_times:
        ax.axvline(_x(t), color=COLOURS["orange"], linewidth=0.8, alpha=0.6)


def annotation_times(annotations: Sequence[tuple[str, list[RangeSeries], str | None]], step: float) -> list[float]:
    """Start of each run of non-zero samples: one mark per action burst, as Grafana draws it.

    Annotation queries filter with ``> 0``, so a run also ends where samples are missing.
    """
    marks = []
    for _, found, _error in annotations:
        for series in found:
            previous: float | None = None
            for t, v in series.points:
                if math.isnan(v) or v <= 0:
                    previous = None
                    continue
                if previous is None or t - previous > 1.5 * step:
                    marks.append(t)
                previous = t
    return sorted(marks)


def render_png(
    title: str,
    subtitle: str,
    rows: Sequence[ResolvedPanel],
    results: Sequence[PanelResult],
    window: Window,
    out_path: Path,
    annotations: Sequence[float] = (),
) -> Path:
    """Draw one dashboard: ``rows`` are the resolved row panels, ``results`` the data panels."""
    items: list[ResolvedPanel] = list(rows) + [r.panel for r in results]
    height = max((p.grid[1] + p.grid[3] for p in items), default=1)
    fig_w = GRID_COLUMNS * INCH_PER_COLUMN + 2 * MARGIN_INCH
    fig_h = height * INCH_PER_ROW + HEADER_INCH + MARGIN_INCH
    fig = plt.figure(figsize=(fig_w, fig_h))
    fig.suptitle(f"{title}\n{subtitle}", fontsize=12, y=1 - 0.15 / fig_h, va="top")
    fig.text(0.5, 1 - 0.72 / fig_h, KEY, ha="center", va="top", fontsize=8, color="dimgrey")

    def cell(
        grid: tuple[int, int, int, int],
        pad_top: float,
        pad_bottom: float,
        pad_side: float,
        pad_left: float = 0,
    ) -> tuple[float, float, float, float]:
        """Figure-fraction rectangle of a grid cell, shrunk by paddings (inches) for titles and ticks."""
        x, y, w, h = grid
        left = MARGIN_INCH + x * INCH_PER_COLUMN + pad_side + pad_left
        top = HEADER_INCH + y * INCH_PER_ROW + pad_top
        width = w * INCH_PER_COLUMN - 2 * pad_side - pad_left
        box_h = max(h * INCH_PER_ROW - pad_top - pad_bottom, 0.1)
        return (left / fig_w, 1 - (top + box_h) / fig_h, width / fig_w, box_h / fig_h)

    try:
        for row in rows:
            ax = fig.add_axes(cell(row.grid, 0.0, 0.0, 0.0))
            ax.set_axis_off()
            ax.text(0, 0.2, row.title, fontsize=11, weight="bold", transform=ax.transAxes)
        for result in results:
            panel = result.panel
            side = 0.1 if panel.type == "stat" else 0.45
            labels = 2.0 if panel.type == "state-timeline" else 0.0  # room for the series names
            ax = fig.add_axes(cell(panel.grid, 0.3, 0.4, side, labels))
            ax.set_title(panel.title + (f" [{panel.repeat_value}]" if panel.repeat_value else ""), fontsize=9)
            if result.errors:
                ax.set_axis_off()
                _message(ax, "query error\n" + "\n".join(result.errors)[:300], COLOURS["red"])
            elif not any(r.has_data for r in result.results):
                ax.set_axis_off()
                no_value = panel.extra.get("no_value") if panel.type == "stat" else None
                _message(ax, str(no_value or "No data"))
            elif panel.type == "stat":
                _draw_stat(ax, panel, result.results)
            elif panel.type == "state-timeline":
                _draw_state_timeline(ax, result.results, window)
            else:
                _draw_timeseries(ax, panel, result.results, window)
                _draw_annotations(ax, annotations)
        out_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = out_path.with_name(f".{out_path.name}.tmp.png")
        fig.savefig(tmp, dpi=80)
        tmp.replace(out_path)
    finally:
        plt.close(fig)
    return out_path
