"""The Docker Compose stack: it parses, follows the Compose Specification, mounts files that exist,
shares rules/dashboards/provisioning with the local stack, and its generated configs are current."""

from __future__ import annotations

import configparser
import json
import os
import re
import subprocess
import tomllib
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import pytest
import yaml

from mqttlb import contract
from mqttlb.alertmanager_config import build as build_alertmanager_config
from mqttlb.cli import COMMANDS
from mqttlb.exporters.broker_config import parse_config as parse_broker_config
from mqttlb.rulegen import render_rule_files
from mqttlb.stack import builders
from mqttlb.stack import compose_render as cr
from mqttlb.stack.config import load_stack_config
from mqttlb.stack.topology import (
    CONTAINER_STATE,
    ENVOY_CONFIG_MOUNT,
    ENVOY_NOFILE,
    ENVOY_RUN_DIR,
    MQTT_PORT,
    compose_topology,
)
from mqttlb.webhook.config import WebhookConfig

REPO = Path(__file__).resolve().parent.parent
STACK = REPO / "stack"
SCHEMA = REPO / "tests" / "fixtures" / "compose-spec.json"


def load(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load(cr.COMPOSE_FILE)


def bind_mounts(service: dict[str, Any]) -> dict[str, Path]:
    """container target -> host source (resolved against stack/) of every bind mount (short syntax)."""
    mounts = {}
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith((".", "/")):
            mounts[target] = (STACK / source).resolve()
    return mounts


def hivemq_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: s for name, s in compose["services"].items() if s.get("image") == cr.IMAGES["hivemq"]}


# ------------------------------------------------------------------ the file itself
def test_docker_compose_parses_the_file():
    env = {k: v for k, v in os.environ.items() if k not in ("HIVEMQ_LICENSE", "GRAFANA_ADMIN_PASSWORD")}
    result = subprocess.run(
        ["docker-compose", "-f", str(cr.COMPOSE_FILE), "config"],
        capture_output=True, text=True, timeout=60, env=env, cwd=REPO,
    )
    assert result.returncode == 0, result.stderr
    parsed = yaml.safe_load(result.stdout)
    expected = {"init", "hivemq1", "hivemq2", "hivemq3", "envoy", "broker-exporter", "envoy-exporter",
                "webhook", "alertmanager", "prometheus", "grafana"}
    assert set(parsed["services"]) == expected
    assert "WARNING" not in result.stderr, result.stderr


