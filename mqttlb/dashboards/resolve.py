"""Read generated dashboard JSON the way Grafana does: variables, repeated rows, resolved queries.

Pure code (no I/O): variable discovery is delegated to a callable, so the same logic serves the
offline `queries` listing, the `render` command and the live test.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from mqttlb.params import duration_seconds

ALL = "$__all"
ALL_REGEX = ".*"

_LABEL_VALUES = re.compile(
    r"^\s*label_values\((?P<selector>.*),\s*(?P<label>[a-zA-Z_][a-zA-Z0-9_]*)\s*\)\s*$"
)
_VARIABLE = re.compile(
    r"\$\{(?P<braced>[a-zA-Z_][a-zA-Z0-9_]*)(?::(?P<fmt>[a-z]+))?\}|\$(?P<plain>[a-zA-Z_][a-zA-Z0-9_]*)"
)
_REGEX_SPECIAL = re.compile(r"([\\^$.|?*+()\[\]{}])")

# label_values(selector, label) -> values, given the time range Grafana would use.
Discover = Callable[[str, str], list[str]]


class ResolveError(ValueError):
    """A dashboard or a variable cannot be resolved; the message names what and where."""


def parse_duration(text: str) -> float:
    """Prometheus-style duration such as ``15m``, ``90s`` or ``1h30m`` -> seconds (> 0)."""
    text = text.strip()
    try:
        seconds = duration_seconds(text)
    except ValueError:
        raise ResolveError(f"invalid duration {text!r} (use e.g. 30s, 15m, 1h30m)") from None
    if seconds <= 0:
        raise ResolveError(f"duration {text!r} must be positive")
    return seconds


def format_seconds(seconds: float) -> str:
    return f"{math.ceil(seconds)}s"


@dataclass(frozen=True)
class Variable:
    name: str
    values: tuple[str, ...]
    regex: bool  # multi-value / include-all variables are substituted as regular expressions
    all_regex: str | None = None  # set when "All" is selected but the values are unknown (offline)

    def formatted(self) -> str:
        if self.all_regex is not None:
            return self.all_regex
        if self.regex:
            escaped = [_REGEX_SPECIAL.sub(r"\\\1", v) for v in self.values]
            return escaped[0] if len(escaped) == 1 else "(" + "|".join(escaped) + ")"
        return self.values[0].replace("\\", "\\\\").replace('"', '\\"')

    def single(self, value: str) -> Variable:
        return replace(self, values=(value,), all_regex=None)


@dataclass(frozen=True)
class Interval:
    """Query step and Grafana's interval variables for a time range."""

    step_seconds: float
    scrape_seconds: float

    @classmethod
    def for_range(cls, range_seconds: float, scrape_seconds: float = 5.0, max_points: int = 1000) -> Interval:
        return cls(max(scrape_seconds, math.ceil(range_seconds / max_points)), scrape_seconds)

    def builtins(self) -> dict[str, str]:
        rate = max(self.step_seconds + self.scrape_seconds, 4 * self.scrape_seconds)
        return {"__interval": format_seconds(self.step_seconds), "__rate_interval": format_seconds(rate)}


def interpolate(text: str, variables: Mapping[str, Variable], interval: Interval, where: str = "") -> str:
    builtins = interval.builtins()

    def substitute(match: re.Match[str]) -> str:
        name = match.group("braced") or match.group("plain")
        if name in builtins:
            return builtins[name]
        if name not in variables:
            raise ResolveError(f"{where}: unknown variable ${name}" if where else f"unknown variable ${name}")
        return variables[name].formatted()

    return _VARIABLE.sub(substitute, text)


