"""The Helm chart (deploy/helm/mqttlb): generated from the product's sources, linted and rendered by a real
helm (built from the Go module proxy: `make helm`), every object valid against Kubernetes' and
prometheus-operator's schemas, and the rendered configs accepted by the components that read them."""

from __future__ import annotations

import base64
import copy
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from mqttlb import contract, rulegen
from mqttlb.alertmanager_config import build as build_alertmanager_config
from mqttlb.brokers.control import EmqxControl, HivemqControl, MosquittoControl
from mqttlb.dashboards.build import GENERATED_DIR, render_dashboards
from mqttlb.deploy import chart
from mqttlb.deploy import helm_render as hr
from mqttlb.deploy.k8s_schemas import KUBERNETES_VERSION, OPERATOR_VERSION, default_store, strict
from mqttlb.exporters.broker_config import parse_config
from mqttlb.params import load_params
from mqttlb.shipped import RULES, shipped
from mqttlb.stack import builders
from mqttlb.stack.compose_render import IMAGES
from mqttlb.stack.config import find_binary
from mqttlb.webhook.config import WebhookConfig, load_config

REPO = Path(__file__).resolve().parents[1]
THREE = hr.CHART_DIR / "ci" / "three-nodes-values.yaml"
HA = hr.CHART_DIR / "ci" / "ha-values.yaml"
EVICTION = hr.CHART_DIR / "ci" / "eviction-values.yaml"
FQDN = f"{chart.NAMESPACE}.svc"


def by_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


def named(objects: list[dict[str, Any]], kind: str, suffix: str) -> dict[str, Any]:
    (found,) = [o for o in by_kind(objects, kind) if o["metadata"]["name"] == f"{chart.RELEASE}-{suffix}"]
    return found


@pytest.fixture(scope="module")
def three_text() -> str:
    return chart.template([THREE])


@pytest.fixture(scope="module")
def three(three_text: str) -> list[dict[str, Any]]:
    return chart.objects(three_text)


@pytest.fixture(scope="module")
def ha() -> list[dict[str, Any]]:
    return chart.objects(chart.template([HA]))


@pytest.fixture(scope="module")
def eviction() -> list[dict[str, Any]]:
    return chart.objects(chart.template([EVICTION]))


# ------------------------------------------------------------------ generated from the one source
def test_the_chart_files_are_up_to_date() -> None:
    assert hr.drift(hr.render_files()) == [], f"run `{hr.REGENERATE}`"


def test_a_stale_or_stray_chart_file_is_reported(tmp_path: Path) -> None:
    files = hr.render_files()
    stale = hr.FILES_DIR / "webhook.yaml"
    files[stale] = files[stale].replace("eds_path", "eds_file")
    assert hr.drift(files) == [f"files/webhook.yaml: differs from its source (run `{hr.REGENERATE}`)"]
    del files[hr.FILES_DIR / "rules" / "mqttlb-alerts.yml"]
    assert f"files/rules/mqttlb-alerts.yml: no source generates this file (delete it; `{hr.REGENERATE}` writes " \
        "the generated ones)" in hr.drift(files)
    assert hr.main(["--check"]) == 0


def test_the_rule_and_dashboard_files_are_the_repositorys_bytes() -> None:
    rules = shipped(RULES)
    for name in ("mqttlb-recording.yml", "mqttlb-alerts.yml"):
        assert (hr.FILES_DIR / "rules" / name).read_bytes() == (rules / name).read_bytes()
    names = sorted(n for n in render_dashboards(load_params()) if n.endswith(".json"))
    assert sorted(p.name for p in (hr.FILES_DIR / "dashboards").glob("*.json")) == names
    for name in names:
        assert (hr.FILES_DIR / "dashboards" / name).read_bytes() == (GENERATED_DIR / name).read_bytes()


def test_no_placeholder_survives_and_a_left_one_is_refused() -> None:
    for text in hr.render_files().values():
        assert "MQTTLBK8S_" not in text and "MQTTLBNODE_" not in text
    with pytest.raises(ValueError, match="placeholder MQTTLBK8S_NEW left"):
        hr._leftover("cluster: MQTTLBK8S_NEW\n", "x.yaml")


def test_the_crd_matcher_conversion() -> None:
    expected = {"name": "action", "value": "rebalance|shed", "matchType": "=~"}
    assert hr.crd_matcher('action=~"rebalance|shed"') == expected
    assert hr.crd_matcher('alertname!="X"') == {"name": "alertname", "value": "X", "matchType": "!="}
    with pytest.raises(ValueError):
        hr.crd_matcher("action=rebalance")


