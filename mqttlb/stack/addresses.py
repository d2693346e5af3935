"""What `make stack-up` prints for a human: one address per part, each answering 200 with something useful.

The pages depend on the installed packages, so the Prometheus ones are found on the running server:

* upstream Prometheus 2.x serves its UI at ``/targets``, ``/alerts``, ``/graph``; Debian's
  ``prometheus`` (2.42.0+ds) is built without the React UI and serves the classic one under
  ``/classic/`` (``/targets`` answers 404); when neither answers, the JSON API (``/api/v1/...``),
  which every 2.x serves, is printed instead;
* Debian's ``prometheus-alertmanager`` has no web UI either (its ``/`` only says so), so its JSON
  API ``/api/v2/alerts`` and an ``amtool`` line are printed;
* the webhook's ``/`` is its human page (``/alerts`` only takes Alertmanager's POSTs).

The webhook and the exporters answer only with their bearer token (``/healthz`` and ``/readyz`` of the
webhook excepted), Prometheus and Alertmanager only with the stack's web login (``builders.WEB_USER``
and the password in ``<state dir>/secrets/web-password``): each line names the credential's file, and a
``curl`` or ``amtool`` line that uses it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import requests

from mqttlb.brokers.hivemq import API_PREFIX
from mqttlb.stack import builders
from mqttlb.stack.builders import WEB_USER
from mqttlb.stack.topology import Topology
from mqttlb.webhook import runbooks

#: The mqttlb HiveMQ extension's read routes (brokers/hivemq/README.md).
HIVEMQ_AVAILABILITY = f"{API_PREFIX}availability"
HIVEMQ_CLIENTS = f"{API_PREFIX}clients"

#: Where the Prometheus UI pages live, in the order they are tried ("" = upstream, "/classic" = Debian).
PROMETHEUS_UI_PREFIXES = ("", "/classic")


@dataclass(frozen=True)
class Address:
    """One printed line: a label (``what``), a URL, path or ``mqtt://`` address (``where``), and a hint."""

    what: str
    where: str
    hint: str = ""

    def line(self) -> str:
        hint = f"  ({self.hint})" if self.hint else ""
        return f"  {self.what:<22} {self.where}{hint}"


def prometheus_ui_prefix(
    base_url: str, timeout: float = 2.0, auth: tuple[str, str] | None = None, ca: str | None = None
) -> str | None:
    """The path prefix under which the Prometheus at ``base_url`` serves its UI ("" or "/classic"),
    found by GET ``<prefix>/targets`` answering 200 (``auth``: basic-auth user and password; ``ca``: the
    CA of an https URL); None when no prefix does (no UI, or not answering)."""
    for prefix in PROMETHEUS_UI_PREFIXES:
        try:
            url = f"{base_url}{prefix}/targets"
            answer = requests.get(url, timeout=timeout, allow_redirects=False, auth=auth, verify=ca or True)
            if answer.status_code == 200:
                return prefix
        except requests.RequestException:
            return None
    return None


def login_hint(password_file: Path) -> str:
    """How a line says that its address wants the stack's web login."""
    return f"user {WEB_USER}, password in {password_file}"


def curl_with_login(url: str, password_file: Path, ca: str | None = None) -> str:
    """A curl command line that GETs ``url`` as the stack's web user (``ca``: the CA of an https URL)."""
    return f'curl{_cacert(ca)} -u "{WEB_USER}:$(cat {password_file})" {url}'


def _cacert(ca: str | None) -> str:
    return f" --cacert {ca}" if ca is not None else ""


def prometheus_addresses(base_url: str, password_file: Path | None = None, ca: str | None = None) -> list[Address]:
    """Prometheus's targets and alerts pages on the running server at ``base_url`` (the JSON API if it has no
    UI); ``password_file``: the stack's web login, which that Prometheus requires; ``ca``: its CA (https)."""
    auth = (WEB_USER, password_file.read_text().strip()) if password_file is not None else None
    prefix = prometheus_ui_prefix(base_url, auth=auth, ca=ca)
    login = f"; {login_hint(password_file)}" if password_file is not None else ""
    if prefix is None:
        return [
            Address("Prometheus targets", f"{base_url}/api/v1/targets", f"JSON; this Prometheus serves no UI{login}"),
            Address("Prometheus alerts", f"{base_url}/api/v1/alerts", f"JSON{login}"),
        ]
    return [
        Address("Prometheus targets", f"{base_url}{prefix}/targets", login.removeprefix("; ")),
        Address(
            "Prometheus alerts", f"{base_url}{prefix}/alerts", f"rules: {prefix}/rules, queries: {prefix}/graph{login}"
        ),
    ]


def amtool_query(alertmanager_url: str, http_config: Path | None = None) -> str:
    """The amtool command line that lists the alerts of the Alertmanager at ``alertmanager_url``
    (``http_config``: amtool's --http.config.file, the login)."""
    login = f" --http.config.file={http_config}" if http_config is not None else ""
    return f"amtool --alertmanager.url={alertmanager_url}{login} alert query"


