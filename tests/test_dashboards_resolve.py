"""Variable substitution and repeat expansion, the way Grafana reads the generated JSON."""

from __future__ import annotations

import json

import pytest

from mqttlb.dashboards import cli
from mqttlb.dashboards.build import GENERATED_DIR
from mqttlb.dashboards.resolve import (
    Interval,
    ResolveError,
    Variable,
    interpolate,
    legend,
    parse_duration,
    resolve_panels,
    resolve_variables,
)

BALANCE = json.loads((GENERATED_DIR / "mqttlb-cluster-balance.json").read_text())
INTERVAL = Interval.for_range(900, scrape_seconds=5)


def test_multi_value_variables_become_an_escaped_alternation() -> None:
    variables = {
        "node": Variable("node", ("node1", "node.2"), regex=True),
        "cluster": Variable("cluster", ('lo"cal',), regex=False),
    }
    expr = interpolate('m{cluster="$cluster", node=~"${node}"}', variables, INTERVAL)
    assert expr == 'm{cluster="lo\\"cal", node=~"(node1|node\\.2)"}'
    single = {"node": variables["node"].single("node1")}
    assert interpolate('m{node=~"$node"}', single, INTERVAL) == 'm{node=~"node1"}'


def test_rate_interval_spans_four_scrapes_at_least() -> None:
    assert INTERVAL.builtins() == {"__interval": "5s", "__rate_interval": "20s"}
    day = Interval.for_range(86400, scrape_seconds=5)
    assert day.step_seconds == 87 and day.builtins()["__rate_interval"] == "92s"


def test_unknown_variable_names_the_place() -> None:
    with pytest.raises(ResolveError, match=r"panel X: unknown variable \$nope"):
        interpolate('m{a="$nope"}', {}, INTERVAL, "panel X")


DISCOVERED = {
    "job": ["envoy", "mqtt-brokers", "mqttlb-envoy", "mqttlb-webhook", "other"],
    "instance": ["127.0.0.1:9641", "127.0.0.1:9642"],
    "namespace": [],  # the local stack scrapes without Kubernetes: no namespace label
    "mqtt_cluster": ["east", "local"],  # the MQTT cluster label (the variable is still named cluster)
    "node": ["node2", "node1", "node3"],
}


def test_discovered_variables_follow_grafana_defaults() -> None:
    calls = []

    def discover(selector: str, label: str) -> list[str]:
        calls.append((selector, label))
        return DISCOVERED[label]

    variables = resolve_variables(BALANCE, {}, discover)
    # the saved jobs (the stack's) exist, so they are kept, and "other" is not selected
    assert variables["job"].values == ("mqtt-brokers", "mqttlb-envoy", "envoy", "mqttlb-webhook")
    assert variables["job"].formatted() == "(mqtt-brokers|mqttlb-envoy|envoy|mqttlb-webhook)"
    assert variables["instance"].formatted() == ".+"  # "All" with allValue: the regex, not the list
    assert variables["namespace"].formatted() == ".*"  # no values: Grafana's lone "All", i.e. its allValue
    assert variables["cluster"].values == ("local",)  # the saved default exists, so it is kept
    assert variables["node"].values == ("node1", "node2", "node3")  # "All" -> every value
    assert calls[1] == (
        '{__name__=~"mqtt_broker_up|mqttlb_envoy_up|envoy_server_live|mqttlb_webhook_shed_level", '
        'job=~"(mqtt-brokers|mqttlb-envoy|envoy|mqttlb-webhook)"}',
        "instance",
    )
    assert calls[4] == (
        'mqtt_broker_up{job=~"(mqtt-brokers|mqttlb-envoy|envoy|mqttlb-webhook)", instance=~".+", '
        'namespace=~".*", mqtt_cluster="local"}',
        "node",
    )
    in_kubernetes = resolve_variables(BALANCE, {}, lambda selector, label: {**DISCOVERED, "namespace": ["mqtt"]}[label])
    assert in_kubernetes["namespace"].formatted() == ".*"  # "All" stays any namespace


def test_saved_jobs_missing_from_prometheus_fall_back_to_the_first_found() -> None:
    found = {**DISCOVERED, "job": ["kube-mqtt", "mqtt-brokers"]}
    variables = resolve_variables(BALANCE, {}, lambda selector, label: found[label])
    assert variables["job"].values == ("mqtt-brokers",)  # the one saved job Grafana finds
    found["job"] = ["kube-mqtt", "kube-envoy"]
    variables = resolve_variables(BALANCE, {}, lambda selector, label: found[label])
    assert variables["job"].values == ("kube-envoy",)  # none found: the first value, as Grafana does


