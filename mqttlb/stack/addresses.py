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
webhook excepted): each of their lines names the token file and a ``curl`` line that uses it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import requests

from mqttlb.stack.topology import Topology

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


def prometheus_ui_prefix(base_url: str, timeout: float = 2.0) -> str | None:
    """The path prefix under which the Prometheus at ``base_url`` serves its UI ("" or "/classic"),
    found by GET ``<prefix>/targets`` answering 200; None when no prefix does (no UI, or not answering)."""
    for prefix in PROMETHEUS_UI_PREFIXES:
        try:
            if requests.get(f"{base_url}{prefix}/targets", timeout=timeout, allow_redirects=False).status_code == 200:
                return prefix
        except requests.RequestException:
            return None
    return None


def prometheus_addresses(base_url: str) -> list[Address]:
    """Prometheus's targets and alerts pages on the running server at ``base_url`` (the JSON API if it has no UI)."""
    prefix = prometheus_ui_prefix(base_url)
    if prefix is None:
        return [
            Address("Prometheus targets", f"{base_url}/api/v1/targets", "JSON; this Prometheus serves no UI"),
            Address("Prometheus alerts", f"{base_url}/api/v1/alerts", "JSON"),
        ]
    return [
        Address("Prometheus targets", f"{base_url}{prefix}/targets"),
        Address("Prometheus alerts", f"{base_url}{prefix}/alerts", f"rules: {prefix}/rules, queries: {prefix}/graph"),
    ]


def amtool_query(alertmanager_url: str) -> str:
    """The amtool command line that lists the alerts of the Alertmanager at ``alertmanager_url``."""
    return f"amtool --alertmanager.url={alertmanager_url} alert query"


def curl_with_token(url: str, token_file: Path) -> str:
    """A curl command line that GETs ``url`` with the bearer token read from ``token_file``."""
    return f'curl -H "Authorization: Bearer $(cat {token_file})" {url}'


def stack_addresses(topo: Topology, token_file: Path, logs: Path) -> list[Address]:
    """Every address of the running native stack ``topo``, in the order printed (Prometheus is asked
    which UI it serves, so call it once the stack answers)."""
    alertmanager = topo.alertmanager.url()
    exporter_token = topo.state.exporter_token
    broker_metrics = topo.broker_exporter.url("/metrics")
    return [
        Address("MQTT (through Envoy)", f"mqtt://{topo.envoy_listener.reach}"),
        Address("brokers (direct)", ", ".join(f"mqtt://{node.address}" for node in topo.nodes)),
        Address("Envoy admin", topo.envoy_admin.url("/clusters"), "weights and health per endpoint"),
        *prometheus_addresses(topo.prometheus.url()),
        Address(
            "Alertmanager",
            topo.alertmanager.url("/api/v2/alerts"),
            f"JSON; Debian's package has no web UI: `{amtool_query(alertmanager)}`",
        ),
        Address(
            "broker exporter",
            topo.broker_exporter.url("/metrics"),
            f"bearer token in {exporter_token}: `{curl_with_token(broker_metrics, exporter_token)}`",
        ),
        Address("Envoy exporter", topo.envoy_exporter.url("/metrics"), f"bearer token in {exporter_token}"),
        Address(
            "webhook",
            topo.webhook.url("/"),
            f"weights, shedding, firing alerts; bearer token in {token_file}; `mqttlb status` in a shell",
        ),
        Address(
            "webhook token",
            str(token_file),
            f"every route but /healthz and /readyz: `{curl_with_token(topo.webhook.url('/status'), token_file)}`",
        ),
        Address("logs", f"{logs}/"),
    ]
