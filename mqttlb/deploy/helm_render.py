"""Render the Helm chart's generated files (deploy/helm/mqttlb/files/) from the product's own builders.

The chart's templates (deploy/helm/mqttlb/templates/, written by hand) hold only Kubernetes objects.
Everything mqttlb-specific inside them is read from ``files/``, which this module writes from the same
sources as the local and compose stacks, so nothing is written twice:

=============================  ==========================================================================
``files/rules/*.yml``          :func:`mqttlb.rulegen.render_rule_files` -- the bytes of ``rules/*.yml``
                               (the PrometheusRule objects embed them with ``.Files.Get``)
``files/rules-cadvisor/*.yml`` the recording rules with ``broker_cpu.source: cadvisor`` (used instead of
                               ``files/rules/``'s when ``monitoring.brokerCpuSource`` is ``cadvisor``)
``files/dashboards/*.json``    :func:`mqttlb.dashboards.build.render_dashboards` -- the bytes of
                               ``dashboards/generated/*.json`` (one ConfigMap each)
``files/webhook.yaml``         :func:`mqttlb.stack.builders.webhook_config` (the rebalancer's config)
``files/broker-exporter.yaml`` :func:`mqttlb.stack.builders.broker_exporter_config`
``files/envoy.yaml``           :func:`mqttlb.stack.builders.envoy_bootstrap` (ADS to the rebalancer's
                               gRPC xDS server; no injected-resource monitor, :func:`envoy_file`)
``files/args.yaml``            the components' command lines (``builders.*_args``; Envoy's whole command,
                               ``builders.envoy_command``: the start script that fills the token in)
``files/alertmanagerconfig.yaml``  :func:`mqttlb.alertmanager_config.build`, as an ``AlertmanagerConfig``
                               spec (prometheus-operator's field names; the bearer token from a Secret)
``files/topology.yaml``        ports, mount paths, job names, receivers, scrape interval, images
=============================  ==========================================================================

The builders are given a `Topology` of the compose kind (service names, container layout, HiveMQ nodes)
whose addresses are placeholders; this module swaps each placeholder for the Helm expression that
names the object in a release (``{{ include "mqttlb.envoyHost" $ }}``) or reads a value
(``$.Values.cluster``; ``$`` is the root, inside the nodes' ``range`` too).  The broker nodes are a
``range`` over ``.Values.brokers.nodes``, each entry the builder's own entry for one placeholder node.
The templates run these files through ``tpl``; the rule and dashboard files never go through ``tpl``
(they hold ``{{ $value }}`` and ``{{node}}``).

Keys a Kubernetes install sets itself, and so are not taken from the builders: the webhook's
``token_file`` and ``xds_token_file`` (the token Secret's mount; Envoy's pod mounts only its ``xds-token`` key,
which its start script reads into the ADS stream's metadata: never the webhook token, which Envoy's
unauthenticated admin interface would show), ``prometheus_url`` and ``alertmanager_urls`` (values), and
``prometheus_auth`` / ``alertmanager_auth`` (none; ``rebalancer.config`` in the values can add them).
The shed hard stop is ``hard_stop_listener`` (the MQTT listener's runtime connection limit, set over
Envoy's admin API) instead of ``overload_file``, and Envoy's bootstrap has no injected-resource monitor:
the rebalancer cannot write a file in Envoy's pod.  ``envoy_admin_all_addresses``: the cap and the hard
stop go to every address of the (headless) admin Service, i.e. every ready Envoy pod.
Each node's ``eviction`` block (mqttlb.brokers.control) is added by the chart's rebalancer ConfigMap from
``brokers.nodes[].eviction``, its credential a file under :data:`EVICTION_MOUNT` (a projected Secret).

    python -m mqttlb.deploy.helm_render            # (re)write deploy/helm/mqttlb/files/
    python -m mqttlb.deploy.helm_render --check    # exit 1 and print a diff if a committed file is stale
    python -m mqttlb.deploy.helm_render --params my-params.yaml --out DIR   # a copy of the chart for your params

``--params FILE`` holds overrides of ``mqttlb/params.yaml`` (the keys of the webhook's ``params_overrides``);
the rules, dashboards, Alertmanager routes and the rebalancer's config of the copy written to ``DIR`` all
come from them, so alerts and rebalancer agree.  The chart refuses ``rebalancer.config.params_overrides``
for that reason: its values cannot re-render the rules.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import shutil
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import yaml

from mqttlb import contract
from mqttlb.alertmanager_config import build as build_alertmanager_config
from mqttlb.atomic import atomic_write_text
from mqttlb.commandline import parse_args, refuse
from mqttlb.dashboards.build import render_dashboards
from mqttlb.drift import find_drift, report
from mqttlb.logs import add_log_flags
from mqttlb.params import Params, ParamsError, load_params
from mqttlb.rulegen import RECORDING_FILE, dump_yaml, render_rule_files
from mqttlb.shipped import PACKAGE_DIR, RUNBOOKS, checkout_root
from mqttlb.stack import builders
from mqttlb.stack.compose_render import IMAGES, compose_config
from mqttlb.stack.config import StackConfig
from mqttlb.stack.topology import (
    ANY_ADDRESS,
    ENVOY_NOFILE,
    BrokerNode,
    Service,
    Switches,
    Topology,
    topology,
)
from mqttlb.yamlfile import load_yaml_mapping

log = logging.getLogger(__name__)

# The chart lives in the source checkout only (the wheel does not ship it): `main` refuses elsewhere, so an
# installed mqttlb never writes next to site-packages.
CHART_DIR = PACKAGE_DIR.parent / "deploy" / "helm" / "mqttlb"
FILES_DIR = CHART_DIR / "files"
CADVISOR_RULES = "rules-cadvisor"  # folder of files/ with the recording rules on cAdvisor CPU
REGENERATE = "python -m mqttlb.deploy.helm_render"

# The chart's Envoy takes its endpoints over gRPC ADS (state of the world) from the rebalancer; HiveMQ
# nodes (the broker exporter reads their Prometheus exposition); container paths; Envoy's open files.
K8S_SWITCHES = Switches(
    eds="grpc", addressing="service-names", brokers="hivemq", layout="container", envoy_open_files=ENVOY_NOFILE
)
# Where the rebalancer's pod mounts the token Secret (its ``token_file``).
SECRET_MOUNT = "/etc/mqttlb-secrets"  # not below /etc/mqttlb, where the config ConfigMap is mounted
WEBHOOK_TOKEN_KEY = "webhook-token"
XDS_TOKEN_KEY = "xds-token"  # the ADS streams' token: Envoy's pod mounts this key only
# Where the rebalancer's pod mounts the broker nodes' eviction credentials (values brokers.nodes[].eviction
# .secret, one projected Secret key per node): <EVICTION_MOUNT>/<node name>/<EVICTION_CREDENTIAL>.
EVICTION_MOUNT = "/etc/mqttlb-eviction"
EVICTION_CREDENTIAL = "credential"
EXPORTER_TOKEN_KEY = "exporter-token"

HEADER = (
    "# GENERATED by `python -m mqttlb.deploy.helm_render` from mqttlb/params.yaml and stack/stack.yaml\n"
    "# through mqttlb/stack/builders.py -- do not edit by hand; tests/test_helm_chart.py checks it.\n"
    "# The chart's templates read it through `tpl`: the double-brace expressions below are Helm's.\n"
)

# --- placeholders: what the builders are given, and the Helm expression each becomes -----------------
# A placeholder that is a whole YAML scalar becomes ``{{ EXPR | toJson }}`` (quoted, typed); inside a
# longer string it becomes ``{{ EXPR }}`` (host names and URLs, checked by values.schema.json).
PLACEHOLDERS: dict[str, str] = {
    "MQTTLBK8S_CLUSTER": "$.Values.cluster",
    "MQTTLBK8S_DRY_RUN": "$.Values.rebalancer.dryRun",
    "MQTTLBK8S_CPU_CORES": "$.Values.brokers.cpuCores",
    "MQTTLBK8S_PROMETHEUS_URL": "$.Values.prometheus.url",
    "MQTTLBK8S_ALERTMANAGER_URLS": "$.Values.alertmanager.urls",
    "MQTTLBK8S_ENVOY_HOST": '(include "mqttlb.envoyHost" $)',
    "MQTTLBK8S_REBALANCER_HOST": '(include "mqttlb.rebalancerHost" $)',
    "MQTTLBK8S_XDS_HOST": '(include "mqttlb.xdsHost" $)',
}
NODES_PLACEHOLDER = "MQTTLBK8S_NODES"
# One broker node: the values entry's fields (values.schema.json: brokers.nodes[]).
NODE_PLACEHOLDERS: dict[str, str] = {
    "MQTTLBNODE_NAME": "$node.name",
    "MQTTLBNODE_HOST": "($node.host | default $node.ip)",
    "MQTTLBNODE_IP": "$node.ip",
    "MQTTLBNODE_METRICS_URL": "$node.metricsUrl",
}
NODE_PORT_PLACEHOLDER = 65431  # an int field: the builders put it in as a number
NODE_PORT_EXPR = "$node.port"


def k8s_settings(cfg: StackConfig) -> StackConfig:
    """``cfg`` with the settings a release chooses (values) as placeholders; not re-validated."""
    return cfg.model_copy(
        update={"cluster": "MQTTLBK8S_CLUSTER", "dry_run": "MQTTLBK8S_DRY_RUN", "node_cpu_cores": "MQTTLBK8S_CPU_CORES"}
    )


def k8s_topology(cfg: StackConfig | None = None) -> Topology:
    """The compose-kind topology of the chart: every part listens on 0.0.0.0 in its own pod and is reached
    through its Service (placeholder hosts); one placeholder broker node."""
    base = topology(k8s_settings(cfg or compose_config()), K8S_SWITCHES)

    def pod(service: Service, host: str) -> Service:
        return Service(service.name, ANY_ADDRESS, host, service.port)

    node = BrokerNode(
        name="MQTTLBNODE_NAME",
        service="MQTTLBNODE_NAME",
        host="MQTTLBNODE_HOST",
        ip="MQTTLBNODE_IP",
        port=NODE_PORT_PLACEHOLDER,
        pid_file=None,
        metrics_url="MQTTLBNODE_METRICS_URL",
    )
    return replace(
        base,
        nodes=(node,),
        envoy_listener=pod(base.envoy_listener, "MQTTLBK8S_ENVOY_HOST"),
        envoy_admin=pod(base.envoy_admin, "MQTTLBK8S_ENVOY_HOST"),
        webhook=pod(base.webhook, "MQTTLBK8S_REBALANCER_HOST"),
        webhook_xds=pod(base.webhook_xds, "MQTTLBK8S_XDS_HOST"),
    )


# --- placeholder -> Helm expression -------------------------------------------------------------------
def _helm(text: str, placeholders: dict[str, str]) -> str:
    """Swap every placeholder in ``text``: ``{{ EXPR | toJson }}`` where it is a whole scalar after ``: ``
    or ``- ``, ``{{ EXPR }}`` inside a longer string."""
    for token, expr in placeholders.items():
        text = re.sub(rf"(?m)(?<=: ){token}$|(?<=- ){token}$", "{{ " + expr + " | toJson }}", text)
        text = text.replace(token, "{{ " + expr + " }}")
    return text


def _node_range(entry: dict[str, Any]) -> str:
    """A YAML flow list with one ``entry`` (a builder's node entry, placeholders inside) per values node."""
    flow = json.dumps(entry, separators=(", ", ": "))
    flow = flow.replace(str(NODE_PORT_PLACEHOLDER), "{{ " + NODE_PORT_EXPR + " | int }}")
    for token, expr in {**NODE_PLACEHOLDERS, **PLACEHOLDERS}.items():
        flow = flow.replace(f'"{token}"', "{{ " + expr + " | toJson }}").replace(token, "{{ " + expr + " }}")
    return "[{{- range $i, $node := .Values.brokers.nodes }}{{ if $i }}, {{ end }}" + flow + "{{- end }}]"


def _leftover(text: str, name: str) -> str:
    """``text``, after checking no placeholder was left behind; ValueError naming it otherwise."""
    found = re.search(r"MQTTLB(K8S|NODE)_[A-Z_]+|" + str(NODE_PORT_PLACEHOLDER), text)
    if found:
        raise ValueError(f"{name}: placeholder {found.group(0)} left in the chart file")
    return text


def _config_file(config: dict[str, Any], name: str) -> str:
    """A builder's config with its ``nodes`` list as a range over the values' nodes, as chart-file text."""
    nodes = config.get("nodes")
    body = dict(config)
    if nodes is not None:
        (entry,) = nodes
        body["nodes"] = NODES_PLACEHOLDER
    text = _helm(dump_yaml(body), PLACEHOLDERS)
    if nodes is not None:
        text = text.replace(f"nodes: {NODES_PLACEHOLDER}", "nodes: " + _node_range(entry))
    return _leftover(HEADER + text, name)


# --- the files -------------------------------------------------------------------------------------
def webhook_file(topo: Topology) -> dict[str, Any]:
    """The rebalancer's config: the builder's, with the keys a Kubernetes install sets itself."""
    config = builders.webhook_config(topo)
    config["token_file"] = f"{SECRET_MOUNT}/{WEBHOOK_TOKEN_KEY}"
    config["xds_token_file"] = f"{SECRET_MOUNT}/{XDS_TOKEN_KEY}"
    config["prometheus_url"] = "MQTTLBK8S_PROMETHEUS_URL"
    config["alertmanager_urls"] = "MQTTLBK8S_ALERTMANAGER_URLS"
    config.pop("prometheus_auth", None)
    config.pop("alertmanager_auth", None)
    # The hard stop: Envoy runs in another pod, whose files the rebalancer cannot write, so not the
    # pressure file but the MQTT listener's runtime connection limit, over the admin API like the cap.
    # Every Envoy replica: the admin Service is headless, its name resolves to each ready Envoy pod.
    config.pop("overload_file")
    config["hard_stop_listener"] = mqtt_listener(topo)
    config["envoy_admin_all_addresses"] = True
    return config


def mqtt_listener(topo: Topology) -> str:
    """The name of the Envoy listener MQTT clients connect to (the bootstrap's only listener)."""
    (listener,) = builders.envoy_bootstrap(topo)["static_resources"]["listeners"]
    name: str = listener["name"]
    return name


def envoy_file(topo: Topology) -> dict[str, Any]:
    """Envoy's bootstrap without the injected-resource monitor and its action: in the chart nothing
    writes its pressure file (the hard stop is the listener's runtime limit, :func:`webhook_file`)."""
    bootstrap = builders.envoy_bootstrap(topo)
    overload = bootstrap["overload_manager"]
    injected = builders.INJECTED_RESOURCE
    overload["resource_monitors"] = [m for m in overload["resource_monitors"] if m["name"] != injected]
    actions = [a for a in overload["actions"] if all(t["name"] != injected for t in a["triggers"])]
    if actions:
        overload["actions"] = actions
    else:
        del overload["actions"]
    return bootstrap


def args_file(topo: Topology) -> dict[str, list[str]]:
    """Each mqttlb container's arguments (without the program, ``mqttlb``), and Envoy's whole command: the
    start script that writes its bootstrap with the xDS token, read from the token Secret's mount."""
    return {
        "rebalancer": builders.webhook_args(topo),
        "brokerExporter": builders.broker_exporter_args(topo),
        "envoyExporter": builders.envoy_exporter_args(topo),
        "envoy": builders.envoy_command(topo, token_file=f"{SECRET_MOUNT}/{XDS_TOKEN_KEY}"),
    }


_MATCHER = re.compile(r'^(?P<name>[a-zA-Z_][a-zA-Z0-9_]*)(?P<op>=~|!~|!=|=)"(?P<value>(?:[^"\\]|\\.)*)"$')


def crd_matcher(text: str) -> dict[str, str]:
    """An Alertmanager matcher string (``action=~"rebalance|shed"``) as an AlertmanagerConfig matcher
    (``{name, value, matchType}``); ValueError for any other form."""
    match = _MATCHER.match(text)
    if match is None:
        raise ValueError(f"matcher {text!r} is not name<op>\"value\"")
    return {"name": match["name"], "value": match["value"], "matchType": match["op"]}


def _receiver(receiver: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"name": receiver["name"]}
    for hook in receiver.get("webhook_configs", []):
        config: dict[str, Any] = {"url": hook["url"], "sendResolved": hook["send_resolved"]}
        if "http_config" in hook:
            authorization = hook["http_config"]["authorization"]
            # the CRD takes the credentials from a Secret of its namespace, not from a file
            config["httpConfig"] = {
                "authorization": {
                    "type": authorization["type"],
                    "credentials": {"name": "MQTTLBK8S_SECRET_NAME", "key": WEBHOOK_TOKEN_KEY},
                }
            }
        out.setdefault("webhookConfigs", []).append(config)
    return out


def _child_route(child: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"receiver": child["receiver"], "matchers": [crd_matcher(m) for m in child["matchers"]]}
    if "repeat_interval" in child:
        out["repeatInterval"] = child["repeat_interval"]
    return out


def alertmanager_config_spec(params: Params, topo: Topology) -> dict[str, Any]:
    """``mqttlb.alertmanager_config.build``'s config as an ``AlertmanagerConfig`` (monitoring.coreos.com/
    v1alpha1) spec: the same route tree, receivers and inhibit rules under the CRD's field names."""
    config = build_alertmanager_config(params, **builders.alertmanager_wiring(topo))
    route = config["route"]
    return {
        "route": {
            "receiver": route["receiver"],
            "groupBy": route["group_by"],
            "groupWait": route["group_wait"],
            "groupInterval": route["group_interval"],
            "repeatInterval": route["repeat_interval"],
            "routes": [_child_route(child) for child in route["routes"]],
        },
        "receivers": [_receiver(r) for r in config["receivers"]],
        "inhibitRules": [
            {
                "sourceMatch": [crd_matcher(m) for m in rule["source_matchers"]],
                "targetMatch": [crd_matcher(m) for m in rule["target_matchers"]],
                "equal": rule["equal"],
            }
            for rule in config["inhibit_rules"]
        ],
    }


def topology_file(topo: Topology) -> dict[str, Any]:
    """What the hand-written templates need to know of the product: ports, mounts, jobs, names, images."""
    files = topo.files
    return {
        "ports": {
            "rebalancer": topo.webhook.port,
            "xds": topo.webhook_xds.port,
            "brokerExporter": topo.broker_exporter.port,
            "envoyExporter": topo.envoy_exporter.port,
            "envoyListener": topo.envoy_listener.port,
            "envoyAdmin": topo.envoy_admin.port,
        },
        "mounts": {
            "state": str(topo.state.root),
            "config": str(files.webhook_config.parent),
            "rebalancerConfig": files.webhook_config.name,
            "brokerExporterConfig": files.broker_exporter_config.name,
            "envoyConfigDir": str(files.envoy_config.parent),
            "envoyConfig": files.envoy_config.name,
            "envoyRunDir": str(files.envoy_bootstrap.parent),  # an in-memory emptyDir: the copy with the token
            "exporterTokenDir": str(topo.state.exporter_token.parent),
            "exporterToken": topo.state.exporter_token.name,
            "secrets": SECRET_MOUNT,
            "evictionSecrets": EVICTION_MOUNT,
        },
        "evictionCredential": EVICTION_CREDENTIAL,
        "secretKeys": {"webhook": WEBHOOK_TOKEN_KEY, "xds": XDS_TOKEN_KEY, "exporter": EXPORTER_TOKEN_KEY},
        "jobs": {
            "brokerExporter": contract.JOB_BROKERS,
            "envoyExporter": contract.JOB_ENVOY_EXPORTER,
            "envoy": contract.JOB_ENVOY,
            "rebalancer": contract.JOB_WEBHOOK,
        },
        "receivers": {"page": contract.RECEIVER_PAGE, "rebalancer": contract.RECEIVER_WEBHOOK},
        "scrapeInterval": topo.settings.scrape_interval,
        "runbooks": RUNBOOKS,  # the rules' relative runbook_url prefix, made absolute by monitoring.runbookBaseUrl
        "envoyStatsPath": "/stats/prometheus",
        "images": {"mqttlb": IMAGES["mqttlb"], "envoy": IMAGES["envoy"]},
    }


def render_files(cfg: StackConfig | None = None, params: Params | None = None) -> dict[Path, str]:
    """Every generated chart file: absolute path -> text.  ``params``: the rules' and dashboards'
    parameters (default mqttlb/params.yaml, as `make rules` and `make dashboards` use)."""
    params = params or load_params()
    topo = k8s_topology(cfg)
    files: dict[Path, str] = {}
    for name, text in render_rule_files(params).items():
        files[FILES_DIR / "rules" / name] = text
    # The recording rules with the broker CPU from cAdvisor and kube-state-metrics (monitoring.brokerCpuSource).
    files[FILES_DIR / CADVISOR_RULES / RECORDING_FILE] = render_rule_files(cadvisor_params(params))[RECORDING_FILE]
    for name, text in render_dashboards(params).items():
        if name.endswith(".json"):  # the dashboards themselves (Grafana's sidecar loads *.json)
            files[FILES_DIR / "dashboards" / name] = text
    files[FILES_DIR / "webhook.yaml"] = _config_file(webhook_file(topo), "webhook.yaml")
    files[FILES_DIR / "broker-exporter.yaml"] = _config_file(builders.broker_exporter_config(topo), "broker-exporter")
    files[FILES_DIR / "envoy.yaml"] = _config_file(envoy_file(topo), "envoy.yaml")
    files[FILES_DIR / "args.yaml"] = _config_file(dict(args_file(topo)), "args.yaml")
    spec_text = _helm(dump_yaml(alertmanager_config_spec(topo.settings.params, topo)), PLACEHOLDERS)
    spec_text = spec_text.replace("MQTTLBK8S_SECRET_NAME", '{{ include "mqttlb.secretName" $ }}')
    files[FILES_DIR / "alertmanagerconfig.yaml"] = _leftover(HEADER + spec_text, "alertmanagerconfig.yaml")
    files[FILES_DIR / "topology.yaml"] = HEADER.split("# The chart")[0] + yaml.safe_dump(
        topology_file(topo), sort_keys=False, default_flow_style=False
    )
    return files


def cadvisor_params(params: Params) -> Params:
    """``params`` with the broker CPU read from cAdvisor against kube-state-metrics' CPU limits."""
    return params.model_copy(update={"broker_cpu": params.broker_cpu.model_copy(update={"source": "cadvisor"})})


GENERATED = [
    (FILES_DIR, "*.yaml"),
    (FILES_DIR / "rules", "*.yml"),
    (FILES_DIR / CADVISOR_RULES, "*.yml"),
    (FILES_DIR / "dashboards", "*.json"),
]


def drift(files: dict[Path, str]) -> list[str]:
    """One line per generated chart file that is missing, differs, or that no source generates."""
    return [d.line(REGENERATE) for d in find_drift(files, generated_dirs=GENERATED, root=CHART_DIR)]


DESCRIPTION = (
    "Render the Helm chart's generated files (deploy/helm/mqttlb/files/) from mqttlb/params.yaml and "
    "stack/stack.yaml through the builders the local and compose stacks use."
)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=REGENERATE, description=DESCRIPTION)
    parser.add_argument(
        "--check", action="store_true", help="write nothing; exit 1 and print a diff if a committed file is stale"
    )
    parser.add_argument("--params", type=Path, metavar="FILE",
                        help="YAML overrides of mqttlb/params.yaml (thresholds, windows, timing, policy, ...) for "
                             "the rules, dashboards, Alertmanager routes and rebalancer config alike; needs --out")
    parser.add_argument("--out", type=Path, metavar="DIR",
                        help="write a copy of the chart (templates, values, generated files/) to DIR, a new "
                             "directory, instead of the repository's deploy/helm/mqttlb/files/")
    add_log_flags(parser)
    return parser


