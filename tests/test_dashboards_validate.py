"""Static validation of the committed dashboard JSON and the Grafana provisioning files."""

from __future__ import annotations

import json
import math
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from mqttlb import contract, rulegen
from mqttlb.dashboards.build import GENERATED_DIR
from mqttlb.params import load_params

REPO = Path(__file__).resolve().parents[1]
PROVISIONING = REPO / "stack" / "grafana" / "provisioning"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
FILES = sorted(GENERATED_DIR.glob("*.json"))

# Every name of contract.py, plus what Prometheus itself provides and histogram sub-series.
KNOWN_SERIES = {v for k, v in vars(contract).items() if k.isupper() and isinstance(v, str)}
HISTOGRAMS = (contract.WEBHOOK_DECISION_SECONDS, contract.WEBHOOK_PASS_SECONDS)
KNOWN_SERIES |= {"ALERTS"} | {f"{h}_{s}" for h in HISTOGRAMS for s in ("sum", "count", "bucket")}
PROMQL_WORDS = {
    "sum",
    "max",
    "min",
    "avg",
    "count",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "rate",
    "increase",
    "irate",
    "abs",
    "and",
    "or",
    "unless",
    "bool",
    "offset",
    "histogram_quantile",
    "round",
}


def _load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def _all_panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    panels = []
    for panel in dashboard["panels"]:
        panels.append(panel)
        panels.extend(panel.get("panels") or [])
    return panels


def _data_panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for p in _all_panels(dashboard) if p["type"] != "row"]


