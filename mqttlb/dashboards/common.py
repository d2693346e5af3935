"""Small building blocks shared by every mqttlb dashboard.

One function per panel kind (time series, stat, state timeline), one per template variable and a
layout helper that turns rows of (panel, width, height) cells into grid positions and stable panel
ids.  Dashboards in this package are assembled from these pieces only, so every panel gets the
templated datasource, a description and a unit the same way.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

import attr
import grafanalib.core as G

from mqttlb import contract
from mqttlb.params import Params

# Grafana >= 10 understands this schema; older Grafana migrates it on load.
SCHEMA_VERSION = 39
GRID_WIDTH = 24

# Every panel, query, variable and annotation reads the `datasource` variable (dashboard-linter's
# template-datasource and panel-datasource rules).  The variable's saved value is the import input
# ${DS_PROMETHEUS}: importing the JSON in Grafana's UI asks for a Prometheus data source and writes
# its uid there; file provisioning leaves the placeholder, which matches no data source, so Grafana
# falls back to the variable's first option, a Prometheus data source.
DATASOURCE_VARIABLE = "datasource"
DATASOURCE = {"type": "prometheus", "uid": f"${{{DATASOURCE_VARIABLE}}}"}
DS_INPUT = "DS_PROMETHEUS"
# Oldest Grafana whose panels (timeseries, stat, state-timeline) and schema these dashboards use.
GRAFANA_MIN_VERSION = "10.0.0"

# Defaults for the query variables; they match the local stack (stack/stack.yaml) so an offline
# `queries` listing resolves to what Grafana would show there.  Grafana replaces them with the
# values it finds in Prometheus.
DEFAULT_CLUSTER = "local"
DEFAULT_ENVOY_CLUSTER = contract.ENVOY_CLUSTER
ALL = "$__all"
# What "All" of the job and instance variables stands for (dashboard-linter's template-job and
# template-instance rules): any value, rather than the list of values Grafana found.
ALL_VALUE = ".+"
# What "All" of the namespace variable stands for: any value or none (the local stack and compose scrape
# without Kubernetes, so their series have no namespace label).
ANY_NAMESPACE = ".*"
# One series each exporter always exposes: the job variable offers the jobs that scrape mqttlb's
# exporters (the broker exporter, the Envoy exporter, the webhook) and nothing else of a shared
# Prometheus.
JOB_PROBE_SERIES = (contract.BROKER_UP, contract.ENVOY_UP, contract.ENVOY_SERVER_LIVE, contract.WEBHOOK_SHED_LEVEL)

# Alerts shown on the rebalancer dashboard: exactly the alerts the mqttlb rules define.
ALERTNAME_REGEX = "|".join(contract.ALERT_NAMES)

GREEN, ORANGE, RED, BLUE = "green", "orange", "red", "blue"


# --- selectors --------------------------------------------------------------------------------
_MATCHER = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!=|!~|=)\s*"((?:[^"\\]|\\.)*)"\s*')
# Raw exporter series carry these two; the panels select them through the job and instance variables.
SCRAPE_LABELS = ("job", "instance")


def split_selector(selector: str) -> tuple[dict[str, str], str]:
    """A params selector -> ({label: value} of its job/instance equality matchers, the other matchers).

    ``'job="mqtt-brokers", env=~"eu.*"'`` -> ``({"job": "mqtt-brokers"}, 'env=~"eu.*"')``.  The equality
    matchers on job and instance become the variables' defaults; the rest stays in every query.
    Raises ValueError if the text is not a comma-separated list of ``label<op>"value"`` matchers.
    """
    scrape: dict[str, str] = {}
    rest: list[str] = []
    position = 0
    while position < len(selector):
        match = _MATCHER.match(selector, position)
        if not match:
            raise ValueError(f"not a label matcher list: {selector!r}")
        label, op, value = match.groups()
        if label in SCRAPE_LABELS and op == "=":
            scrape[label] = value
        else:
            rest.append(f'{label}{op}"{value}"')
        position = match.end()
        if position < len(selector):
            if selector[position] != ",":
                raise ValueError(f"not a label matcher list: {selector!r}")
            position += 1
    return scrape, ", ".join(rest)


def scrape_selector(params_selector: str) -> str:
    """The job and instance variables, then what else the params selector asks for."""
    rest = split_selector(params_selector)[1]
    matchers = [f'{label}=~"${label}"' for label in SCRAPE_LABELS]
    return ", ".join(matchers + ([rest] if rest else []))


def scraped_selectors(params: Params) -> tuple[str, ...]:
    """The params selectors of every scrape job the dashboards read, in the order the job variable lists them."""
    return (params.broker_selector, params.envoy_selector, params.envoy_stats_selector, params.webhook_selector)


def stack_jobs(params: Params) -> list[str]:
    """Job names the params selectors pin (the stack's jobs), in selector order, without repeats."""
    jobs: list[str] = []
    for selector in scraped_selectors(params):
        job = split_selector(selector)[0].get("job")
        if job and job not in jobs:
            jobs.append(job)
    return jobs


def node_selector(params: Params) -> str:
    """Labels of every per-node recording rule (aggregated by namespace, MQTT cluster and node: no job or
    instance)."""
    return f'{cluster_selector(params)}, node=~"$node"'


def namespace_selector() -> str:
    """The namespace variable: every mqttlb series and recording rule keeps ``namespace`` (Kubernetes)."""
    return f'{contract.NAMESPACE_LABEL}=~"$namespace"'


def cluster_selector(params: Params) -> str:
    """The namespace and MQTT cluster variables, the latter in the MQTT cluster label (the parameter
    ``mqtt_cluster_label``)."""
    return f'{namespace_selector()}, {params.mqtt_cluster_label}="$cluster"'


def broker_selector(params: Params) -> str:
    return f"{scrape_selector(params.broker_selector)}, {node_selector(params)}"


def envoy_endpoint_labels() -> str:
    # Endpoint series (Envoy exporter, webhook weights) carry the *Envoy* cluster name in
    # ENVOY_CLUSTER_LABEL, hence a variable of its own.
    return f'{namespace_selector()}, {contract.ENVOY_CLUSTER_LABEL}="$envoy_cluster", node=~"$node"'


def envoy_selector(params: Params) -> str:
    return f"{scrape_selector(params.envoy_selector)}, {envoy_endpoint_labels()}"


def envoy_cluster_selector(params: Params) -> str:
    """Envoy cluster-wide series (circuit breakers, overflow) have no node label."""
    return (
        f"{scrape_selector(params.envoy_selector)}, {namespace_selector()}, "
        f'{contract.ENVOY_CLUSTER_LABEL}="$envoy_cluster"'
    )


def envoy_stats_endpoint_selector(params: Params) -> str:
    """Envoy's own per-endpoint series (``/stats/prometheus``): the node is the EDS hostname."""
    return (
        f"{scrape_selector(params.envoy_stats_selector)}, {namespace_selector()}, "
        f'{contract.ENVOY_CLUSTER_LABEL}="$envoy_cluster", {contract.ENVOY_ENDPOINT_HOSTNAME_LABEL}=~"$node"'
    )


def envoy_stats_cluster_selector(params: Params) -> str:
    """Envoy's own cluster-wide series (bytes, circuit-breaker overflow)."""
    return f'{scrape_selector(params.envoy_stats_selector)}, {contract.ENVOY_CLUSTER_LABEL}="$envoy_cluster"'


def envoy_stats_listener_selector(params: Params) -> str:
    """Envoy's own listener series (the admin listener has series of other names)."""
    return scrape_selector(params.envoy_stats_selector)


def webhook_selector(params: Params) -> str:
    return scrape_selector(params.webhook_selector)


# --- template variables -----------------------------------------------------------------------
def datasource_variable() -> G.Template:
    return G.Template(
        name=DATASOURCE_VARIABLE,
        label="Data source",
        query="prometheus",
        type="datasource",
        default=f"${{{DS_INPUT}}}",
    )


def job_variable(params: Params) -> G.Template:
    """Multi-value; default: the stack's jobs (params selectors), so its dashboards show data as they are."""
    jobs = stack_jobs(params)
    probe = "|".join(JOB_PROBE_SERIES)
    return G.Template(
        name="job",
        label="Job",
        query=f'label_values({{__name__=~"{probe}"}}, job)',
        dataSource=DATASOURCE,
        default=jobs or ALL,
        multi=True,
        includeAll=True,
        allValue=ALL_VALUE,
        refresh=G.REFRESH_ON_TIME_RANGE_CHANGE,
    )


def instance_variable(params: Params) -> G.Template:
    probe = "|".join(JOB_PROBE_SERIES)
    instances = sorted(
        {
            instance
            for selector in scraped_selectors(params)
            if (instance := split_selector(selector)[0].get("instance"))
        }
    )
    return G.Template(
        name="instance",
        label="Instance",
        query=f'label_values({{__name__=~"{probe}", job=~"$job"}}, instance)',
        dataSource=DATASOURCE,
        default=instances or ALL,
        multi=True,
        includeAll=True,
        allValue=ALL_VALUE,
        refresh=G.REFRESH_ON_TIME_RANGE_CHANGE,
    )


def _broker_label_values(params: Params, label: str, *narrowing: str) -> str:
    """Grafana's ``label_values(mqtt_broker_up{<broker selector>, <narrowing...>}, <label>)``: the values of
    ``label`` among the scraped brokers, narrowed by the variables above it (matcher strings)."""
    matchers = ", ".join([scrape_selector(params.broker_selector), *narrowing])
    return f"label_values({contract.BROKER_UP}{{{matchers}}}, {label})"


def namespace_variable(params: Params) -> G.Template:
    """Kubernetes namespace of the brokers' exporter; "All" (the default) matches series without one too."""
    return G.Template(
        name="namespace",
        label="Namespace",
        query=_broker_label_values(params, contract.NAMESPACE_LABEL),
        dataSource=DATASOURCE,
        default=ALL,
        includeAll=True,
        allValue=ANY_NAMESPACE,
        refresh=G.REFRESH_ON_TIME_RANGE_CHANGE,
    )


def cluster_variable(params: Params) -> G.Template:
    return G.Template(
        name="cluster",
        label="Broker cluster",
        query=_broker_label_values(params, params.mqtt_cluster_label, namespace_selector()),
        dataSource=DATASOURCE,
        default=DEFAULT_CLUSTER,
        refresh=G.REFRESH_ON_TIME_RANGE_CHANGE,
    )


def node_variable(params: Params) -> G.Template:
    return G.Template(
        name="node",
        label="Node",
        query=_broker_label_values(params, "node", cluster_selector(params)),
        dataSource=DATASOURCE,
        default=ALL,
        multi=True,
        includeAll=True,
        refresh=G.REFRESH_ON_TIME_RANGE_CHANGE,
    )


def envoy_cluster_variable(params: Params) -> G.Template:
    return G.Template(
        name="envoy_cluster",
        label="Envoy cluster",
        query=(
            f"label_values({contract.ENVOY_ENDPOINT_WEIGHT}{{{scrape_selector(params.envoy_selector)}}}, "
            f"{contract.ENVOY_CLUSTER_LABEL})"
        ),
        dataSource=DATASOURCE,
        default=DEFAULT_ENVOY_CLUSTER,
        refresh=G.REFRESH_ON_TIME_RANGE_CHANGE,
    )


def templating(params: Params, *, envoy: bool = False) -> G.Templating:
    variables = [
        datasource_variable(),
        job_variable(params),
        instance_variable(params),
        namespace_variable(params),
        cluster_variable(params),
        node_variable(params),
    ]
    if envoy:
        variables.append(envoy_cluster_variable(params))
    return G.Templating(list=variables)


# --- annotations ------------------------------------------------------------------------------
def actions_annotation(params: Params) -> dict:
    """Marks every rebalancer action (EDS weight change, shedding step...) on the time axis."""
    return {
        "datasource": DATASOURCE,
        "enable": True,
        "expr": (
            f"round(sum by (kind) (increase({contract.WEBHOOK_ACTIONS}{{{webhook_selector(params)}}}"
            "[$__rate_interval]))) > 0"
        ),
        "iconColor": "rgba(255, 152, 48, 1)",
        "name": ANNOTATION_NAME,
        "step": "5s",
        "tagKeys": "kind",
        "titleFormat": "rebalancer: {{kind}}",
        "textFormat": "{{kind}} actions in the window: {{value}}",
        "useValueForTime": False,
    }


def dashboard_annotations(params: Params) -> G.Annotations:
    return G.Annotations(list=[actions_annotation(params)])


def dashboard_links() -> dict:
    """A drop-down to the other mqttlb dashboards, keeping time range and variables."""
    return {
        "type": "dashboards",
        "tags": ["mqttlb"],
        "asDropdown": True,
        "title": "mqttlb",
        "includeVars": True,
        "keepTime": True,
        "icon": "external link",
        "targetBlank": False,
        "url": "",
        "tooltip": "",
    }


# --- thresholds -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Mark:
    """A threshold step: from ``value`` up values are ``color`` (``value`` None: the base colour).

    ``meaning`` says what crossing it means; panels write it into their description, so the dashed
    threshold lines (time series) and the colours (stats) are explained where they are drawn.
    """

    color: str
    value: float | None
    meaning: str = ""


# Busiest / idlest node CPU: "uneven" from 1.5, "bad" from 2 (the busiest node does twice the
# idlest's work).  A ratio has no alert of its own; the imbalance alert works on squared deviations.
MAX_OVER_MIN_UNEVEN = 1.5
MAX_OVER_MIN_BAD = 2.0
ANNOTATION_NAME = "Rebalancer actions"
ANNOTATION_NOTE = f"Orange vertical lines: rebalancer actions (annotation \u201c{ANNOTATION_NAME}\u201d)."


def step(color: str, value: float | None) -> dict:
    """One threshold step as Grafana stores it; the first step of a list has value None (the base)."""
    return {"color": color, "value": value}


def steps(marks: Sequence[Mark]) -> list[dict]:
    return [step(m.color, m.value) for m in marks]


def format_mark(value: float, unit: str) -> str:
    """A threshold value as the description writes it: ``0.75`` in ``percentunit`` -> ``75 %``."""
    if unit == "percentunit":
        return f"{value * 100:g} %"
    return f"{value:g}"


def marks_note(marks: Sequence[Mark], unit: str, *, lines: bool) -> str:
    """One sentence explaining the marks: the dashed lines of a time series or the colours of a stat.

    ``[Mark(GREEN, None), Mark(RED, 0.85, "critical")]``, percentunit, lines -> ``"Dashed lines: red at
    85 % = critical."``; as colours -> ``"Colour: green below 85 %, red from 85 % (critical)."``.
    """
    crossed = [m for m in marks if m.value is not None]
    if not crossed:
        return ""
    if lines:
        parts = [f"{m.color} at {format_mark(m.value, unit)} = {m.meaning}" for m in crossed if m.value is not None]
        return "Dashed lines: " + "; ".join(parts) + "."
    first = crossed[0].value
    assert first is not None
    colours = [f"{marks[0].color} below {format_mark(first, unit)}"] if marks[0].value is None else []
    colours += [
        f"{m.color} from {format_mark(m.value, unit)}" + (f" ({m.meaning})" if m.meaning else "")
        for m in crossed
        if m.value is not None
    ]
    return "Colour: " + ", ".join(colours) + "."


def cpu_thresholds(params: Params) -> list[Mark]:
    return [
        Mark(GREEN, None),
        Mark(ORANGE, params.cpu_high, f"node hot ({contract.ALERT_CPU_HIGH}: weights move away from it)"),
        Mark(RED, params.cpu_critical, f"critical ({contract.ALERT_CPU_CRITICAL} on the mean: shedding)"),
    ]


def critical_thresholds(params: Params) -> list[Mark]:
    return [Mark(GREEN, None), Mark(RED, params.cpu_critical, "critical: the rebalancer sheds new connections")]


def imbalance_thresholds(params: Params) -> list[Mark]:
    return [
        Mark(GREEN, None),
        Mark(RED, params.imbalance_max_squared_deviation, f"imbalance alert threshold ({contract.ALERT_IMBALANCED})"),
    ]


def deviation_thresholds(params: Params) -> list[Mark]:
    """+-sqrt(max squared deviation): the distance from the mean at which the imbalance alert fires."""
    limit = round(math.sqrt(params.imbalance_max_squared_deviation), 6)
    return [
        Mark(RED, None),
        Mark(GREEN, -limit, "imbalance alert distance below the mean"),
        Mark(RED, limit, "imbalance alert distance above the mean"),
    ]


def max_over_min_thresholds() -> list[Mark]:
    return [
        Mark(GREEN, None),
        Mark(ORANGE, MAX_OVER_MIN_UNEVEN, "uneven"),
        Mark(RED, MAX_OVER_MIN_BAD, "the busiest node does twice the idlest's work"),
    ]


def no_thresholds() -> list[dict]:
    return [step(GREEN, None)]


def by_ref_id(ref_id: str, **custom: object) -> dict:
    """A field override for one query's series: ``custom.<key>`` properties (line width, style...)."""
    return {
        "matcher": {"id": "byFrameRefID", "options": ref_id},
        "properties": [{"id": f"custom.{key}", "value": value} for key, value in custom.items()],
    }


# --- targets ----------------------------------------------------------------------------------
def target(expr: str, legend: str, ref_id: str = "A") -> G.Target:
    return G.Target(expr=expr, legendFormat=legend, refId=ref_id, datasource=DATASOURCE, intervalFactor=1)


def targets(*pairs: tuple[str, str]) -> list[G.Target]:
    """(expr, legend) pairs with refIds A, B, C..."""
    return [target(expr, legend, chr(ord("A") + i)) for i, (expr, legend) in enumerate(pairs)]


# --- panels -----------------------------------------------------------------------------------
def timeseries(
    title: str,
    description: str,
    queries: list[G.Target],
    unit: str,
    thresholds: Sequence[Mark] | None = None,
    *,
    stepped: bool = False,
    bars: bool = False,
    stacked: bool = False,
    centred: bool = False,
    min_value: int | None = None,
    max_value: int | None = None,
    decimals: int | None = None,
    overrides: list[dict] | None = None,
) -> G.TimeSeries:
    """A time series; thresholds (if any) are dashed lines at the alert marks, explained in the
    description, which also explains the actions annotation."""
    custom: dict = {}
    if centred:
        custom["axisCenteredZero"] = True
    note = marks_note(thresholds, unit, lines=True) if thresholds else ""
    return G.TimeSeries(
        title=title,
        description=" ".join(part for part in (description, note, ANNOTATION_NOTE) if part),
        dataSource=DATASOURCE,
        targets=queries,
        unit=unit,
        thresholds=steps(thresholds) if thresholds else no_thresholds(),
        thresholdsStyleMode="dashed" if thresholds else "off",
        lineInterpolation="stepAfter" if stepped else "linear",
        drawStyle="bars" if bars else "line",
        fillOpacity=40 if (stacked or bars) else 0,
        stacking={"mode": "normal", "group": "A"} if stacked else {},
        showPoints="never",
        lineWidth=2 if stepped else 1,
        valueMin=min_value,
        valueMax=max_value,
        valueDecimals=decimals,
        legendDisplayMode="table",
        legendCalcs=["lastNotNull", "max"],
        tooltipMode="multi",
        maxDataPoints=None,
        overrides=overrides or [],
        extraJson={"fieldConfig": {"defaults": {"custom": custom}}} if custom else None,
    )


def stat(
    title: str,
    description: str,
    queries: list[G.Target],
    unit: str,
    thresholds: Sequence[Mark] | None = None,
    *,
    no_value: str = "no data",
    decimals: int = 2,
    value_texts: dict[float, str] | None = None,
) -> G.Stat:
    """The last non-null value in the time range (reduction ``lastNotNull``, the window's end, as the
    query's newest sample), coloured by the marks, which the description explains; a sparkline of
    the window behind it.  ``no_value`` is shown when the query returns nothing; ``value_texts`` maps
    a value to a text shown instead (in the text colour), e.g. ``{0: "idle"}``."""
    note = marks_note(thresholds, unit, lines=False) if thresholds else ""
    return G.Stat(
        title=title,
        description=" ".join(part for part in (description, note) if part),
        dataSource=DATASOURCE,
        targets=queries,
        format=unit,
        thresholds=steps(thresholds) if thresholds else no_thresholds(),
        color={"mode": "thresholds"},
        colorMode="value" if thresholds else "none",
        graphMode="area",
        reduceCalc="lastNotNull",
        decimals=decimals,
        noValue=no_value,
        mappings=[
            {"type": "value", "options": {f"{value:g}": {"text": text, "color": "text", "index": i}}}
            for i, (value, text) in enumerate(sorted((value_texts or {}).items()))
        ],
        maxDataPoints=None,
    )


def state_timeline(title: str, description: str, queries: list[G.Target], unit: str) -> G.StateTimeline:
    """States over time (1 = active); used for alert states."""
    return G.StateTimeline(
        title=title,
        description=description,
        dataSource=DATASOURCE,
        targets=queries,
        thresholds=[step(GREEN, None), step(RED, 1.0)],
        mappings=[{"type": "value", "options": {"1": {"text": "active", "color": RED}}}],
        maxDataPoints=None,
        extraJson={"fieldConfig": {"defaults": {"unit": unit}}},
    )


def row(title: str, description: str, repeat: str | None = None) -> G.RowPanel:
    return G.RowPanel(
        title=title,
        description=description,
        repeat=G.Repeat(variable=repeat, direction="h" if repeat else None),
        maxDataPoints=None,
    )


# --- layout -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Cell:
    panel: G.Panel
    width: int
    height: int = 8


def assemble(sections: Sequence[tuple[G.RowPanel, Sequence[Sequence[Cell]]]]) -> list[G.Panel]:
    """Place rows of cells on Grafana's 24-column grid; ids follow reading order, so they are stable."""
    panels: list[G.Panel] = []
    y = 0
    for row_panel, lines in sections:
        panels.append(
            attr.evolve(row_panel, id=len(panels) + 1, gridPos=G.GridPos(h=1, w=GRID_WIDTH, x=0, y=y))
        )
        y += 1
        for line in lines:
            if sum(cell.width for cell in line) > GRID_WIDTH:
                raise ValueError(f"cells of row {row_panel.title!r} are wider than {GRID_WIDTH} columns")
            x = 0
            for cell in line:
                grid = G.GridPos(h=cell.height, w=cell.width, x=x, y=y)
                panels.append(attr.evolve(cell.panel, id=len(panels) + 1, gridPos=grid))
                x += cell.width
            y += max(cell.height for cell in line)
    return panels


# --- import metadata --------------------------------------------------------------------------
def inputs() -> list[dict]:
    """``__inputs``: the data source Grafana's import asks for (it fills ``${DS_PROMETHEUS}``)."""
    return [
        {
            "name": DS_INPUT,
            "label": "Prometheus",
            "description": "The Prometheus that scrapes mqttlb's exporters and evaluates its recording rules",
            "type": "datasource",
            "pluginId": "prometheus",
            "pluginName": "Prometheus",
        }
    ]


PANEL_PLUGINS = {"timeseries": "Time series", "stat": "Stat", "state-timeline": "State timeline"}


def requires(dashboard_json: dict) -> list[dict]:
    """``__requires``: Grafana, the Prometheus data source and every panel plugin the JSON uses.

    Raises ValueError for a panel type not in :data:`PANEL_PLUGINS` (add it there).
    """
    types: set[str] = set()
    for panel in dashboard_json.get("panels") or []:
        for inner in [panel, *(panel.get("panels") or [])]:
            if inner.get("type") != "row":
                types.add(inner.get("type"))
    unknown = types - set(PANEL_PLUGINS)
    if unknown:
        raise ValueError(f"panel types without a __requires entry: {sorted(unknown)}")
    needed = [
        {"type": "grafana", "id": "grafana", "name": "Grafana", "version": GRAFANA_MIN_VERSION},
        {"type": "datasource", "id": "prometheus", "name": "Prometheus", "version": "1.0.0"},
    ]
    needed += [{"type": "panel", "id": kind, "name": PANEL_PLUGINS[kind], "version": ""} for kind in sorted(types)]
    return needed


def dashboard(
    uid: str, title: str, description: str, params: Params, sections, *, envoy: bool = False
) -> G.Dashboard:
    return G.Dashboard(
        uid=uid,
        title=title,
        description=description,
        inputs=inputs(),
        editable=False,  # dashboard-linter's uneditable-dashboard rule: change the Python, not Grafana's copy
        tags=["mqttlb"],
        timezone="utc",
        refresh="10s",
        time=G.Time("now-15m", "now"),
        graphTooltip=G.GRAPH_TOOLTIP_MODE_SHARED_CROSSHAIR,
        schemaVersion=SCHEMA_VERSION,
        templating=templating(params, envoy=envoy),
        annotations=dashboard_annotations(params),
        links=[dashboard_links()],
        panels=assemble(sections),
    )