def test_offline_defaults_substitute_the_stack_jobs_and_any_instance() -> None:
    variables = resolve_variables(BALANCE)
    assert variables["job"].formatted() == "(mqtt-brokers|mqttlb-envoy|envoy|mqttlb-webhook)"
    assert variables["instance"].formatted() == ".+"
    assert variables["node"].formatted() == ".*"  # no allValue: Grafana's own "All" regex
    bad = json.loads(json.dumps(BALANCE))
    bad["templating"]["list"][1]["current"]["value"] = [1]
    with pytest.raises(ResolveError, match="variable job: saved value"):
        resolve_variables(bad)


def test_discovery_without_values_is_an_error() -> None:
    with pytest.raises(ResolveError, match="variable job: Prometheus has no values"):
        resolve_variables(BALANCE, {}, lambda selector, label: [])
    found = {**DISCOVERED, "mqtt_cluster": []}
    with pytest.raises(ResolveError, match="variable cluster: Prometheus has no values"):
        resolve_variables(BALANCE, {}, lambda selector, label: found[label])


def test_overrides_win_and_empty_overrides_are_refused() -> None:
    variables = resolve_variables(BALANCE, {"cluster": ["prod"], "node": ["a", "b"]})
    assert variables["cluster"].formatted() == "prod" and variables["node"].formatted() == "(a|b)"
    with pytest.raises(ResolveError, match="variable node: empty value"):
        resolve_variables(BALANCE, {"node": [""]})


def test_repeated_row_expands_once_per_node_below_each_other() -> None:
    variables = resolve_variables(BALANCE, {"node": ["node1", "node2", "node3"]})
    panels = resolve_panels(BALANCE, variables, INTERVAL)
    rows = [p for p in panels if p.type == "row"]
    assert [r.title for r in rows] == ["Cluster", "Node node1", "Node node2", "Node node3"]
    per_node = [p for p in panels if p.repeat_value and p.type != "row"]
    assert len(per_node) == 3 * 4
    for panel in per_node:
        for target in panel.targets:
            assert f'node=~"{panel.repeat_value}"' in target.expr
    cluster_wide = [p for p in panels if not p.repeat_value and p.type != "row"]
    assert any('node=~"(node1|node2|node3)"' in t.expr for p in cluster_wide for t in p.targets)
    cells = [(x, y, w, h) for p in panels for (x, y, w, h) in [p.grid]]
    occupied: set[tuple[int, int]] = set()
    for x, y, w, h in cells:
        area = {(cx, cy) for cx in range(x, x + w) for cy in range(y, y + h)}
        assert not area & occupied, "repeated panels overlap"
        occupied |= area


def test_offline_resolution_leaves_no_variable_behind() -> None:
    for path in sorted(GENERATED_DIR.glob("*.json")):
        dashboard = json.loads(path.read_text())
        panels = resolve_panels(dashboard, resolve_variables(dashboard), INTERVAL)
        for panel in panels:
            assert "$" not in panel.title
            for target in panel.targets:
                assert "$" not in target.expr, (panel.label, target.expr)


def test_queries_lists_every_target(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["queries", "--var", "node=node1,node2"]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if not line.startswith("#")]
    expected = 0
    for path in sorted(GENERATED_DIR.glob("*.json")):
        dashboard = json.loads(path.read_text())
        for panel in dashboard["panels"]:
            copies = 2 if _in_repeated_row(dashboard, panel) else 1
            expected += copies * len(panel.get("targets") or [])
    assert len(lines) == expected
    assert all(len(line.split("\t")) == 3 and "$" not in line for line in lines)


def _in_repeated_row(dashboard: dict, panel: dict) -> bool:
    current = None
    for p in dashboard["panels"]:
        if p["type"] == "row":
            current = p
        if p is panel:
            return bool(current and current.get("repeat"))
    return False


def test_durations_and_legends() -> None:
    assert parse_duration("15m") == 900 and parse_duration("1h30m") == 5400
    for bad in ("", "15", "m", "15 m", "0s", "-5m"):
        with pytest.raises(ResolveError):
            parse_duration(bad)
    assert (
        legend("{{node}} {{endpoint}}", {"node": "node1", "endpoint": "127.0.0.1:1"}) == "node1 127.0.0.1:1"
    )
    assert legend("", {"b": "2", "a": "1"}) == '{a="1", b="2"}'