def curl_with_token(url: str, token_file: Path, ca: str | None = None) -> str:
    """A curl command line that GETs ``url`` with the bearer token read from ``token_file`` (``ca``: the
    CA of an https URL)."""
    return f'curl{_cacert(ca)} -H "Authorization: Bearer $(cat {token_file})" {url}'


def stack_addresses(topo: Topology, token_file: Path, logs: Path) -> list[Address]:
    """Every address of the running native stack ``topo``, in the order printed (Prometheus is asked
    which UI it serves, so call it once the stack answers)."""
    alertmanager = topo.alertmanager.url()
    exporter_token = topo.state.exporter_token
    password = topo.state.web_password
    ca = builders.stack_ca(topo)
    tls = [Address("TLS CA", ca, "the https addresses above are signed by it: curl --cacert")] if ca else []
    broker_metrics = topo.broker_exporter.url("/metrics")
    return [
        Address("MQTT (through Envoy)", f"mqtt://{topo.envoy_listener.reach}"),
        Address("brokers (direct)", ", ".join(f"mqtt://{node.address}" for node in topo.nodes)),
        Address(
            "Envoy admin",
            topo.envoy_admin.url("/clusters"),
            "weights and health per endpoint; no login: whoever reaches it can change Envoy and read its config",
        ),
        *prometheus_addresses(topo.prometheus.url(), password, ca),
        Address(
            "Alertmanager",
            topo.alertmanager.url("/api/v2/alerts"),
            f"JSON; {login_hint(password)}; Debian's package has no web UI: "
            f"`{amtool_query(alertmanager, topo.state.amtool_config)}`",
        ),
        Address(
            "web login",
            str(password),
            f"Prometheus and Alertmanager: `{curl_with_login(topo.prometheus.url('/api/v1/alerts'), password, ca)}`",
        ),
        Address(
            "broker exporter",
            topo.broker_exporter.url("/metrics"),
            f"bearer token in {exporter_token}: `{curl_with_token(broker_metrics, exporter_token, ca)}`",
        ),
        Address("Envoy exporter", topo.envoy_exporter.url("/metrics"), f"bearer token in {exporter_token}"),
        Address(
            "webhook",
            topo.webhook.url("/"),
            f"weights, shedding, firing alerts; bearer token in {token_file}; `mqttlb status` in a shell",
        ),
        Address("runbooks", topo.webhook.url(f"{runbooks.PREFIX}/"), "every alert's runbook_url; no credential needed"),
        Address(
            "webhook token",
            str(token_file),
            f"every route but /healthz, /readyz and /runbooks/: "
            f"`{curl_with_token(topo.webhook.url('/status'), token_file, ca)}`",
        ),
        *xds_addresses(topo),
        *hivemq_addresses(topo),
        *tls,
        Address("logs", f"{logs}/"),
    ]


def xds_addresses(topo: Topology) -> list[Address]:
    """``eds: grpc`` / ``delta-grpc``: the webhook's gRPC xDS server, ``grpc://host:port`` (``grpcs://`` with
    ``tls: true``), which Envoy's ADS stream reaches with the xDS token; none with file EDS."""
    if not builders.uses_ads(topo):
        return []
    scheme = "grpcs" if topo.webhook_xds.scheme == "https" else "grpc"
    return [
        Address(
            "xDS (gRPC ADS)",
            f"{scheme}://{topo.webhook_xds.reach}",
            f"Envoy's endpoint stream; xDS token in {topo.state.xds_token} (reads the endpoint weights only; "
            "Envoy's admin shows it)",
        )
    ]


def hivemq_addresses(topo: Topology) -> list[Address]:
    """HiveMQ nodes (``broker: hivemq``): each node's mqttlb extension -- its metrics and availability
    (open: Prometheus and load balancers' health checks) and its client list (the API's bearer token,
    ``<state dir>/hivemq/token``); none for Mosquitto nodes, which have no HTTP side."""
    nodes = [node for node in topo.nodes if node.api_url is not None]
    if not nodes:
        return []
    token = topo.state.hivemq_token
    clients = [f"{node.api_url}{HIVEMQ_CLIENTS}" for node in nodes]
    return [
        Address(
            "HiveMQ metrics",
            ", ".join(str(node.metrics_url) for node in nodes),
            "each node's mqttlb extension, Prometheus text; no credential",
        ),
        Address(
            "HiveMQ availability",
            ", ".join(f"{node.api_url}{HIVEMQ_AVAILABILITY}" for node in nodes),
            "200 accepting, 503 draining: the load balancers' health check; no credential",
        ),
        Address(
            "HiveMQ clients",
            ", ".join(clients),
            f"per-client load, what the evict lever reads; bearer token in {token}: "
            f"`{curl_with_token(clients[0], token)}`",
        ),
    ]
