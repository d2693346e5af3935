"""grafana/dashboard-linter's rules (mqttlb/dashboards/lint.py): the committed dashboards are clean, and
each rule finds the fault it exists for."""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from mqttlb.dashboards import build, cli
from mqttlb.dashboards.build import GENERATED_DIR
from mqttlb.dashboards.lint import expand_variables, lint

FILES = sorted(GENERATED_DIR.glob("*.json"))
REBALANCER = json.loads((GENERATED_DIR / "mqttlb-rebalancer.json").read_text())


def test_make_test_lints_the_committed_dashboards(capsys: pytest.CaptureFixture[str]) -> None:
    assert FILES
    assert cli.main(["lint", *map(str, FILES)]) == 0, capsys.readouterr().err
    assert cli.main(["lint"]) == 0


def _panel(dashboard: dict[str, Any], title: str) -> dict[str, Any]:
    (panel,) = [p for p in dashboard["panels"] if p.get("title") == title]
    return panel


def _variable(dashboard: dict[str, Any], name: str) -> dict[str, Any]:
    (variable,) = [v for v in dashboard["templating"]["list"] if v["name"] == name]
    return variable


def _set_expr(title: str, expr: str) -> Callable[[dict[str, Any]], None]:
    def change(d: dict[str, Any]) -> None:
        _panel(d, title)["targets"][0]["expr"] = expr

    return change


def _update_variable(name: str, /, **fields: Any) -> Callable[[dict[str, Any]], None]:
    return lambda d: _variable(d, name).update(fields)


def _update_panel(title: str, /, **fields: Any) -> Callable[[dict[str, Any]], None]:
    return lambda d: _panel(d, title).update(fields)


RAW = 'mqttlb_webhook_shed_level{job=~"$job", instance=~"$instance"}'
FAULTS: dict[str, tuple[str, Callable[[dict[str, Any]], None]]] = {
    "no datasource variable": (
        "template-datasource-rule",
        lambda d: d["templating"]["list"].pop(0),
    ),
    "datasource variable renamed": ("template-datasource-rule", _update_variable("datasource", name="ds")),
    "no job variable": (
        "template-job-rule",
        lambda d: d["templating"]["list"].remove(_variable(d, "job")),
    ),
    "job variable single-valued": ("template-job-rule", _update_variable("job", multi=False)),
    "instance All is not .+": ("template-instance-rule", _update_variable("instance", allValue="")),
    "instance variable on a fixed data source": (
        "template-instance-rule",
        _update_variable("instance", datasource={"type": "prometheus", "uid": "P1"}),
    ),
    "variable query not label_values(...)": (
        "template-label-promql-rule",
        _update_variable("cluster", query="label_valus(up, cluster)"),
    ),
    "variable query with broken PromQL": (
        "template-label-promql-rule",
        _update_variable("cluster", query="label_values(up{job=}, cluster)"),
    ),
    "variable refreshed on load only": ("template-on-time-change-reload-rule", _update_variable("node", refresh=1)),
    "panel on a fixed data source": (
        "panel-datasource-rule",
        _update_panel("Shedding level", datasource={"type": "prometheus", "uid": "P1"}),
    ),
    "panel without description": ("panel-title-description-rule", _update_panel("Shedding level", description="")),
    "panel with an unknown unit": (
        "panel-units-rule",
        lambda d: _panel(d, "Shedding level")["fieldConfig"]["defaults"].update(unit="levels"),
    ),
    "panel without queries": ("panel-no-targets-rule", _update_panel("Shedding level", targets=[])),
    "invalid PromQL": ("target-promql-rule", _set_expr("Shedding level", "sum(" + RAW)),
    "rate over a fixed range": (
        "target-rate-interval-rule",
        _set_expr("Evictions per node", 'rate(mqttlb_webhook_evicted_clients_total{job=~"$job", instance=~"$i"}[1m])'),
    ),
    "hard-coded job": (
        "target-job-rule",
        _set_expr("Shedding level", 'mqttlb_webhook_shed_level{job="mqttlb-webhook", instance=~"$instance"}'),
    ),
    "raw series without instance": (
        "target-instance-rule",
        _set_expr("Shedding level", 'mqttlb_webhook_shed_level{job=~"$job"}'),
    ),
    "counter not in rate()": (
        "target-counter-agg-rule",
        _set_expr("Actions taken", 'sum(mqttlb_webhook_actions_total{job=~"$job", instance=~"$instance"})'),
    ),
    "annotation query without job": (
        "target-job-rule",
        lambda d: d["annotations"]["list"][0].update(
            expr='increase(mqttlb_webhook_actions_total{instance=~"$instance"}[$__rate_interval]) > 0'
        ),
    ),
    "editable": ("uneditable-dashboard", lambda d: d.update(editable=True)),
}


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_each_rule_finds_its_fault(fault: str) -> None:
    rule, change = FAULTS[fault]
    broken = copy.deepcopy(REBALANCER)
    change(broken)
    rules = {p.rule for p in lint(broken)}
    assert rule in rules, f"{fault}: found only {rules}"