def test_docker_compose_rejects_a_broken_file(tmp_path):
    broken = load(cr.COMPOSE_FILE)
    broken["services"]["envoy"]["depends_on"]["nosuchservice"] = {"condition": "service_started"}
    path = tmp_path / "docker-compose.yml"
    path.write_text(yaml.safe_dump(broken))
    result = subprocess.run(["docker-compose", "-f", str(path), "config"], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode != 0
    assert "nosuchservice" in result.stderr


def test_file_validates_against_the_compose_specification(compose):
    schema = json.loads(SCHEMA.read_text())
    assert schema["title"] == "Compose Specification"
    jsonschema.Draft7Validator.check_schema(schema)
    jsonschema.Draft7Validator(schema).validate(compose)


def test_the_schema_catches_a_wrong_key(compose):
    validator = jsonschema.Draft7Validator(json.loads(SCHEMA.read_text()))
    wrong = yaml.safe_load(yaml.safe_dump(compose))
    wrong["services"]["envoy"]["portz"] = ["1883:1883"]
    errors = list(validator.iter_errors(wrong))
    assert errors and any("portz" in e.message for e in errors)


# ------------------------------------------------------------------ generated configs
def test_generated_compose_files_are_up_to_date():
    diffs = cr.drift(cr.render_files())
    assert diffs == [], "run `python -m mqttlb.stack.compose_render`:\n" + "\n".join(diffs)


def test_drift_check_reports_a_changed_file():
    files = cr.render_files()
    envoy = cr.COMPOSE_DIR / "envoy.yaml"
    files[envoy] = files[envoy].replace("connect_timeout: 1s", "connect_timeout: 9s", 1)
    diffs = cr.drift(files)
    assert len(diffs) == 1 and re.search(r"^\+ +connect_timeout: 9s$", diffs[0], re.M)
    assert cr.main(["--check"]) == 0


def test_render_is_deterministic_and_ignores_the_shell_environment(monkeypatch):
    first = cr.render_files()
    monkeypatch.setenv("MQTTLB_NODES", "5")
    monkeypatch.setenv("MQTTLB_PORT_WEBHOOK", "19643")
    assert cr.render_files() == first


def test_every_generated_file_is_world_readable():
    # The files are bind-mounted into containers running as nobody (Prometheus, Alertmanager)
    # and uid 10000 (HiveMQ).
    for path in cr.render_files():
        assert path.stat().st_mode & 0o044 == 0o044, f"{path} is not readable by others"


# ------------------------------------------------------------------ mounts: exist, one source
def test_every_bind_mount_and_build_context_exists(compose):
    checked = 0
    for name, service in compose["services"].items():
        for target, source in bind_mounts(service).items():
            assert source.exists(), f"{name}: {source} (mounted at {target}) does not exist"
            assert REPO in source.parents, f"{name}: {source} is outside the repository"
            checked += 1
        if "build" in service:
            context = (STACK / service["build"]["context"]).resolve()
            assert (context / service["build"].get("dockerfile", "Dockerfile")).is_file(), name
    assert checked >= 12


def test_dashboards_and_provisioning_come_from_their_one_location_and_rules_link_the_served_runbooks(compose):
    prometheus = bind_mounts(compose["services"]["prometheus"])
    grafana = bind_mounts(compose["services"]["grafana"])
    topo = compose_topology(cr.compose_config())
    rules_target = str(topo.files.prometheus_rules)
    assert prometheus[rules_target] == cr.COMPOSE_DIR / cr.RULES_DIR
    assert grafana[cr.GRAFANA_DASHBOARDS_MOUNT] == REPO / "dashboards" / "generated"
    for kind in ("datasources", "dashboards"):
        assert grafana[f"/etc/grafana/provisioning/{kind}"] == STACK / "grafana" / "provisioning" / kind

    # the compose rules are rules/*.yml but for each alert's runbook_url: absolute, at the webhook's /runbooks
    # on its published host port (a browser on the Docker host opens it; the route needs no credential)
    shipped = {p.name: p.read_text() for p in (REPO / "rules").glob("*.yml")}
    assert render_rule_files(load_stack_config(env={}).params) == shipped
    ours = {p.name: p.read_text() for p in (cr.COMPOSE_DIR / cr.RULES_DIR).glob("*.yml")}
    assert sorted(ours) == sorted(shipped)
    port = cr.compose_config().ports.webhook
    assert f"127.0.0.1:{port}:{port}" in compose["services"]["webhook"]["ports"]
    urls = []
    for name, text in ours.items():
        for line, same in zip(text.splitlines(), shipped[name].splitlines(), strict=True):
            if line != same:
                key, url = line.split(": ")
                assert key.strip() == "runbook_url" and same == f"{key}: docs/runbooks/{url.rsplit('/', 1)[1]}"
                urls.append(url)
    assert urls and all(u.startswith(f"http://127.0.0.1:{port}/runbooks/") for u in urls)

    # Prometheus loads the mounted rules; Grafana's provider reads the mounted dashboards
    rule_globs = load(cr.COMPOSE_DIR / "prometheus.yml")["rule_files"]
    assert rule_globs == [f"{rules_target}/*.yml"]
    provider = load(STACK / "grafana" / "provisioning" / "dashboards" / "mqttlb.yml")["providers"][0]
    assert provider["options"]["path"] == cr.GRAFANA_DASHBOARDS_MOUNT
    assert list((REPO / "dashboards" / "generated").glob("*.json"))

    # no copies of the dashboards under stack/compose
    assert [p for p in cr.COMPOSE_DIR.rglob("*.json")] == []


def test_grafana_datasource_points_at_the_compose_prometheus(compose):
    datasource = load(STACK / "grafana" / "provisioning" / "datasources" / "mqttlb.yml")["datasources"][0]
    url = urlsplit(datasource["url"])
    assert url.hostname == "prometheus" and url.hostname in compose["services"]
    assert url.port == cr.compose_config().ports.prometheus
    assert f"--web.listen-address=0.0.0.0:{url.port}" in compose["services"]["prometheus"]["command"]
    # ... with the stack's web login, the password read from the state volume Grafana mounts
    topo = compose_topology(cr.compose_config())
    assert (datasource["basicAuth"], datasource["basicAuthUser"]) == (True, builders.WEB_USER)
    assert datasource["secureJsonData"]["basicAuthPassword"] == f"$__file{{{topo.state.web_password}}}"
    assert f"mqttlb-state:{topo.state.root}:ro" in compose["services"]["grafana"]["volumes"]


def test_prometheus_scrapes_every_job_at_a_compose_service(compose):
    compose_prom = load(cr.COMPOSE_DIR / "prometheus.yml")
    jobs = {j["job_name"]: j["static_configs"][0]["targets"] for j in compose_prom["scrape_configs"]}
    assert set(contract.JOBS) < set(jobs)
    published = {int(m.split(":")[2]) for s in compose["services"].values() for m in s.get("ports", [])}
    for job, targets in jobs.items():
        for target in targets:
            host, port = target.split(":")
            assert host in compose["services"], f"{job}: {target} is not a compose service"
            assert int(port) in published or compose["services"][host]["image"] == cr.IMAGES["hivemq"], target


def test_alertmanager_routes_to_the_webhook_with_the_shared_token(compose):
    cfg = cr.compose_config()
    config = load(cr.COMPOSE_DIR / "alertmanager.yml")
    native = build_alertmanager_config(cfg.params, "http://127.0.0.1:9643/alerts", "/x/token")
    assert config["route"] == native["route"] and config["inhibit_rules"] == native["inhibit_rules"]
    webhook = load(cr.COMPOSE_DIR / "webhook.yaml")
    receivers = {r["name"]: r for r in config["receivers"]}
    hook = receivers["mqttlb-webhook"]["webhook_configs"][0]
    assert urlsplit(hook["url"]).netloc == f"webhook:{cfg.ports.webhook}"
    assert hook["http_config"]["authorization"]["credentials_file"] == webhook["token_file"]
    assert receivers["page"] == {"name": "page"}  # pages never go through the webhook
    state_volume = f"mqttlb-state:{CONTAINER_STATE}"
    assert f"{state_volume}:ro" in compose["services"]["alertmanager"]["volumes"]
    assert state_volume in compose["services"]["webhook"]["volumes"]


# ------------------------------------------------------------------ HiveMQ, exporter, webhook, Envoy
def test_broker_exporter_reads_each_hivemq_node_through_the_prometheus_extension(compose):
    exporter = parse_broker_config(load(cr.COMPOSE_DIR / "broker-exporter.yaml"), "broker-exporter.yaml")
    properties = configparser.ConfigParser()
    properties.read_string("[extension]\n" + (cr.COMPOSE_DIR / "hivemq" / "prometheus-extension.properties")
                           .read_text())
    extension = properties["extension"]
    assert extension["ip"] == "0.0.0.0"
    hivemq = hivemq_services(compose)
    assert len(exporter.nodes) == len(hivemq) == 3
    for node in exporter.nodes:
        assert node.kind == "hivemq"
        url = urlsplit(node.metrics_url or "")
        assert url.hostname in hivemq
        assert url.port == int(extension["port"]) and url.path == extension["metric_path"]
        mounts = bind_mounts(hivemq[url.hostname])
        shipped = cr.COMPOSE_DIR / "hivemq" / "prometheus-extension.properties"
        assert mounts[cr.HIVEMQ_EXTENSION_CONFIG_MOUNT] == shipped
        assert node.address == f"{url.hostname}:{MQTT_PORT}"
    assert exporter.listen == f"0.0.0.0:{cr.compose_config().ports.broker_exporter}"


def test_hivemq_image_holds_the_mqttlb_extension_with_its_settings_and_token(compose):
    # The Dockerfile copies the extension folder `make compose` puts in the build context (not committed).
    dockerfile = (cr.COMPOSE_DIR / "hivemq" / "Dockerfile").read_text()
    folder = f"{cr.HIVEMQ_HOME}/extensions/{cr.MQTTLB_EXTENSION_FOLDER}/"
    assert f"COPY --chown=10000:0 {cr.MQTTLB_EXTENSION_FOLDER}/ {folder}" in dockerfile
    assert f"stack/compose/hivemq/{cr.MQTTLB_EXTENSION_FOLDER}/" in (REPO / ".gitignore").read_text().splitlines()
    makefile = (REPO / "Makefile").read_text()
    built = "brokers/hivemq/target/mqttlb-extension/mqttlb-extension"
    assert f"{built} stack/compose/hivemq/{cr.MQTTLB_EXTENSION_FOLDER}" in makefile
    # Its settings: only keys the extension's shipped conf/config.properties has, on a port of its own.
    settings = configparser.ConfigParser()
    settings.read_string("[x]\n" + (cr.COMPOSE_DIR / "hivemq" / "mqttlb-extension.properties").read_text())
    shipped = configparser.ConfigParser()
    shipped.read_string("[x]\n" + (REPO / "brokers/hivemq/src/main/extension/conf/config.properties").read_text())
    assert set(settings["x"]) <= set(shipped["x"])
    assert int(settings["x"]["port"]) == cr.MQTTLB_EXTENSION_PORT != cr.HIVEMQ_METRICS_PORT
    assert settings["x"]["shared_sessions"] == "true"  # the image's nodes form one HiveMQ cluster
    # Every node mounts the settings and, read-only, the state volume holding the token the init service creates.
    token = Path(settings["x"]["token_file"])
    state = compose_topology(cr.compose_config()).state
    assert token == state.hivemq_token
    rendered = cr.COMPOSE_DIR / "hivemq" / "mqttlb-extension.properties"
    for service in hivemq_services(compose).values():
        assert bind_mounts(service)[cr.MQTTLB_EXTENSION_CONFIG_MOUNT] == rendered
        assert f"mqttlb-state:{state.root}:ro" in service["volumes"] and token.is_relative_to(state.root)
        assert service["depends_on"] == {"init": {"condition": "service_completed_successfully"}}


def test_hivemq_nodes_form_one_cluster_at_the_addresses_envoy_balances_over(compose):
    hivemq = hivemq_services(compose)
    ips = {name: s["networks"]["mqttlb"]["ipv4_address"] for name, s in hivemq.items()}
    for name, service in hivemq.items():
        assert service["environment"]["HIVEMQ_BIND_ADDRESS"] == ips[name]
        assert service["hostname"] == name
    root = ET.fromstring((cr.COMPOSE_DIR / "hivemq" / "config.xml").read_text())
    assert root.findtext("cluster/enabled") == "true"
    assert root.findtext("cluster/transport/tcp/bind-address") == "${HIVEMQ_BIND_ADDRESS}"
    static = {(n.findtext("host"), n.findtext("port")) for n in root.findall("cluster/discovery/static/node")}
    assert static == {(ip, str(cr.HIVEMQ_CLUSTER_PORT)) for ip in ips.values()}
    assert root.findtext("listeners/tcp-listener/port") == str(MQTT_PORT)

    webhook = WebhookConfig.model_validate(load(cr.COMPOSE_DIR / "webhook.yaml"))
    webhook.params()
    exporter = load(cr.COMPOSE_DIR / "broker-exporter.yaml")
    assert webhook.node_names == [n["name"] for n in exporter["nodes"]]
    assert {n.host for n in webhook.nodes} == set(ips.values())  # EDS needs IPs, not names
    assert all(n.port == MQTT_PORT for n in webhook.nodes)
    subnet = compose["networks"]["mqttlb"]["ipam"]["config"][0]["subnet"]
    assert all(ip.startswith(subnet.rsplit(".", 1)[0] + ".") for ip in ips.values())


def test_envoy_fetches_eds_over_ads_with_the_token_and_shares_its_pressure_file(compose):
    cfg = cr.compose_config()
    envoy = load(cr.COMPOSE_DIR / "envoy.yaml")
    clusters = {c["name"]: c for c in envoy["static_resources"]["clusters"]}
    assert clusters[cfg.envoy_cluster]["eds_cluster_config"]["eds_config"]["ads"] == {}
    (service,) = envoy["dynamic_resources"]["ads_config"]["grpc_services"]
    assert service["initial_metadata"] == [{"key": "authorization", "value": f"Bearer {builders.XDS_TOKEN_SLOT}"}]
    (endpoint,) = clusters[service["envoy_grpc"]["cluster_name"]]["load_assignment"]["endpoints"][0]["lb_endpoints"]
    webhook = load(cr.COMPOSE_DIR / "webhook.yaml")
    xds_port = int(webhook["xds_grpc_listen"].split(":")[1])
    assert endpoint["endpoint"]["address"]["socket_address"] == {"address": "webhook", "port_value": xds_port}
    assert "open_routes" not in webhook  # every webhook route wants the token: Envoy sends it over ADS
    # the start script reads the xDS token (not the webhook's) and writes Envoy's copy into its tmpfs
    command = compose["services"]["envoy"]["command"]
    assert command[:2] == ["/bin/sh", "-c"] and command[4:7] == [webhook["xds_token_file"], *map(str, (
        ENVOY_CONFIG_MOUNT, ENVOY_RUN_DIR / "envoy.yaml"))]
    assert compose["services"]["envoy"]["tmpfs"] == [str(ENVOY_RUN_DIR)]
    assert envoy["admin"]["address"]["socket_address"]["address"] == "0.0.0.0"
    monitor = envoy["overload_manager"]["resource_monitors"][0]["typed_config"]
    assert monitor["filename"] == webhook["overload_file"]
    assert monitor["filename"].startswith(f"{CONTAINER_STATE}/")
    # Envoy mounts its two volumes, not the state volume with the webhook's token; only it and the webhook (and the
    # init service that creates it) mount the xDS token's
    envoy_mounts = compose["services"]["envoy"]["volumes"][1:]
    assert envoy_mounts == [f"{cr.ENVOY_VOLUME}:{Path(webhook['overload_file']).parent}:ro",
                            f"{cr.XDS_VOLUME}:{Path(webhook['xds_token_file']).parent}:ro"]
    readers = {name for name, s in compose["services"].items() if any(v.startswith(f"{cr.XDS_VOLUME}:")
                                                                       for v in s.get("volumes", []))}
    assert readers == {"init", "envoy", "webhook"}
    init = compose["services"]["envoy"]["depends_on"]["init"]
    assert init == {"condition": "service_completed_successfully"}


def test_published_ports_are_the_stack_ports_on_loopback(compose):
    p = cr.compose_config().ports
    published = {
        "envoy": {p.envoy_listener, p.envoy_admin},
        "broker-exporter": {p.broker_exporter},
        "envoy-exporter": {p.envoy_exporter},
        "webhook": {p.webhook},
        "alertmanager": {p.alertmanager},
        "prometheus": {p.prometheus},
        "grafana": {3000},
    }
    for name, ports in published.items():
        mappings = compose["services"][name]["ports"]
        assert all(m.startswith("127.0.0.1:") for m in mappings), mappings
        assert {int(m.split(":")[1]) for m in mappings} == ports == {int(m.split(":")[2]) for m in mappings}
    docs = (REPO / "docs" / "docker.md").read_text()
    for ports in published.values():
        for port in ports:
            assert re.search(rf"\b{port}\b", docs), f"docs/docker.md does not mention port {port}"


def test_mqttlb_services_run_known_subcommands(compose):
    for name, service in compose["services"].items():
        if service.get("image") == cr.IMAGES["mqttlb"] and "entrypoint" not in service:
            assert service["command"][0] in COMMANDS, name
    assert compose["services"]["envoy-exporter"]["command"] == [
        "envoy-exporter", "--listen", "0.0.0.0:9642", "--envoy-admin", "http://envoy:9901", "--timeout", "2",
        "--web-token-file", "/mqttlb/exporters/token"]


def test_dockerfile_installs_the_project_with_the_mqttlb_entrypoint():
    text = (REPO / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim$", text, re.M)
    assert re.search(r"^RUN pip install \.", text, re.M)
    assert re.search(r'^ENTRYPOINT \["mqttlb"\]$', text, re.M)
    ignored = {line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")}
    copied = []
    for match in re.finditer(r"^COPY (.+) \S+$", text, re.M):
        for source in match.group(1).split():
            assert (REPO / source).exists(), source
            assert source not in ignored, f"{source} is copied but excluded by .dockerignore"
            copied.append(source)
    setuptools = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    sources = {"mqttlb", *setuptools["package-dir"].values()}
    for source in sources:
        assert source in copied, f"{source} (packaged by pyproject.toml) is not copied into the image"
    assert "README.md" in copied  # pyproject's readme


def test_compose_envoy_cap_matches_the_container_open_files_limit(compose):
    envoy = compose["services"]["envoy"]
    assert envoy["ulimits"]["nofile"] == {"soft": ENVOY_NOFILE, "hard": ENVOY_NOFILE}
    config = load(STACK / "compose" / "envoy.yaml")
    (monitor,) = [
        m
        for m in config["overload_manager"]["resource_monitors"]
        if m["name"] == "envoy.resource_monitors.global_downstream_max_connections"
    ]
    assert monitor["typed_config"]["max_active_downstream_connections"] == (ENVOY_NOFILE - 256) // 2


def test_grafana_gets_a_generated_admin_password_not_admin_admin(compose, tmp_path):
    grafana = compose["services"]["grafana"]
    assert "GF_SECURITY_ADMIN_PASSWORD" not in grafana["environment"]
    secret = grafana["environment"]["GF_SECURITY_ADMIN_PASSWORD__FILE"]
    assert secret == f"/run/secrets/{cr.GRAFANA_SECRET}" and grafana["secrets"] == [cr.GRAFANA_SECRET]
    assert compose["secrets"][cr.GRAFANA_SECRET] == {"file": f"./compose/{cr.GRAFANA_PASSWORD_NAME}"}
    assert f"stack/compose/{cr.GRAFANA_PASSWORD_NAME}" in (REPO / ".gitignore").read_text()
    written = cr.write_grafana_password(tmp_path)
    assert written is not None and len(written.read_text().strip()) >= 20 and written.read_text().strip() != "admin"
    first = written.read_text()
    assert cr.write_grafana_password(tmp_path) is None and written.read_text() == first  # kept, not rotated