def test_the_images_are_the_compose_stacks() -> None:
    topology = yaml.safe_load((hr.FILES_DIR / "topology.yaml").read_text())
    assert topology["images"] == {"mqttlb": IMAGES["mqttlb"], "envoy": IMAGES["envoy"]}


# ------------------------------------------------------------------ helm lint / template, schemas
def test_the_chart_command_lints_renders_and_validates_every_ci_values_file() -> None:
    assert chart.main([]) == 0


def test_the_helm_in_use_is_the_pinned_build() -> None:
    assert chart.helm_version() == chart.HELM_VERSION


def test_helm_lint_passes_with_every_ci_values_file() -> None:
    assert chart.CI_VALUES == [EVICTION, HA, THREE]
    for values in chart.CI_VALUES:
        assert "0 chart(s) failed" in chart.lint([values])


def test_every_rendered_object_validates_against_the_schemas(three, ha, eviction) -> None:
    store = default_store()
    for objects in (three, ha, eviction):
        problems = [str(p) for obj in objects for p in store.problems(obj)]
        assert problems == []
    kinds = sorted({o["kind"] for o in three})
    assert kinds == sorted(
        ["AlertmanagerConfig", "ConfigMap", "Deployment", "NetworkPolicy", "PrometheusRule", "Role", "RoleBinding",
         "Secret", "Service", "ServiceAccount", "ServiceMonitor"]
    )
    assert sorted(o["metadata"]["name"] for o in by_kind(three, "Deployment")) == [
        f"{chart.RELEASE}-{c}" for c in ("broker-exporter", "envoy", "envoy-exporter", "rebalancer")
    ]


def test_the_validator_refuses_what_the_api_server_would(three) -> None:
    store = default_store()
    deployment = copy.deepcopy(named(three, "Deployment", "rebalancer"))
    deployment["spec"]["replicas"] = "two"
    deployment["spec"]["template"]["spec"]["containers"][0]["portz"] = []
    problems = [str(p) for p in store.problems(deployment)]
    assert any("spec.replicas: 'two' is not of type 'integer'" in p for p in problems), problems
    assert any("'portz' was unexpected" in p for p in problems), problems
    monitor = copy.deepcopy(named(three, "ServiceMonitor", "rebalancer"))
    monitor["spec"]["endpoints"][0]["intervall"] = "5s"
    monitor["metadata"]["labelz"] = {}
    problems = [str(p) for p in store.problems(monitor)]
    assert len(problems) == 2 and all("was unexpected" in p for p in problems), problems
    config = copy.deepcopy(by_kind(three, "AlertmanagerConfig")[0])
    config["spec"]["route"]["routes"][0]["matchers"][0]["matchType"] = "~~"  # a child route: raw JSON in the CRD
    assert [p.path for p in store.problems(config)] == ["spec.route.routes[0].matchers[0].matchType"]


def test_strict_leaves_open_objects_open() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "object", "x-kubernetes-preserve-unknown-fields": True,
                                                      "properties": {"b": {}}}}}
    assert strict(schema) == {**schema, "additionalProperties": False}
    assert "additionalProperties" not in strict(schema)["properties"]["a"]


def test_the_readme_names_the_schema_and_tool_versions() -> None:
    section = (REPO / "README.md").read_text().split("## Kubernetes (Helm)", 1)[1].split("\n## ", 1)[0]
    for version in (KUBERNETES_VERSION, OPERATOR_VERSION, chart.HELM_VERSION):
        assert version in section


# ------------------------------------------------------------------ what the objects hold
def _prometheus_rule_specs(text: str) -> dict[str, str]:
    """Each PrometheusRule's spec block, as text, from helm template's output."""
    specs = {}
    for document in text.split("\n---\n"):
        if "\nkind: PrometheusRule\n" in document:
            name = re.search(r"(?m)^  name: (\S+)$", document)
            assert name is not None
            specs[name.group(1)] = document.split("\nspec:\n", 1)[1]
    return specs


RUNBOOKS_IN_CLUSTER = f"http://{chart.RELEASE}-rebalancer.{FQDN}:9643/runbooks"


def _absolute_runbooks(text: str, base: str = RUNBOOKS_IN_CLUSTER) -> str:
    return text.replace("runbook_url: docs/runbooks/", f"runbook_url: {base}/")