def _metric_names(expr: str) -> set[str]:
    without_strings = re.sub(r'"[^"]*"', '""', expr)
    without_ranges = re.sub(r"\[[^\]]*\]", "", without_strings)
    without_matchers = re.sub(r"\{[^}]*\}", "{}", without_ranges)
    without_groupings = re.sub(
        r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", without_matchers
    )
    names = set(re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", without_groupings))
    return {n for n in names if n not in PROMQL_WORDS}


def test_three_dashboards_are_committed() -> None:
    assert [p.name for p in FILES] == [
        "mqttlb-cluster-balance.json",
        "mqttlb-connections.json",
        "mqttlb-rebalancer.json",
    ]


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_dashboard_structure(path: Path) -> None:
    dashboard = _load(path)
    assert isinstance(dashboard.get("schemaVersion"), int) and dashboard["schemaVersion"] >= 36
    assert dashboard["uid"] == path.stem and dashboard["title"] and dashboard["description"]
    ids = [p["id"] for p in _all_panels(dashboard)]
    assert len(ids) == len(set(ids)), f"duplicate panel ids in {path.name}: {ids}"
    assert all(isinstance(i, int) and i > 0 for i in ids)
    for panel in _all_panels(dashboard):
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        assert panel.get("description"), f"{path.name}: panel {panel['title']!r} has no description"


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_every_panel_queries_the_templated_datasource(path: Path) -> None:
    for panel in _data_panels(_load(path)):
        title = panel["title"]
        assert panel["datasource"] == DATASOURCE, title
        assert panel["targets"], f"{title}: no queries"
        assert panel["fieldConfig"]["defaults"].get("unit"), f"{title}: no unit"
        ref_ids = [t["refId"] for t in panel["targets"]]
        assert len(ref_ids) == len(set(ref_ids)), title
        for target in panel["targets"]:
            assert target["datasource"] == DATASOURCE, f"{title} {target['refId']}"
            assert target["expr"].strip(), f"{title} {target['refId']}: empty query"
            assert target["expr"].count("(") == target["expr"].count(")"), title
    for annotation in _load(path)["annotations"]["list"]:
        assert annotation["datasource"] == DATASOURCE and annotation["expr"].strip()


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_queries_use_only_the_shared_names(path: Path) -> None:
    dashboard = _load(path)
    exprs = [t["expr"] for p in _data_panels(dashboard) for t in p["targets"]]
    exprs += [a["expr"] for a in dashboard["annotations"]["list"]]
    for expr in exprs:
        unknown = _metric_names(expr) - KNOWN_SERIES
        assert not unknown, f"{expr!r} uses names not in mqttlb/contract.py: {sorted(unknown)}"


def test_recording_rules_used_by_the_dashboards_are_generated() -> None:
    recorded = {
        r["record"] for g in rulegen.recording_groups(load_params()) for r in g["rules"] if "record" in r
    }
    used = set()
    for path in FILES:
        for panel in _data_panels(_load(path)):
            used |= {n for t in panel["targets"] for n in _metric_names(t["expr"]) if ":" in n}
    assert used, "the dashboards plot no recording rule"
    assert used <= recorded, f"plotted but never recorded: {sorted(used - recorded)}"


def test_alert_panel_covers_every_generated_alert() -> None:
    rebalancer = _load(GENERATED_DIR / "mqttlb-rebalancer.json")
    (panel,) = [p for p in _data_panels(rebalancer) if p["title"] == "Alert states"]
    found = re.search(r'alertname=~"([^"]+)"', panel["targets"][0]["expr"])
    assert found, panel["targets"][0]["expr"]
    regex = found.group(1)
    names = [a.name for a in rulegen.alerts(load_params())]
    assert names
    for name in names:
        assert re.fullmatch(regex, name), f"alert {name} does not show on the rebalancer dashboard"


def test_job_defaults_come_from_the_params_selectors() -> None:
    """A params selector's job (and instance) equality matchers become defaults; the rest stays in the queries."""
    from mqttlb.dashboards import common

    assert common.split_selector('job="mqtt-brokers", env=~"eu.*",instance="h:1"') == (
        {"job": "mqtt-brokers", "instance": "h:1"},
        'env=~"eu.*"',
    )
    assert common.split_selector('job=~"mqtt-.*"') == ({}, 'job=~"mqtt-.*"')
    assert common.scrape_selector('job="a", env="eu"') == 'job=~"$job", instance=~"$instance", env="eu"'
    for bad in ('job="a" env="b"', "job=a", 'job="a",,'):
        with pytest.raises(ValueError, match="not a label matcher list"):
            common.split_selector(bad)
    params = load_params()
    assert common.stack_jobs(params) == [
        contract.JOB_BROKERS, contract.JOB_ENVOY_EXPORTER, contract.JOB_ENVOY, contract.JOB_WEBHOOK
    ]
    moved = params.model_copy(update={"broker_selector": 'job="kube-mqtt", namespace="mq"'})
    (variable,) = [v for v in common.templating(moved).list if v.name == "job"]
    assert variable.default == ["kube-mqtt", contract.JOB_ENVOY_EXPORTER, contract.JOB_ENVOY, contract.JOB_WEBHOOK]
    assert common.broker_selector(moved).startswith('job=~"$job", instance=~"$instance", namespace="mq", ')


def test_templating_has_datasource_cluster_and_repeatable_node() -> None:
    for path in FILES:
        variables = {v["name"]: v for v in _load(path)["templating"]["list"]}
        assert variables["datasource"]["type"] == "datasource"
        assert variables["datasource"]["query"] == "prometheus"
        assert variables["cluster"]["type"] == "query" and variables["cluster"]["datasource"] == DATASOURCE
        node = variables["node"]
        assert node["multi"] and node["includeAll"] and "$cluster" in node["query"]
    balance = _load(GENERATED_DIR / "mqttlb-cluster-balance.json")
    repeated = [p for p in balance["panels"] if p["type"] == "row" and p.get("repeat") == "node"]
    assert len(repeated) == 1 and "$node" in repeated[0]["title"]


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_import_inputs_name_the_prometheus_data_source(path: Path) -> None:
    """Grafana's export format: the import asks for DS_PROMETHEUS and writes it into the variable."""
    dashboard = _load(path)
    (source,) = dashboard["__inputs"]
    assert source == {
        "name": "DS_PROMETHEUS",
        "label": "Prometheus",
        "description": source["description"],
        "type": "datasource",
        "pluginId": "prometheus",
        "pluginName": "Prometheus",
    } and source["description"]
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["current"]["value"] == "${DS_PROMETHEUS}"
    # every ${...} placeholder of the file is an import input or one of its variables
    placeholders = set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)", path.read_text()))
    assert placeholders <= {"DS_PROMETHEUS"} | set(variables), placeholders
    requires = {(r["type"], r["id"]) for r in dashboard["__requires"]}
    panel_types = {p["type"] for p in _data_panels(dashboard)}
    assert requires == {("grafana", "grafana"), ("datasource", "prometheus")} | {("panel", t) for t in panel_types}
    assert dashboard["editable"] is False


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_job_and_instance_are_variables_not_hard_coded(path: Path) -> None:
    dashboard = _load(path)
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    for name in ("job", "instance"):
        variable = variables[name]
        assert variable["type"] == "query" and variable["datasource"] == DATASOURCE, name
        assert variable["query"].startswith("label_values(") and variable["query"].endswith(f", {name})")
        assert variable["multi"] and variable["includeAll"] and variable["allValue"] == ".+", name
    # defaults: the stack's jobs, so its dashboards show data unchanged; any instance
    assert variables["job"]["current"]["value"] == [
        contract.JOB_BROKERS,
        contract.JOB_ENVOY_EXPORTER,
        contract.JOB_ENVOY,
        contract.JOB_WEBHOOK,
    ]
    assert variables["instance"]["current"]["value"] == "$__all"
    exprs = [t["expr"] for p in _data_panels(dashboard) for t in p["targets"]]
    exprs += [a["expr"] for a in dashboard["annotations"]["list"]]
    exprs += [v["query"] for v in variables.values() if v["type"] == "query" and v["name"] not in ("job", "instance")]
    for expr in exprs:
        assert not re.search(r'\b(job|instance)\s*(=|!=|!~)\s*"', expr), f"hard-coded selector in {expr!r}"
        if _metric_names(expr) - {"ALERTS"} and not all(":" in n for n in _metric_names(expr)):
            assert 'job=~"$job"' in expr and 'instance=~"$instance"' in expr, expr