def write_chart_copy(files: dict[Path, str], out: Path) -> None:
    """The chart's hand-written files copied to ``out`` (which must not exist) with ``files`` (paths under
    :data:`FILES_DIR`) as its generated ``files/``.  Raises FileExistsError when ``out`` exists."""
    shutil.copytree(CHART_DIR, out, ignore=lambda folder, _: ["files"] if Path(folder) == CHART_DIR else [])
    for path, text in files.items():
        target = out / path.relative_to(CHART_DIR)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(_parser(), argv)
    if checkout_root() is None:
        return refuse(f"the Helm chart is part of the source checkout, not of the installed package ({CHART_DIR})")
    if args.params is not None and args.out is None:
        return refuse("--params needs --out DIR: the repository's chart keeps mqttlb/params.yaml's parameters")
    if args.out is not None and args.check:
        return refuse("--check compares the repository's chart; leave out --out")
    try:
        cfg, params = compose_config(), None
        if args.params is not None:
            params = load_params(load_yaml_mapping(args.params, ParamsError), source=str(args.params))
            cfg = cfg.model_copy(update={"params": params})
        files = render_files(cfg, params)
    except ValueError as exc:  # StackConfigError, ParamsError, a placeholder left behind
        return refuse(exc)
    if args.out is not None:
        try:
            write_chart_copy(files, args.out)
        except OSError as exc:
            return refuse(f"--out {args.out}: {exc}")
        log.info("wrote the chart with %s's parameters to %s", args.params or "mqttlb/params.yaml", args.out)
        return 0
    generated = GENERATED
    if args.check:
        problems = find_drift(files, generated_dirs=generated, root=CHART_DIR)
        if not problems:
            log.info("all %d chart files are up to date", len(files))
        return report(problems, REGENERATE, diffs=sys.stdout)
    for stale in find_drift(files, generated_dirs=generated, root=CHART_DIR):
        if stale.kind == "unexpected":
            stale.path.unlink()
            log.info("removed %s (no source generates it)", stale.name)
    for path, text in files.items():
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            atomic_write_text(path, text)
            path.chmod(0o644)
            log.info("wrote %s", path.relative_to(CHART_DIR))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