def test_the_prometheus_rules_hold_the_rule_files_byte_for_byte(three_text, three) -> None:
    # byte for byte but for the runbook links, made absolute (the rebalancer's /runbooks by default)
    rules = shipped(RULES)
    specs = _prometheus_rule_specs(three_text)
    assert sorted(specs) == [f"{chart.RELEASE}-alerts", f"{chart.RELEASE}-recording"]
    for kind in ("alerts", "recording"):
        text = _absolute_runbooks((rules / f"mqttlb-{kind}.yml").read_text())
        block = specs[f"{chart.RELEASE}-{kind}"].rstrip("\n") + "\n"
        assert "".join(line[2:] if line.strip() else line.strip(" ") for line in block.splitlines(True)) == text
        rule = named(three, "PrometheusRule", kind)
        assert rule["spec"]["groups"] == yaml.safe_load(text)["groups"]


def test_broker_cpu_from_cadvisor_swaps_in_the_cadvisor_recording_rules() -> None:
    # monitoring.brokerCpuSource=cadvisor: the recording rules generated with broker_cpu.source cadvisor
    # (cAdvisor CPU over kube-state-metrics limits), the alerts unchanged.
    text = chart.template([THREE], {"monitoring.brokerCpuSource": "cadvisor"})
    specs = _prometheus_rule_specs(text)
    cadvisor = rulegen.render_rule_files(hr.cadvisor_params(load_params()))
    for kind, name in (("alerts", rulegen.ALERTS_FILE), ("recording", rulegen.RECORDING_FILE)):
        block = specs[f"{chart.RELEASE}-{kind}"].rstrip("\n") + "\n"
        unindented = "".join(line[2:] if line.strip() else line.strip(" ") for line in block.splitlines(True))
        assert unindented == _absolute_runbooks(cadvisor[name])
    assert "container_cpu_usage_seconds_total" in cadvisor[rulegen.RECORDING_FILE]
    assert "container_cpu_usage_seconds_total" not in (shipped(RULES) / rulegen.RECORDING_FILE).read_text()
    assert cadvisor[rulegen.ALERTS_FILE] == (shipped(RULES) / rulegen.ALERTS_FILE).read_text()
    with pytest.raises(chart.HelmError, match="brokerCpuSource"):  # the schema knows the two sources only
        chart.template([THREE], {"monitoring.brokerCpuSource": "psutil"})


def _runbook_urls(objects: list[dict[str, Any]]) -> list[str]:
    alerts = named(objects, "PrometheusRule", "alerts")["spec"]["groups"]
    return [r["annotations"]["runbook_url"] for g in alerts for r in g["rules"] if "alert" in r]


def test_runbook_links_are_absolute_and_follow_the_value(three) -> None:
    # a relative docs/runbooks/X.md is a dead link in Slack or PagerDuty
    urls = _runbook_urls(three)
    assert urls and all(u == f"{RUNBOOKS_IN_CLUSTER}/{u.rsplit('/', 1)[1]}" for u in urls)
    assert {u.rsplit("/", 1)[1] for u in urls} == {f"{a}.md" for a in contract.ALERT_NAMES}
    wiki = chart.objects(chart.template([THREE], {"monitoring.runbookBaseUrl": "https://wiki.example.com/mqttlb/"}))
    assert _runbook_urls(wiki) == [u.replace(RUNBOOKS_IN_CLUSTER, "https://wiki.example.com/mqttlb") for u in urls]
    with pytest.raises(chart.HelmError, match="runbookBaseUrl"):
        chart.template([THREE], {"monitoring.runbookBaseUrl": "wiki/mqttlb"})


def test_the_dashboards_are_configmaps_for_the_grafana_sidecar(three) -> None:
    maps = [o for o in by_kind(three, "ConfigMap") if "-dashboard-" in o["metadata"]["name"]]
    assert len(maps) == len([n for n in render_dashboards(load_params()) if n.endswith(".json")]) == 3
    for config_map in maps:
        assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
        ((name, text),) = config_map["data"].items()
        assert text == (GENERATED_DIR / name).read_text()


def test_the_alertmanager_config_routes_rebalance_and_shed_to_the_rebalancer(three) -> None:
    (config,) = by_kind(three, "AlertmanagerConfig")
    spec = config["spec"]
    built = build_alertmanager_config(load_params(), webhook_url="http://x/alerts", token_file="t")
    assert spec["route"]["receiver"] == built["route"]["receiver"]
    assert spec["route"]["groupBy"] == built["route"]["group_by"]
    routes = {r["receiver"]: r["matchers"] for r in spec["route"]["routes"]}
    assert routes[contract.RECEIVER_WEBHOOK] == [{"name": "action", "value": "rebalance|shed", "matchType": "=~"}]
    assert routes[contract.RECEIVER_PAGE] == [{"name": "action", "value": "page", "matchType": "="}]
    assert len(spec["inhibitRules"]) == len(built["inhibit_rules"])
    receivers = {r["name"]: r for r in spec["receivers"]}
    (hook,) = receivers[contract.RECEIVER_WEBHOOK]["webhookConfigs"]
    assert hook["url"] == f"http://{chart.RELEASE}-rebalancer.{FQDN}:9643/alerts"
    credentials = hook["httpConfig"]["authorization"]["credentials"]
    assert credentials == {"name": f"{chart.RELEASE}-tokens", "key": hr.WEBHOOK_TOKEN_KEY}
    secret = named(three, "Secret", "tokens")
    assert sorted(secret["data"]) == [hr.EXPORTER_TOKEN_KEY, hr.WEBHOOK_TOKEN_KEY, hr.XDS_TOKEN_KEY]
    assert receivers[contract.RECEIVER_PAGE] == {"name": contract.RECEIVER_PAGE}