def test_thresholds_sit_at_the_alert_marks() -> None:
    params = load_params()
    balance = {p["title"]: p for p in _data_panels(_load(GENERATED_DIR / "mqttlb-cluster-balance.json"))}

    def steps(title: str) -> list[float | None]:
        return [s["value"] for s in balance[title]["fieldConfig"]["defaults"]["thresholds"]["steps"]]

    assert steps("CPU utilisation per node") == [None, params.cpu_high, params.cpu_critical]
    assert steps("Max squared deviation of CPU") == [None, params.imbalance_max_squared_deviation]
    limit = math.sqrt(params.imbalance_max_squared_deviation)
    deviation = steps("CPU deviation from the cluster mean")
    assert (
        deviation[0] is None
        and deviation[1] == pytest.approx(-limit)
        and deviation[2] == pytest.approx(limit)
    )
    assert balance["CPU deviation from the cluster mean"]["fieldConfig"]["defaults"]["custom"][
        "axisCenteredZero"
    ]


def test_staircase_panels_are_stepped() -> None:
    connections = {p["title"]: p for p in _data_panels(_load(GENERATED_DIR / "mqttlb-connections.json"))}
    for title in (
        "Connections per node",
        "Envoy active connections per endpoint",
        "Envoy configured weight per endpoint",
    ):
        assert connections[title]["fieldConfig"]["defaults"]["custom"]["lineInterpolation"] == "stepAfter"


def test_rebalancer_actions_are_annotated() -> None:
    for path in FILES:
        (annotation,) = _load(path)["annotations"]["list"]
        assert contract.WEBHOOK_ACTIONS in annotation["expr"] and "increase(" in annotation["expr"]


def test_provisioning_points_at_the_generated_dashboards() -> None:
    datasources = yaml.safe_load((PROVISIONING / "datasources" / "mqttlb.yml").read_text())
    (source,) = datasources["datasources"]
    assert source["type"] == "prometheus" and source["isDefault"] is True and source["url"].startswith("http")
    providers = yaml.safe_load((PROVISIONING / "dashboards" / "mqttlb.yml").read_text())
    (provider,) = providers["providers"]
    assert provider["type"] == "file"
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards/mqttlb"
    assert datasources["apiVersion"] == providers["apiVersion"] == 1


def test_datasource_time_interval_matches_the_stack_scrape_interval() -> None:
    stack_file = yaml.safe_load((REPO / "stack" / "stack.yaml").read_text())
    datasources = yaml.safe_load((PROVISIONING / "datasources" / "mqttlb.yml").read_text())
    assert datasources["datasources"][0]["jsonData"]["timeInterval"] == stack_file["scrape_interval"]