def resolve_variables(
    dashboard: Mapping[str, Any],
    overrides: Mapping[str, Sequence[str]] | None = None,
    discover: Discover | None = None,
) -> dict[str, Variable]:
    """Values of the dashboard's variables: overrides first, else discovered, else the saved default."""
    overrides = overrides or {}
    interval = Interval.for_range(900)
    variables: dict[str, Variable] = {}
    for spec in dashboard.get("templating", {}).get("list", []):
        name = spec["name"]
        kind = spec.get("type", "query")
        regex = bool(spec.get("multi") or spec.get("includeAll"))
        current = (spec.get("current") or {}).get("value")
        saved = _saved_values(name, current)
        all_value = spec.get("allValue") or None  # what Grafana substitutes for "All" when set
        if name in overrides:
            values = tuple(overrides[name])
            if not values or not all(values):
                raise ResolveError(f"variable {name}: empty value given")
            variables[name] = Variable(name, values, regex)
            continue
        if kind == "datasource":
            variables[name] = Variable(name, (str(spec.get("query") or "prometheus"),), False)
            continue
        if kind != "query":
            raise ResolveError(f"variable {name}: type {kind!r} is not supported")
        if discover is not None:
            query = spec.get("query")
            query = query.get("query") if isinstance(query, dict) else query
            match = _LABEL_VALUES.match(str(query or ""))
            if not match:
                raise ResolveError(
                    f"variable {name}: only label_values(selector, label) queries are supported"
                )
            selector = interpolate(match.group("selector"), variables, interval, f"variable {name}")
            found = sorted(set(discover(selector, match.group("label"))))
            if not found and spec.get("includeAll") and all_value and saved == (ALL,):
                # Grafana offers "All" alone and substitutes allValue (the namespace variable outside Kubernetes)
                variables[name] = Variable(name, (all_value,), regex, all_regex=all_value)
                continue
            if not found:
                raise ResolveError(f"variable {name}: Prometheus has no values for {query}")
            if spec.get("includeAll") and saved == (ALL,):
                variables[name] = Variable(name, tuple(found), regex, all_regex=all_value)
                continue
            # Grafana keeps the saved values it finds; if none is there, it takes the first one.
            kept = tuple(v for v in (saved if spec.get("multi") else saved[:1]) if v in found)
            variables[name] = Variable(name, kept or (found[0],), regex)
        elif saved == (ALL,):
            variables[name] = Variable(name, (ALL_REGEX,), regex, all_regex=all_value or ALL_REGEX)
        elif saved:
            variables[name] = Variable(name, saved, regex)
        else:
            raise ResolveError(f"variable {name}: no default value; pass one or give a Prometheus URL")
    return variables


def _saved_values(name: str, current: Any) -> tuple[str, ...]:
    """The saved ``current.value`` of a variable as a tuple: one string, or a list (multi-value)."""
    if current is None or current == "" or current == []:
        return ()
    values = [current] if isinstance(current, str) else current
    if not isinstance(values, list) or not all(isinstance(v, str) and v for v in values):
        raise ResolveError(f"variable {name}: saved value {current!r} is neither a string nor a list of strings")
    return tuple(values)


@dataclass(frozen=True)
class ResolvedTarget:
    ref_id: str
    expr: str
    legend: str
    hidden: bool = False
    line_width: float | None = None  # from a byFrameRefID override (custom.lineWidth), else the panel's
    dashed: bool = False  # a byFrameRefID override sets custom.lineStyle.fill = "dash"


@dataclass(frozen=True)
class ResolvedPanel:
    dashboard_uid: str
    panel_id: int
    title: str
    type: str
    unit: str
    description: str
    grid: tuple[int, int, int, int]  # x, y, w, h after repeats
    targets: tuple[ResolvedTarget, ...] = ()
    thresholds: tuple[tuple[str, float | None], ...] = ()
    threshold_lines: bool = False
    stepped: bool = False
    bars: bool = False
    stacked: bool = False
    repeat_value: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        """How errors name the panel: dashboard, title and (for repeats) the node."""
        suffix = f" [{self.repeat_value}]" if self.repeat_value else ""
        return f"{self.dashboard_uid} / {self.title}{suffix}"


def _sections(panels: Sequence[Mapping[str, Any]]) -> list[tuple[Mapping[str, Any] | None, list]]:
    """Split the flat panel list into (row, panels in that row); collapsed rows carry their own."""
    sections: list[tuple[Mapping[str, Any] | None, list]] = [(None, [])]
    for panel in panels:
        if panel.get("type") == "row":
            sections.append((panel, list(panel.get("panels") or [])))
        else:
            sections[-1][1].append(panel)
    return [s for s in sections if s[0] is not None or s[1]]


def _resolve_panel(
    uid: str,
    panel: Mapping[str, Any],
    variables: Mapping[str, Variable],
    interval: Interval,
    dy: int,
    repeat_value: str | None,
) -> ResolvedPanel:
    title = interpolate(str(panel.get("title", "")), variables, interval, f"{uid} panel {panel.get('id')}")
    where = f"{uid} / {title}"
    defaults = (panel.get("fieldConfig") or {}).get("defaults") or {}
    custom = defaults.get("custom") or {}
    grid = panel.get("gridPos") or {}
    styles = _ref_id_styles(panel)
    targets = tuple(
        ResolvedTarget(
            ref_id=str(t.get("refId", "")),
            expr=interpolate(str(t.get("expr", "")), variables, interval, where),
            legend=str(t.get("legendFormat", "")),
            hidden=bool(t.get("hide", False)),
            line_width=styles.get(str(t.get("refId", "")), {}).get("custom.lineWidth"),
            dashed=(styles.get(str(t.get("refId", "")), {}).get("custom.lineStyle") or {}).get("fill") == "dash",
        )
        for t in panel.get("targets") or []
    )
    steps = ((defaults.get("thresholds") or {}).get("steps")) or []
    options = panel.get("options") or {}
    return ResolvedPanel(
        dashboard_uid=uid,
        panel_id=int(panel.get("id") or 0),
        title=title,
        type=str(panel.get("type", "")),
        unit=str(defaults.get("unit") or ""),
        description=str(panel.get("description") or ""),
        grid=(
            int(grid.get("x", 0)),
            int(grid.get("y", 0)) + dy,
            int(grid.get("w", 24)),
            int(grid.get("h", 8)),
        ),
        targets=targets,
        thresholds=tuple((str(s.get("color")), s.get("value")) for s in steps),
        threshold_lines=(custom.get("thresholdsStyle") or {}).get("mode", "off") != "off",
        stepped=custom.get("lineInterpolation") in ("stepAfter", "stepBefore"),
        bars=custom.get("drawStyle") == "bars",
        stacked=(custom.get("stacking") or {}).get("mode") in ("normal", "percent"),
        repeat_value=repeat_value,
        extra={
            "min": defaults.get("min"),
            "max": defaults.get("max"),
            "centred": custom.get("axisCenteredZero"),
            "decimals": defaults.get("decimals"),
            "no_value": defaults.get("noValue"),
            "calcs": tuple((options.get("reduceOptions") or {}).get("calcs") or ("lastNotNull",)),
            "color_mode": options.get("colorMode"),
            "value_texts": _value_texts(defaults),
        },
    )