def test_the_page_route_does_not_repeat_at_the_webhooks_pace(three) -> None:
    (config,) = by_kind(three, "AlertmanagerConfig")
    route = config["spec"]["route"]
    children = {r["receiver"]: r for r in route["routes"]}
    assert route["repeatInterval"] == load_params().alertmanager.repeat_interval
    assert children[contract.RECEIVER_PAGE]["repeatInterval"] == "4h"


def test_the_manifests_load_with_a_plain_yaml_1_1_reader(three_text) -> None:
    # A bare `matchType: =` is YAML 1.1's value tag: PyYAML's safe loader (and other YAML 1.1 tools) refuse it.
    documents = [d for d in yaml.safe_load_all(three_text) if d]
    assert documents == chart.objects(three_text)


def test_every_object_names_the_release_namespace(three, ha, eviction) -> None:
    for obj in three + ha + eviction:
        assert obj["metadata"].get("namespace") == chart.NAMESPACE, (obj["kind"], obj["metadata"]["name"])


def test_the_page_receiver_takes_the_values_integrations(ha) -> None:
    (config,) = by_kind(ha, "AlertmanagerConfig")
    page = next(r for r in config["spec"]["receivers"] if r["name"] == contract.RECEIVER_PAGE)
    assert page["pagerdutyConfigs"] == [{"routingKey": {"name": "pagerduty", "key": "routing-key"}}]
    hook = next(r for r in config["spec"]["receivers"] if r["name"] == contract.RECEIVER_WEBHOOK)
    assert hook["webhookConfigs"][0]["httpConfig"]["authorization"]["credentials"]["name"] == "mqttlb-tokens"
    assert config["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert not by_kind(ha, "Secret")  # tokens.existingSecret


def test_the_service_monitors_give_the_rules_job_names(three) -> None:
    params = load_params()
    services = {s["metadata"]["name"]: s for s in by_kind(three, "Service")}
    jobs = {}
    for monitor in by_kind(three, "ServiceMonitor"):
        assert monitor["spec"]["jobLabel"] == "mqttlb.io/job"
        selector = monitor["spec"]["selector"]["matchLabels"]
        (service,) = [s for s in services.values() if s["spec"]["selector"] == selector and
                      "mqttlb.io/job" in s["metadata"]["labels"]]
        jobs[service["metadata"]["labels"]["mqttlb.io/job"]] = monitor["spec"]["endpoints"][0]
    assert sorted(jobs) == sorted([contract.JOB_BROKERS, contract.JOB_ENVOY_EXPORTER, contract.JOB_ENVOY,
                                   contract.JOB_WEBHOOK])
    selectors = (params.broker_selector, params.envoy_selector, params.envoy_stats_selector, params.webhook_selector)
    for selector in selectors:
        assert re.fullmatch(r'job="([^"]+)"', selector)[1] in jobs  # type: ignore[index]
    assert jobs[contract.JOB_ENVOY]["path"] == "/stats/prometheus" and "authorization" not in jobs[contract.JOB_ENVOY]
    assert jobs[contract.JOB_WEBHOOK]["authorization"]["credentials"]["key"] == hr.WEBHOOK_TOKEN_KEY
    assert jobs[contract.JOB_BROKERS]["authorization"]["credentials"]["key"] == hr.EXPORTER_TOKEN_KEY
    assert {e["interval"] for e in jobs.values()} == {"5s"}


# ------------------------------------------------------------------ the configs the components read
def _config(objects: list[dict[str, Any]], suffix: str, key: str) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(named(objects, "ConfigMap", suffix)["data"][key])
    return data


def test_the_rebalancer_config_loads_and_points_at_the_release(three) -> None:
    config = WebhookConfig.model_validate(_config(three, "rebalancer", "webhook.yaml"))
    assert [(n.name, n.host, n.port) for n in config.nodes] == [
        ("node1", "10.96.100.11", 1883), ("node2", "10.96.100.12", 1883), ("node3", "10.96.100.13", 1883)
    ]
    assert config.cluster == "mqtt" and config.dry_run is False
    assert config.xds_grpc_listen == "0.0.0.0:9645" and config.listen == "0.0.0.0:9643"
    assert config.envoy_admin == f"http://{chart.RELEASE}-envoy-admin.{FQDN}:9901"
    assert str(config.token_file) == f"{hr.SECRET_MOUNT}/{hr.WEBHOOK_TOKEN_KEY}"
    assert config.hard_stop_listener == "mqtt" and config.overload_file is None  # Envoy is another pod
    # the shed lever reaches every Envoy replica: the admin Service's name resolves to each ready pod
    assert config.envoy_admin_all_addresses is True
    assert named(three, "Service", "envoy-admin")["spec"]["clusterIP"] == "None"
    assert config.lease is not None and config.lease.kind == "kubernetes"
    assert config.lease.name == f"{chart.RELEASE}-rebalancer"
    deployment = named(three, "Deployment", "rebalancer")
    pod = deployment["spec"]["template"]["spec"]
    assert pod["containers"][0]["args"] == ["webhook", "--config", "/etc/mqttlb/webhook.yaml"]
    mounts = {m["name"]: m["mountPath"] for m in pod["containers"][0]["volumeMounts"]}
    assert mounts == {"config": "/etc/mqttlb", "tokens": hr.SECRET_MOUNT, "state": "/mqttlb"}
    assert pod["serviceAccountName"] == f"{chart.RELEASE}-rebalancer"


def test_node_eviction_is_off_unless_a_node_has_an_eviction_block(three) -> None:
    config = WebhookConfig.model_validate(_config(three, "rebalancer", "webhook.yaml"))
    assert [n.eviction for n in config.nodes] == [None, None, None]
    pod = named(three, "Deployment", "rebalancer")["spec"]["template"]["spec"]
    assert "eviction" not in {v["name"] for v in pod["volumes"]}


def test_node_eviction_loads_with_the_webhooks_loader_and_reads_secrets(eviction, tmp_path: Path) -> None:
    text = named(eviction, "ConfigMap", "rebalancer")["data"]["webhook.yaml"]
    path = tmp_path / "webhook.yaml"
    path.write_text(text)
    config = load_config(path)  # the rebalancer's own loader, as `mqttlb webhook --config` reads it
    controls = {n.name: n.eviction for n in config.nodes}
    hivemq, emqx, mosquitto, none = controls["node1"], controls["node2"], controls["node3"], controls["node4"]
    mount = Path(hr.EVICTION_MOUNT)
    assert isinstance(hivemq, HivemqControl) and hivemq.url == "http://hivemq-node1.mqtt.svc:9399"
    assert hivemq.token_file == mount / "node1" / hr.EVICTION_CREDENTIAL
    assert isinstance(emqx, EmqxControl) and (emqx.node, emqx.api_key) == ("emqx@emqx-node2.mqtt.svc", "mqttlb")
    assert emqx.api_secret_file == mount / "node2" / hr.EVICTION_CREDENTIAL
    assert isinstance(mosquitto, MosquittoControl) and mosquitto.username == "mqttlb-control"
    assert mosquitto.password_file == mount / "node3" / hr.EVICTION_CREDENTIAL
    assert mosquitto.client_id == contract.EVICTION_CONTROL_CLIENT_ID and none is None
    # every credential file is a key of the named Secret in the rebalancer's projected volume, none inline
    pod = named(eviction, "Deployment", "rebalancer")["spec"]["template"]["spec"]
    (mounted,) = [m for m in pod["containers"][0]["volumeMounts"] if m["name"] == "eviction"]
    assert mounted == {"name": "eviction", "mountPath": hr.EVICTION_MOUNT, "readOnly": True}
    (volume,) = [v for v in pod["volumes"] if v["name"] == "eviction"]
    files = {
        mount / item["path"]: (source["secret"]["name"], item["key"])
        for source in volume["projected"]["sources"]
        for item in source["secret"]["items"]
    }
    assert files == {
        hivemq.token_file: ("hivemq-mqttlb", "token"),
        emqx.api_secret_file: ("emqx-api", "secret"),
        mosquitto.password_file: ("mosquitto-control", "password"),
    }
    assert "secret:" not in text.replace("api_secret_file", "")
    assert named(eviction, "Deployment", "rebalancer")["spec"]["template"]["metadata"]["annotations"]["checksum/config"]


def test_two_replicas_share_a_claim_under_the_lease(ha) -> None:
    config = WebhookConfig.model_validate(_config(ha, "rebalancer", "webhook.yaml"))
    assert config.lease is not None and config.lease.kind == "kubernetes"
    assert (config.lease.duration_seconds, config.lease.renew_seconds) == (10, 1)
    assert config.dry_run is True and config.cluster == "prod-eu"
    assert config.http_timeout_seconds == 5  # rebalancer.config merged over the generated config
    assert config.envoy_admin == "http://mqtt-edge-admin.edge.svc:9901"
    deployment = named(ha, "Deployment", "rebalancer")
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == "registry.example.com/mqttlb:0.1.0"
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    assert volumes["state"]["persistentVolumeClaim"]["claimName"] == f"{chart.RELEASE}-rebalancer"
    assert named(ha, "PersistentVolumeClaim", "rebalancer")["spec"]["accessModes"] == ["ReadWriteMany"]
    role = named(ha, "Role", "rebalancer-lease")
    grants = {(tuple(r.get("resourceNames", [])), tuple(r["verbs"])) for r in role["rules"]}
    assert grants == {((), ("create",)), ((config.lease.name,), ("get", "update"))}
    assert all(r["resources"] == ["leases"] and r["apiGroups"] == ["coordination.k8s.io"] for r in role["rules"])
    binding = named(ha, "RoleBinding", "rebalancer-lease")
    assert binding["subjects"][0]["name"] == deployment["spec"]["template"]["spec"]["serviceAccountName"]
    assert not [d for d in by_kind(ha, "Deployment") if d["metadata"]["name"].endswith("-envoy")]
    xds = named(ha, "Service", "xds")
    assert xds["spec"]["publishNotReadyAddresses"] is True  # the standby serves xDS too


def test_the_broker_exporter_config_loads(three) -> None:
    config = parse_config(_config(three, "broker-exporter", "broker-exporter.yaml"), "chart")
    assert [(n.name, n.kind, n.address, n.metrics_url) for n in config.nodes] == [
        ("node1", "hivemq", "hivemq-node1.mqtt.svc:1883", "http://hivemq-node1.mqtt.svc:9399/metrics"),
        ("node2", "hivemq", "hivemq-node2.mqtt.svc:1883", "http://hivemq-node2.mqtt.svc:9399/metrics"),
        ("node3", "hivemq", "10.96.100.13:1883", "http://10.96.100.13:9399/metrics"),
    ]
    assert {n.cpu_cores for n in config.nodes} == {1.0}
    (deployment,) = [d for d in by_kind(three, "Deployment") if d["metadata"]["name"].endswith("-broker-exporter")]
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[:3] == ["broker-exporter", "--config", "/etc/mqttlb/broker-exporter.yaml"]


@pytest.mark.live
def test_envoy_validates_the_charts_bootstrap(three, tmp_path: Path) -> None:
    bootstrap = _config(three, "envoy", "envoy.yaml")
    ads = bootstrap["static_resources"]["clusters"][1]
    assert ads["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"] == {
        "address": f"{chart.RELEASE}-xds.{FQDN}", "port_value": 9645
    }
    assert bootstrap["dynamic_resources"]["ads_config"]["api_type"] == "GRPC"
    # Envoy's own per-endpoint series, which the envoy ServiceMonitor scrapes from every replica
    brokers = bootstrap["static_resources"]["clusters"][0]
    assert brokers["name"] == contract.ENVOY_CLUSTER and brokers["track_cluster_stats"] == {"per_endpoint_stats": True}
    # no injected-resource monitor (nothing writes a pressure file in Envoy's pod): the hard stop is the
    # listener's runtime connection limit, which the rebalancer sets over the admin API
    monitors = [m["name"] for m in bootstrap["overload_manager"]["resource_monitors"]]
    assert monitors == ["envoy.resource_monitors.global_downstream_max_connections"]
    assert "actions" not in bootstrap["overload_manager"]
    config = WebhookConfig.model_validate(_config(three, "rebalancer", "webhook.yaml"))
    (listener,) = bootstrap["static_resources"]["listeners"]
    assert config.hard_stop_listener == listener["name"] and config.overload_file is None
    path = tmp_path / "envoy.yaml"
    path.write_text(yaml.safe_dump(bootstrap))
    envoy = find_binary("envoy")
    assert envoy is not None
    result = subprocess.run([envoy, "--mode", "validate", "-c", str(path), "--log-level", "warning"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    bootstrap["static_resources"]["clusters"][0]["lb_policy"] = "NO_SUCH_POLICY"  # and it refuses a broken one
    path.write_text(yaml.safe_dump(bootstrap))
    result = subprocess.run([envoy, "--mode", "validate", "-c", str(path), "--log-level", "warning"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode != 0


def test_envoy_sends_the_xds_token_from_the_secret_never_inline(three, three_text, tmp_path: Path) -> None:
    secret = named(three, "Secret", "tokens")
    token = base64.b64decode(secret["data"][hr.XDS_TOKEN_KEY]).decode()
    assert token != base64.b64decode(secret["data"][hr.WEBHOOK_TOKEN_KEY]).decode()
    (service,) = _config(three, "envoy", "envoy.yaml")["dynamic_resources"]["ads_config"]["grpc_services"]
    assert service["initial_metadata"] == [{"key": "authorization", "value": f"Bearer {builders.XDS_TOKEN_SLOT}"}]
    pod = named(three, "Deployment", "envoy")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert volumes["tokens"]["secret"] == {
        "secretName": secret["metadata"]["name"],
        "items": [{"key": hr.XDS_TOKEN_KEY, "path": hr.XDS_TOKEN_KEY}],  # not the webhook's own token
    }
    assert volumes["run"]["emptyDir"]["medium"] == "Memory"
    command = container["command"]
    token_file, template, filled, envoy = command[4:8]
    assert token_file == f"{mounts['tokens']}/{hr.XDS_TOKEN_KEY}" and Path(filled).parent == Path(mounts["run"])
    assert Path(template).parent == Path(mounts["config"]) and command[command.index("-c", 4) + 1] == filled
    assert token not in three_text and three_text.count(secret["data"][hr.XDS_TOKEN_KEY]) == 1  # the Secret only
    rebalancer = WebhookConfig.model_validate(_config(three, "rebalancer", "webhook.yaml"))
    assert rebalancer.xds_token_file == Path(mounts["tokens"]) / hr.XDS_TOKEN_KEY
    # the command itself, run on these files, writes the bootstrap with the Secret's token that Envoy accepts
    (tmp_path / "token").write_text(token)
    (tmp_path / "envoy.yaml").write_text(named(three, "ConfigMap", "envoy")["data"]["envoy.yaml"])
    binary = find_binary("envoy")
    assert binary is not None
    local = {token_file: tmp_path / "token", template: tmp_path / "envoy.yaml", filled: tmp_path / "filled.yaml",
             envoy: binary}
    run = [str(local.get(arg, arg)) for arg in command] + ["--mode", "validate"]
    result = subprocess.run(run, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    (service,) = yaml.safe_load((tmp_path / "filled.yaml").read_text())["dynamic_resources"]["ads_config"][
        "grpc_services"
    ]
    assert service["initial_metadata"] == [{"key": "authorization", "value": f"Bearer {token}"}]


def test_envoys_admin_port_takes_only_the_pods_that_use_it_and_mqtt_stays_open(three) -> None:
    def pod_labels(suffix: str) -> dict[str, str]:
        labels: dict[str, str] = named(three, "Deployment", suffix)["spec"]["template"]["metadata"]["labels"]
        return labels

    policy = named(three, "NetworkPolicy", "envoy-admin")["spec"]
    assert policy["podSelector"] == {"matchLabels": pod_labels("envoy")} and policy["policyTypes"] == ["Ingress"]
    mqtt, admin = policy["ingress"]
    assert mqtt == {"ports": [{"port": 1883, "protocol": "TCP"}]}  # no `from`: every source
    assert admin["ports"] == [{"port": 9901, "protocol": "TCP"}]
    rebalancer, exporter, prometheus = admin["from"]
    assert rebalancer == {"podSelector": {"matchLabels": pod_labels("rebalancer")}}
    assert exporter == {"podSelector": {"matchLabels": pod_labels("envoy-exporter")}}
    # Prometheus scrapes Envoy's stats on the admin port (the envoy ServiceMonitor): its namespace AND pods
    (envoy_monitor,) = named(three, "ServiceMonitor", "envoy")["spec"]["endpoints"]
    assert envoy_monitor["port"] == "admin" and envoy_monitor["path"] == "/stats/prometheus"
    assert prometheus == {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}},
        "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}},
    }
    off = chart.objects(chart.template([THREE], {"envoy.adminNetworkPolicy.enabled": "false"}))
    assert by_kind(off, "NetworkPolicy") == []
    unscraped = chart.objects(chart.template([THREE], {"monitoring.serviceMonitors": "false"}))
    assert len(by_kind(unscraped, "NetworkPolicy")[0]["spec"]["ingress"][1]["from"]) == 2


# ------------------------------------------------------------------ refusals
@pytest.mark.parametrize(
    ("values", "settings", "reason"),
    [
        ([], {}, "brokers.nodes: list at least one broker node"),
        ([THREE], {"rebalancer.replicas": "2"}, "the replicas share the state file"),
        ([THREE], {"rebalancer.replicas": "2", "rebalancer.lease.enabled": "false"}, "needs rebalancer.lease.enabled"),
        ([THREE], {"envoy.enabled": "false"}, "set envoy.host"),
        ([THREE], {"brokers.nodes[0].ip": "hivemq-node1"}, "/brokers/nodes/0/ip"),
        ([THREE], {"rebalancer.replica": "2"}, "additional properties 'replica' not allowed"),
        ([EVICTION], {"brokers.nodes[0].eviction.kind": "vernemq"}, "/brokers/nodes/0/eviction/kind"),
        ([EVICTION], {"brokers.nodes[1].eviction.username": "x"}, "/brokers/nodes/1/eviction"),
        ([EVICTION], {"brokers.nodes[2].eviction.secret.token": "inline"}, "additional properties 'token'"),
        # what the rebalancer would refuse at start (a crash loop) is refused at install
        ([THREE], {"brokers.nodes[1].name": "node1"}, 'brokers.nodes: the name "node1" is listed twice'),
        ([THREE], {"brokers.nodes[0].ip": "999.1.1.1"}, "/brokers/nodes/0/ip"),
        ([THREE], {"brokers.nodes[0].ip": "1::2::3"}, "/brokers/nodes/0/ip"),
        ([THREE], {"rebalancer.config.params_overrides.mqtt_cluster_label": "cluster"},
         "rebalancer.config.params_overrides: the rules"),
        # a rule-affecting parameter would change the rebalancer but not the PrometheusRules: refused, with the way
        ([THREE], {"rebalancer.config.params_overrides.cpu_high": "0.6"}, "helm_render --params my-params.yaml --out"),
    ],
)
def test_bad_values_are_refused_by_name(values: list[Path], settings: dict[str, str], reason: str) -> None:
    with pytest.raises(chart.HelmError, match=re.escape(reason)):
        chart.template(values, settings)


def test_ipv4_and_ipv6_broker_addresses_pass_the_schema() -> None:
    for ip in ("10.96.100.11", "255.255.255.255", "fd00::11", "::1", "2001:db8:0:0:0:0:0:1"):
        config = _config(chart.objects(chart.template([THREE], {"brokers.nodes[0].ip": ip})), "rebalancer",
                         "webhook.yaml")
        assert WebhookConfig.model_validate(config).nodes[0].host == ip


def test_a_chart_rendered_for_own_params_keeps_alerts_and_rebalancer_in_step(tmp_path: Path) -> None:
    params = tmp_path / "my-params.yaml"
    params.write_text("cpu_high: 0.6\n")
    out = tmp_path / "chart"
    assert hr.main(["--params", str(params), "--out", str(out)]) == 0
    objects = chart.objects(chart.template([THREE], chart_dir=out))
    rebalancer = WebhookConfig.model_validate(_config(objects, "rebalancer", "webhook.yaml"))
    assert rebalancer.params().cpu_high == 0.6
    alerts = named(objects, "PrometheusRule", "alerts")["spec"]
    (high,) = [r for g in alerts["groups"] for r in g["rules"] if r.get("alert") == contract.ALERT_CPU_HIGH]
    assert high["expr"].endswith("> 0.6")
    assert hr.main(["--params", str(params)]) != 0  # never into the repository's chart
    assert hr.drift(hr.render_files()) == []


@pytest.mark.parametrize(
    ("node", "eviction", "reason"),
    [
        (0, {"kind": "hivemq", "url": "http://hivemq-node1.mqtt.svc:9399"}, "missing property 'secret'"),
        (1, {"kind": "emqx", "url": "http://e:18083", "apiKey": "k", "secret": {"name": "s", "key": "k"}},
         "missing property 'node'"),
        (2, {"kind": "mosquitto", "secret": {"name": "s", "key": "k"}},
         "properties 'username' required, if 'secret' exists"),
    ],
)
def test_an_eviction_block_without_what_its_kind_needs_is_refused(
    node: int, eviction: dict[str, Any], reason: str, tmp_path: Path
) -> None:
    values = yaml.safe_load(EVICTION.read_text())
    values["brokers"]["nodes"][node]["eviction"] = eviction
    path = tmp_path / "values.yaml"
    path.write_text(yaml.safe_dump(values))
    where = re.escape(f"/brokers/nodes/{node}/eviction")
    with pytest.raises(chart.HelmError, match=f"{where}(.|\n)*{re.escape(reason)}"):
        chart.template([path])