def test_the_cli_names_file_and_rule_and_fails(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    broken = copy.deepcopy(REBALANCER)
    _set_expr("Shedding level", "mqttlb_webhook_shed_level")(broken)
    path = tmp_path / "broken.json"
    path.write_text(json.dumps(broken))
    assert cli.main(["lint", str(path)]) == 1
    err = capsys.readouterr().err
    assert f"{path}: [target-job-rule] mqttlb / Rebalancer / 'Shedding level' target 0" in err
    assert "[target-instance-rule]" in err


def test_recording_rules_and_alerts_are_the_only_series_without_job() -> None:
    """The exclusions cover series that have no job label (aggregated by cluster and node), nothing else."""
    fine = copy.deepcopy(REBALANCER)
    mean = 'mqttlb_cluster:mqtt_broker_cpu_utilisation:avg{mqtt_cluster="$cluster"}'
    _set_expr("Shedding level", f"{mean} and on () ALERTS")(fine)
    assert lint(fine) == []
    raw = copy.deepcopy(REBALANCER)
    _set_expr("Shedding level", f"{mean} * on () up")(raw)
    assert {(p.rule, p.message.split(":")[0]) for p in lint(raw)} == {
        ("target-job-rule", "up"),
        ("target-instance-rule", "up"),
    }


def test_variables_expand_as_the_linter_expands_them() -> None:
    variables = REBALANCER["templating"]["list"]
    expanded = expand_variables('rate(x{job=~"$job"}[$__rate_interval]) > $cluster', variables)
    assert expanded == 'rate(x{job=~"$job"}[102d15h53m10s787ms]) > local'  # quoted text is kept
    assert expand_variables("x[${__interval}] + $unknown", variables) == "x[56d8h10m56s611ms] + unknown"


def test_the_go_linters_lint_file_excludes_only_panels_without_job_and_instance() -> None:
    """dashboards/generated/.lint (generated, drift-checked) names whole panels for the Go linter: each
    entry is one panel of that dashboard whose every selector is a recording rule or ALERTS."""
    config = yaml.safe_load((GENERATED_DIR / build.LINT_CONFIG).read_text())
    dashboards = {d["title"]: d for d in (json.loads(p.read_text()) for p in FILES)}
    assert set(config["exclusions"]) == {"target-job-rule", "target-instance-rule"}
    excluded = set()
    for rule, spec in config["exclusions"].items():
        assert spec["reason"], rule
        for entry in spec["entries"]:
            panels = [p for p in _all_panels(dashboards[entry["dashboard"]]) if p.get("title") == entry["panel"]]
            assert len(panels) == 1, f"{rule}: {entry} must name exactly one panel"
            exprs = [t["expr"] for t in panels[0]["targets"]]
            assert not re.search(r'[a-z_]+\{job=~"\$job"', " ".join(exprs)), f"{entry} selects by job"
            excluded.add((entry["dashboard"], entry["panel"]))
    for title, dashboard in dashboards.items():
        for panel in _all_panels(dashboard):
            raw = any('job=~"$job"' in t["expr"] for t in panel.get("targets") or [])
            if panel.get("targets") and not raw:
                assert (title, panel["title"]) in excluded, f"{title} / {panel['title']} is missing from .lint"


def _all_panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    return [q for p in dashboard["panels"] for q in [p, *(p.get("panels") or [])]]