def test_compose_grafana_mounts_what_the_provisioning_expects() -> None:
    compose = yaml.safe_load((REPO / "stack" / "docker-compose.yml").read_text())
    services = compose["services"]
    mounts = {m.split(":")[1]: m.split(":")[0] for m in services["grafana"]["volumes"] if m.startswith(".")}
    provider = yaml.safe_load((PROVISIONING / "dashboards" / "mqttlb.yml").read_text())["providers"][0]
    assert (REPO / "stack" / mounts[provider["options"]["path"]]).resolve() == GENERATED_DIR.resolve()
    assert (REPO / "stack" / mounts["/etc/grafana/provisioning/datasources"]).resolve() == (
        PROVISIONING / "datasources"
    ).resolve()
    source = yaml.safe_load((PROVISIONING / "datasources" / "mqttlb.yml").read_text())["datasources"][0]
    host, port = source["url"].removeprefix("http://").split(":")
    assert host in services and f"--web.listen-address=0.0.0.0:{port}" in services[host]["command"]


def test_evictions_per_node_sit_next_to_cpu_per_node() -> None:
    panels = _data_panels(_load(GENERATED_DIR / "mqttlb-rebalancer.json"))
    (evictions,) = [p for p in panels if p["title"] == "Evictions per node"]
    (cpu,) = [p for p in panels if p["title"] == "CPU utilisation per node"]
    (query,) = [t["expr"] for t in evictions["targets"]]
    assert query.startswith("sum by (node) (rate(") and contract.WEBHOOK_EVICTED in query and "$node" in query
    assert evictions["fieldConfig"]["defaults"]["unit"] == "cps"
    assert evictions["gridPos"]["y"] == cpu["gridPos"]["y"]
    assert evictions["gridPos"]["x"] == cpu["gridPos"]["x"] + cpu["gridPos"]["w"]
    assert contract.NODE_CPU in cpu["targets"][0]["expr"]


def _panels_by_title(name: str) -> dict[str, dict[str, Any]]:
    return {p["title"]: p for p in _data_panels(_load(GENERATED_DIR / name))}


def test_stats_show_the_window_end_and_a_bad_ratio_in_red() -> None:
    params = load_params()
    for path in FILES:
        for panel in _data_panels(_load(path)):
            if panel["type"] == "stat":
                assert panel["options"]["reduceOptions"]["calcs"] == ["lastNotNull"], panel["title"]
                assert panel["fieldConfig"]["defaults"]["noValue"] not in ("none", ""), panel["title"]
    ratio = _panels_by_title("mqttlb-cluster-balance.json")["Busiest / idlest node"]
    steps = ratio["fieldConfig"]["defaults"]["thresholds"]["steps"]
    assert [s["value"] for s in steps] == [None, 1.5, 2.0] and steps[-1]["color"] == "red"
    assert ratio["options"]["colorMode"] == "value"
    (expr,) = [t["expr"] for t in ratio["targets"]]
    # an idle cluster gives 0, shown as "idle", not the noise ratio of two small CPU figures (nor the
    # last busy ratio, which a lastNotNull over a query without idle samples would keep showing)
    mean = f'{contract.CLUSTER_CPU_MEAN}{{namespace=~"$namespace", {contract.CLUSTER_LABEL}="$cluster"}}'
    busy = f"{params.imbalance_min_mean:g}"
    by = contract.CLUSTER_LABEL
    assert f"and on ({by}) {mean} >= {busy})" in expr and expr.endswith(f"or on ({by}) ({mean} < {busy}) * 0")
    assert expr.startswith(f"max by ({by}) (")
    (mapping,) = ratio["fieldConfig"]["defaults"]["mappings"]
    assert mapping["type"] == "value"
    assert mapping["options"]["0"]["text"] == f"idle (mean < {params.imbalance_min_mean:.0%})"
    counts = {"Nodes up": 0, "Max squared deviation": 4}
    for title, decimals in counts.items():
        assert _panels_by_title("mqttlb-cluster-balance.json")[title]["fieldConfig"]["defaults"]["decimals"] == decimals


