"""The rules of grafana/dashboard-linter, checked on generated dashboard JSON (``mqttlb dashboards lint``).

The Go linter cannot be installed here (the module proxy serves no version of it), so its default
rule set is implemented from its source (lint/rule_*.go at 4d0844b), same names and same checks:

template-datasource-rule, template-job-rule, template-instance-rule, template-label-promql-rule,
template-on-time-change-reload-rule, panel-datasource-rule, panel-title-description-rule,
panel-units-rule, panel-no-targets-rule, target-promql-rule, target-rate-interval-rule,
target-job-rule, target-instance-rule, target-counter-agg-rule, uneditable-dashboard.

PromQL is parsed by ``promql_parser`` (the Rust promql-parser) after the variables are expanded the
way the linter does: Grafana's globals become sample durations, a template variable its saved value,
and nothing inside double quotes is touched (so ``job=~"$job"`` stays literal).

Where this differs from the Go linter, it is stricter: stat and state-timeline panels must use the
templated datasource too, the counter rule looks at the metric name (the Go rule compares the whole
selector text, so ``x_total{...}`` escapes it), and annotation queries get the target rules.

:data:`EXCLUSIONS` are the linter's ``.lint`` exclusions, with their reason: series that have no job
or instance label cannot be selected by them.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import promql_parser as pq

PROMETHEUS = "prometheus"


def _duration(ms: int) -> str:
    """Milliseconds -> ``1d2h3m4s5ms`` (promql_parser keeps a plain ``Nms`` in 32 bits)."""
    parts = []
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000), ("ms", 1)):
        count, ms = divmod(ms, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts) or "0s"


# Sample values of Grafana's globals (the linter's, so that a range equal to the magic duration is
# recognised as $__rate_interval after expansion).
RATE_INTERVAL_MS = 8869990787
GLOBALS = {
    "__rate_interval": _duration(RATE_INTERVAL_MS),
    "__interval": _duration(4867856611),
    "__interval_ms": "7781188786",
    "__range_ms": "6737667980",
    "__range_s": "9397795485",
    "__range": _duration(6069770749),
}
QUERY_FUNCTIONS = ("label_names", "label_values", "metrics", "query_result")
PANELS_WITH_UNITS = ("stat", "singlestat", "graph", "table-old", "timeseries", "gauge")
PANELS_WITH_QUERIES = ("singlestat", "gauge", "table-old", "stat", "state-timeline", "timeseries", "graph")
# grafana/grafana packages/grafana-data/src/valueFormats/categories.ts, as the linter lists them.
_UNITS = """none string short percent percentunit humidity dB hex0x hex sci locale pixel accMS2 accFS2 accG degree
    radian grad arcmin arcsec areaM2 areaF2 areaMI2 flops mflops gflops tflops pflops eflops zflops yflops ppm
    conppb conngm3 conngNm3 conμgm3 conμgNm3 conmgm3 conmgNm3 congm3 congNm3 conmgdL conmmolL bytes decbytes
    bits decbits kbytes deckbytes mbytes decmbytes gbytes decgbytes tbytes dectbytes pbytes decpbytes pps
    binBps Bps binbps bps KiBs Kibits KBs Kbits MiBs Mibits MBs Mbits GiBs Gibits GBs Gbits TiBs Tibits TBs
    Tbits PiBs Pibits PBs Pbits dateTimeAsIso dateTimeAsIsoNoDateIfToday dateTimeAsUS dateTimeAsUSNoDateIfToday
    dateTimeAsLocal dateTimeAsLocalNoDateIfToday dateTimeAsSystem dateTimeFromNow watt kwatt megwatt gwatt
    mwatt Wm2 voltamp kvoltamp voltampreact kvoltampreact watth watthperkg kwatth kwattm amph kamph mamph
    joule ev amp kamp mamp volt kvolt mvolt dBm ohm kohm Mohm farad µfarad nfarad pfarad ffarad henry mhenry
    µhenry lumens flowgpm flowcms flowcfs flowcfm litreh flowlpm flowmlpm lux forceNm forcekNm forceN forcekN
    Hs KHs MHs GHs THs PHs EHs massmg massg masslb masskg masst lengthmm lengthin lengthft lengthm lengthkm
    lengthmi pressurembar pressurebar pressurekbar pressurepa pressurehpa pressurekpa pressurehg pressurepsi
    radbq radci radgy radrad radsv radmsv radusv radrem radexpckg radr radsvh radmsvh radusvh rotrpm rothz
    rotrads rotdegs celsius fahrenheit kelvin hertz ns µs ms s m h d dtdurationms dtdurations dthms dtdhms
    timeticks clockms clocks cps ops reqps rps wps iops cpm opm rpm wpm mps mpm velocityms velocitykmh
    velocitymph velocityknot mlitre litre m3 Nm3 dm3 gallons bool bool_yes_no bool_on_off"""
VALID_UNITS = frozenset(_UNITS.split())

_VARIABLE = re.compile(r"\$([A-Za-z0-9_]+)|\$\{([^}]+)\}|\[\[([^\[\]]+)\]\]")
_TEMPLATED_LABEL = re.compile(r"([a-z_]+)\((.+)\)")


@dataclass(frozen=True)
class Problem:
    """One rule violation: rule name, where (dashboard / panel / target) and what."""

    rule: str
    where: str
    message: str

    def __str__(self) -> str:
        return f"[{self.rule}] {self.where}: {self.message}"


@dataclass(frozen=True)
class Exclusion:
    """A ``.lint`` exclusion: ``rule`` does not apply to selectors of the series ``applies`` accepts."""

    rule: str
    reason: str
    series: Callable[[str], bool]


def _unlabelled(name: str) -> bool:
    # Recording rules (level:metric:operation) aggregate by cluster and node; ALERTS carries the
    # labels of the alert's expression, which aggregates the same way.
    return ":" in name or name == "ALERTS"


EXCLUSIONS = (
    Exclusion("target-job-rule", "recording rules and ALERTS have no job label", _unlabelled),
    Exclusion("target-instance-rule", "recording rules and ALERTS have no instance label", _unlabelled),
)


# --- PromQL ------------------------------------------------------------------------------------
def expand_variables(expr: str, variables: Sequence[Mapping[str, Any]]) -> str:
    """The linter's expansion: globals -> sample values, template variables -> their saved value
    (multi-value: the first), unknown names -> the name itself; text inside double quotes is kept."""
    parts = expr.split('"')
    for i in range(0, len(parts), 2):
        parts[i] = _VARIABLE.sub(lambda m: _sample(m.group(1) or m.group(2) or m.group(3), variables), parts[i])
    return '"'.join(parts)


def _sample(name: str, variables: Sequence[Mapping[str, Any]]) -> str:
    name = name.split(":")[0]
    if name in GLOBALS:
        return GLOBALS[name]
    if name.startswith("__auto_interval"):
        return "10s"
    for variable in variables:
        if variable.get("name") == name:
            value = (variable.get("current") or {}).get("value")
            if isinstance(value, list):
                value = value[0] if value else ""
            if value:
                others = [v for v in variables if v.get("name") != name]
                return expand_variables(str(value), others)
    return name


def parse_promql(expr: str, variables: Sequence[Mapping[str, Any]]) -> Any:
    """Parse ``expr`` after variable expansion; raises ValueError with the parser's message."""
    return pq.parse(expand_variables(expr, variables))