def _value_texts(defaults: Mapping[str, Any]) -> dict[float, str]:
    """Value -> text of the field's value mappings (``{"type": "value", "options": {"0": {"text": …}}}``)."""
    texts: dict[float, str] = {}
    for mapping in defaults.get("mappings") or []:
        if mapping.get("type") == "value":
            for key, result in (mapping.get("options") or {}).items():
                if isinstance(result, Mapping) and result.get("text"):
                    texts[float(key)] = str(result["text"])
    return texts


def _ref_id_styles(panel: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """refId -> {property id: value} of the panel's byFrameRefID overrides."""
    styles: dict[str, dict[str, Any]] = {}
    for override in (panel.get("fieldConfig") or {}).get("overrides") or []:
        matcher = override.get("matcher") or {}
        if matcher.get("id") == "byFrameRefID":
            props = styles.setdefault(str(matcher.get("options")), {})
            props.update({str(p.get("id")): p.get("value") for p in override.get("properties") or []})
    return styles


def resolve_panels(
    dashboard: Mapping[str, Any], variables: Mapping[str, Variable], interval: Interval
) -> list[ResolvedPanel]:
    """Every panel (rows included) with queries resolved; repeated rows are expanded per value."""
    uid = str(dashboard.get("uid") or "")
    resolved: list[ResolvedPanel] = []
    dy = 0
    for row, members in _sections(dashboard.get("panels") or []):
        repeat = row.get("repeat") if row else None
        if row and repeat and repeat not in variables:
            raise ResolveError(f"{uid}: row {row.get('title')!r} repeats over unknown variable ${repeat}")
        values: list[str | None] = list(variables[repeat].values) if repeat else [None]
        if repeat and variables[repeat].all_regex is not None:
            values = [None]  # values unknown offline: one copy of the row, selecting every node
        top = min(
            [int((p.get("gridPos") or {}).get("y", 0)) for p in ([row] if row else []) + members] or [0]
        )
        bottom = max([_bottom(p) for p in ([row] if row else []) + members] or [0])
        for i, value in enumerate(values):
            scope = dict(variables)
            if repeat and value is not None:
                scope[repeat] = variables[repeat].single(value)
            shift = dy + i * (bottom - top)
            if row:
                resolved.append(_resolve_panel(uid, row, scope, interval, shift, value))
            resolved.extend(_resolve_panel(uid, p, scope, interval, shift, value) for p in members)
        dy += (len(values) - 1) * (bottom - top)
    return resolved


def _bottom(panel: Mapping[str, Any]) -> int:
    grid = panel.get("gridPos") or {}
    return int(grid.get("y", 0)) + int(grid.get("h", 0))


def resolve_annotations(
    dashboard: Mapping[str, Any], variables: Mapping[str, Variable], interval: Interval
) -> list[tuple[str, str]]:
    """(name, resolved expr) of every enabled Prometheus annotation query."""
    uid = str(dashboard.get("uid") or "")
    result = []
    for ann in (dashboard.get("annotations") or {}).get("list", []):
        if ann.get("enable", True) and ann.get("expr"):
            name = str(ann.get("name", ""))
            result.append(
                (name, interpolate(str(ann["expr"]), variables, interval, f"{uid} annotation {name}"))
            )
    return result


def legend(fmt: str, labels: Mapping[str, str]) -> str:
    """Grafana's legend template: ``{{label}}`` replaced by the series' label value."""
    if not fmt:
        return "{" + ", ".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}"
    return re.sub(r"\{\{\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\}\}", lambda m: labels.get(m.group(1), ""), fmt)