def test_decided_weights_are_drawn_apart_from_applied_ones() -> None:
    weights = _panels_by_title("mqttlb-rebalancer.json")["Endpoint weights: decided vs applied"]
    legends = {t["refId"]: t["legendFormat"] for t in weights["targets"]}
    assert legends == {"A": "decided {{node}}", "B": "applied {{node}}"}
    style = {
        o["matcher"]["options"]: {p["id"]: p["value"] for p in o["properties"]}
        for o in weights["fieldConfig"]["overrides"]
        if o["matcher"]["id"] == "byFrameRefID"
    }
    assert style["A"]["custom.lineWidth"] > style["B"]["custom.lineWidth"]
    assert style["A"]["custom.lineStyle"]["fill"] == "dash" and style["B"]["custom.lineStyle"]["fill"] == "solid"
    assert "dashed" in weights["description"] and "solid" in weights["description"]


def test_action_counts_are_whole_numbers() -> None:
    rebalancer = _panels_by_title("mqttlb-rebalancer.json")
    counters = {
        "Actions taken": contract.WEBHOOK_ACTIONS,
        "Action failures": contract.WEBHOOK_FAILURES,
        "Rejected requests": contract.WEBHOOK_REJECTED,
    }
    for title, counter in counters.items():
        panel = rebalancer[title]
        (expr,) = [t["expr"] for t in panel["targets"]]
        assert expr.startswith("round(sum by (") and f"increase({counter}" in expr, expr
        assert panel["fieldConfig"]["defaults"]["unit"] == "none" and panel["fieldConfig"]["defaults"]["decimals"] == 0
    for path in FILES:
        (annotation,) = _load(path)["annotations"]["list"]
        assert annotation["expr"].startswith("round(") and annotation["expr"].endswith(" > 0")


def test_descriptions_explain_threshold_and_annotation_lines() -> None:
    for path in FILES:
        dashboard = _load(path)
        (annotation,) = dashboard["annotations"]["list"]
        for panel in _data_panels(dashboard):
            defaults = panel["fieldConfig"]["defaults"]
            values = [s["value"] for s in defaults["thresholds"]["steps"] if s["value"] is not None]
            text = panel["description"]
            if panel["type"] == "timeseries":
                name = annotation["name"]
                assert f"Orange vertical lines: rebalancer actions (annotation \u201c{name}\u201d)" in text
                lines = defaults["custom"]["thresholdsStyle"]["mode"] != "off"
                assert lines == bool(values), panel["title"]
                if lines:
                    assert "Dashed lines:" in text, panel["title"]
            elif panel["type"] == "stat" and panel["options"]["colorMode"] == "value":
                assert "Colour:" in text, panel["title"]
            else:
                continue
            for value in values:
                shown = f"{value * 100:g} %" if defaults["unit"] == "percentunit" else f"{value:g}"
                assert f" {shown}" in text, f"{panel['title']}: threshold {shown} not explained"


def test_the_ratio_stat_is_one_series_busy_then_idle(tmp_path: Path) -> None:
    """promtool evaluates the stat's query: the ratio while the mean is busy, then 0, in one series
    (two series would leave Grafana's lastNotNull on the stale busy ratio)."""
    ratio = _panels_by_title("mqttlb-cluster-balance.json")["Busiest / idlest node"]
    expr = ratio["targets"][0]["expr"].replace("$namespace", ".*").replace("$cluster", "local")
    local = f'{{{contract.CLUSTER_LABEL}="local"}}'
    test = {
        "rule_files": [],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [
                    {"series": f'{contract.CLUSTER_CPU_MAX_OVER_MIN}{local}', "values": "3 3 5"},
                    {"series": f'{contract.CLUSTER_CPU_MEAN}{local}', "values": "0.3 0.3 0.03"},
                ],
                "promql_expr_test": [
                    {"expr": expr, "eval_time": "1m", "exp_samples": [{"labels": local, "value": 3}]},
                    {"expr": expr, "eval_time": "2m", "exp_samples": [{"labels": local, "value": 0}]},
                ],
            }
        ],
    }
    path = tmp_path / "ratio_test.yml"
    path.write_text(yaml.safe_dump(test))
    done = subprocess.run(["promtool", "test", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