def _children(node: Any) -> list[Any]:
    if isinstance(node, pq.BinaryExpr):
        return [node.lhs, node.rhs]
    if isinstance(node, pq.AggregateExpr):
        return [node.expr] + ([node.param] if node.param is not None else [])
    if isinstance(node, pq.Call):
        return list(node.args)
    if isinstance(node, pq.ParenExpr | pq.UnaryExpr | pq.SubqueryExpr):
        return [node.expr]
    if isinstance(node, pq.MatrixSelector):
        return [node.vector_selector]
    return []


def walk(node: Any, parents: tuple[Any, ...] = ()) -> Iterator[tuple[Any, tuple[Any, ...]]]:
    """Every node of a parsed expression with its ancestors (outermost first), depth first."""
    yield node, parents
    for child in _children(node):
        yield from walk(child, (*parents, node))


def _metric(selector: Any) -> str:
    if selector.name:
        return str(selector.name)
    names = [m.value for m in selector.matchers.matchers if m.name == "__name__"]
    return str(names[0]) if names else ""


# --- dashboard access --------------------------------------------------------------------------
def _variables(dashboard: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return list((dashboard.get("templating") or {}).get("list") or [])


def _templated_datasources(dashboard: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return [v for v in _variables(dashboard) if v.get("type") == "datasource"]


def _prometheus_dashboard(dashboard: Mapping[str, Any]) -> bool:
    first = next(iter(_templated_datasources(dashboard)), None)
    return first is not None and first.get("query") == PROMETHEUS


def _panels(dashboard: Mapping[str, Any]) -> Iterator[Mapping[str, Any]]:
    for panel in dashboard.get("panels") or []:
        yield panel
        yield from panel.get("panels") or []


def _uid(source: Any) -> str:
    return str(source.get("uid", "")) if isinstance(source, Mapping) else str(source or "")


# --- rules -------------------------------------------------------------------------------------
def _dashboard_rules(dashboard: Mapping[str, Any], title: str) -> Iterator[Problem]:
    datasources = _templated_datasources(dashboard)
    if not datasources:
        yield Problem("template-datasource-rule", title, "does not have a templated data source")
    for ds in datasources:
        query = str(ds.get("query") or "")
        names = {f"{query.lower()}_datasource"} | ({"datasource"} if len(datasources) == 1 else set())
        labels = {f"{query.title()} data source"} | ({"Data source"} if len(datasources) == 1 else set())
        if ds.get("name") not in names:
            yield Problem("template-datasource-rule", title, f"data source variable named {ds.get('name')!r}")
        if ds.get("label") not in labels:
            yield Problem("template-datasource-rule", title, f"data source variable labelled {ds.get('label')!r}")
    if _prometheus_dashboard(dashboard):
        for name in ("job", "instance"):
            yield from _check_scrape_variable(dashboard, title, name)
        for variable in _variables(dashboard):
            if variable.get("type") != "query":
                continue
            error = _label_query_error(variable, _variables(dashboard))
            if error:
                yield Problem("template-label-promql-rule", title, f"variable {variable.get('name')}: {error}")
    for variable in _variables(dashboard):
        if variable.get("type") == "query" and variable.get("refresh") != 2:
            yield Problem(
                "template-on-time-change-reload-rule",
                title,
                f"variable {variable.get('name')} refreshes {variable.get('refresh')!r}, not on time range change (2)",
            )
    if dashboard.get("editable", True):
        yield Problem("uneditable-dashboard", title, "is editable, it should be set to 'editable: false'")


def _check_scrape_variable(dashboard: Mapping[str, Any], title: str, name: str) -> Iterator[Problem]:
    rule = f"template-{name}-rule"
    variable = next((v for v in _variables(dashboard) if v.get("name") == name), None)
    if variable is None:
        yield Problem(rule, title, f"is missing the {name} template")
        return
    uid = _uid(variable.get("datasource"))
    if uid not in ("$datasource", "${datasource}", "$prometheus_datasource", "${prometheus_datasource}"):
        yield Problem(rule, title, f"{name} template should use datasource '$datasource', is {uid!r}")
    if variable.get("type") != "query":
        yield Problem(rule, title, f"{name} template should be a Prometheus query, is {variable.get('type')!r}")
    if variable.get("label") != name.title():
        yield Problem(rule, title, f"{name} template should be labelled {name.title()!r}")
    if not variable.get("multi"):
        yield Problem(rule, title, f"{name} template should be a multi select")
    if variable.get("allValue") != ".+":
        yield Problem(rule, title, f"{name} template allValue should be '.+', is {variable.get('allValue')!r}")


def _label_query_error(variable: Mapping[str, Any], variables: Sequence[Mapping[str, Any]]) -> str | None:
    query = variable.get("query")
    query = query.get("query") if isinstance(query, Mapping) else query
    tokens = _TEMPLATED_LABEL.search(str(query or ""))
    if not tokens:
        return f"invalid query {query!r}"
    if tokens.group(1) not in QUERY_FUNCTIONS:
        return f"invalid function {tokens.group(1)!r}"
    argument = tokens.group(2)
    if tokens.group(1) == "label_values" and "," in argument:
        argument = argument.rsplit(",", 1)[0]  # label_values(selector, label): the selector is PromQL
    try:
        parse_promql(argument, variables)
    except ValueError as exc:
        return f"invalid PromQL {argument!r}: {exc}"
    return None


def _panel_rules(dashboard: Mapping[str, Any], title: str, panel: Mapping[str, Any]) -> Iterator[Problem]:
    kind = panel.get("type")
    where = f"{title} / {panel.get('title')!r}"
    if kind in PANELS_WITH_QUERIES:
        allowed = {f"${v.get('name')}" for v in _templated_datasources(dashboard)}
        allowed |= {f"${{{v.get('name')}}}" for v in _templated_datasources(dashboard)}
        uid = _uid(panel.get("datasource"))
        if uid not in allowed:
            yield Problem("panel-datasource-rule", where, f"does not use a templated datasource, uses {uid!r}")
        if not panel.get("targets"):
            yield Problem("panel-no-targets-rule", where, "has no targets")
    if kind in PANELS_WITH_UNITS:
        if not panel.get("title") or not panel.get("description"):
            yield Problem("panel-title-description-rule", where, "has missing title or description")
        if not _has_mappings(panel) and _unit(panel) not in VALID_UNITS:
            yield Problem("panel-units-rule", where, f"has no or invalid units defined: {_unit(panel)!r}")


def _unit(panel: Mapping[str, Any]) -> str:
    config = panel.get("fieldConfig") or {}
    for override in config.get("overrides") or []:
        for prop in override.get("properties") or []:
            if prop.get("id") == "unit":
                return str(prop.get("value") or "")
    return str((config.get("defaults") or {}).get("unit") or "")


def _has_mappings(panel: Mapping[str, Any]) -> bool:
    config = panel.get("fieldConfig") or {}
    overrides = [p for o in config.get("overrides") or [] for p in o.get("properties") or []]
    return bool((config.get("defaults") or {}).get("mappings")) or any(
        p.get("id") == "mappings" and p.get("value") for p in overrides
    )


def _target_rules(dashboard: Mapping[str, Any], where: str, expr: str) -> Iterator[Problem]:
    try:
        tree = parse_promql(expr, _variables(dashboard))
    except ValueError as exc:
        yield Problem("target-promql-rule", where, f"invalid PromQL query {expr!r}: {exc}")
        return
    for node, parents in walk(tree):
        if isinstance(node, pq.MatrixSelector):
            call = parents[-1] if parents else None
            in_rate = isinstance(call, pq.Call) and call.func.name in ("rate", "irate")
            if in_rate and round(node.range.total_seconds() * 1000) != RATE_INTERVAL_MS:
                yield Problem("target-rate-interval-rule", where, f"{expr!r} should use $__rate_interval")
        if isinstance(node, pq.VectorSelector):
            metric = _metric(node)
            for label in ("job", "instance"):
                rule = f"target-{label}-rule"
                if any(e.rule == rule and e.series(metric) for e in EXCLUSIONS):
                    continue
                if not any(
                    m.name == label and m.op == pq.MatchOp.Re and m.value == f"${label}"
                    for m in node.matchers.matchers
                ):
                    yield Problem(rule, where, f'{metric}: no {label}=~"${label}" matcher in {expr!r}')
            if metric.endswith("_total") and not _counter_aggregated(parents):
                yield Problem(
                    "target-counter-agg-rule", where, f"counter {metric} is not aggregated with rate, irate or increase"
                )


def _counter_aggregated(parents: tuple[Any, ...]) -> bool:
    return (
        len(parents) >= 2
        and isinstance(parents[-1], pq.MatrixSelector)
        and isinstance(parents[-2], pq.Call)
        and parents[-2].func.name in ("rate", "irate", "increase")
    )


def excluded_panels(dashboard: Mapping[str, Any]) -> dict[str, list[str]]:
    """rule -> titles of the panels whose every query selector is a series an exclusion covers.

    Only such whole panels go into the Go linter's ``.lint`` (its entries name a dashboard and a
    panel), so excluding them hides no selector the rule should check.
    """
    found: dict[str, list[str]] = {e.rule: [] for e in EXCLUSIONS}
    for panel in _panels(dashboard):
        if panel.get("type") not in PANELS_WITH_QUERIES or not panel.get("targets"):
            continue
        metrics = []
        for target in panel["targets"]:
            try:
                tree = parse_promql(str(target.get("expr") or ""), _variables(dashboard))
            except ValueError:
                metrics.append("")  # invalid PromQL is target-promql-rule's business, never excluded
                continue
            metrics += [_metric(node) for node, _ in walk(tree) if isinstance(node, pq.VectorSelector)]
        for exclusion in EXCLUSIONS:
            if metrics and all(exclusion.series(m) for m in metrics):
                found[exclusion.rule].append(str(panel.get("title")))
    return found


def lint_config(dashboards: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The Go linter's ``.lint`` for these dashboards: :data:`EXCLUSIONS` as dashboard/panel entries."""
    exclusions: dict[str, Any] = {}
    for exclusion in EXCLUSIONS:
        entries = [
            {"dashboard": str(d.get("title")), "panel": title}
            for d in dashboards
            for title in sorted(set(excluded_panels(d)[exclusion.rule]))
        ]
        if entries:
            exclusions[exclusion.rule] = {"reason": exclusion.reason, "entries": entries}
    return {"exclusions": exclusions}


def lint(dashboard: Mapping[str, Any]) -> list[Problem]:
    """Every violation of the rules above in one dashboard (parsed JSON); [] when clean."""
    title = str(dashboard.get("title") or dashboard.get("uid") or "dashboard")
    problems = list(_dashboard_rules(dashboard, title))
    prometheus = _prometheus_dashboard(dashboard)
    for panel in _panels(dashboard):
        problems += _panel_rules(dashboard, title, panel)
        if prometheus and panel.get("type") in PANELS_WITH_QUERIES:
            for index, target in enumerate(panel.get("targets") or []):
                where = f"{title} / {panel.get('title')!r} target {index}"
                if not str(target.get("expr") or "").strip():
                    problems.append(Problem("target-promql-rule", where, "empty query"))
                    continue
                problems += _target_rules(dashboard, where, str(target["expr"]))
    if prometheus:
        for annotation in (dashboard.get("annotations") or {}).get("list") or []:
            if annotation.get("expr"):
                where = f"{title} / annotation {annotation.get('name')!r}"
                problems += _target_rules(dashboard, where, str(annotation["expr"]))
    return problems
