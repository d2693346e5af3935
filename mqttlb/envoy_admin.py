"""Envoy's admin API: one client (bounded requests) and one parser of ``/clusters`` and ``/stats``.

Every part that reads Envoy uses this module: the Envoy exporter, the webhook (circuit-breaker
cap, verification of published weights), the loadgen sampler, the stack runner and the tests.

Facts from Envoy 1.40 (see tests/fixtures/envoy/clusters.json, recorded from the real binary):
per-host stats are ``cx_active`` (gauge), ``cx_total``, ``cx_connect_fail`` and ``rq_*``; a stat
whose value is 0 has no ``value`` key, and values are JSON strings.  There are no per-host byte
counters: bytes exist per cluster (``cluster.<name>.upstream_cx_{rx,tx}_bytes_total``) only.
The JSON is parsed with orjson: at 1,000 endpoints it saved 5-8 % of an exporter scrape.
"""

from __future__ import annotations

import functools
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple
from urllib.parse import quote

import orjson
import requests

from mqttlb.exporters.http_fetch import FetchError, fetch_text, new_session
from mqttlb.http_call import send

HEALTH_STATUSES = ("healthy", "degraded", "draining", "unhealthy")
# Regex for Envoy's /stats `filter` parameter: only what the exporter uses, so a large Envoy
# does not serialise thousands of unrelated stats per scrape.
STATS_FILTER = (
    r"^(cluster\..+\.upstream_cx_(rx_bytes_total|tx_bytes_total|overflow)"
    r"|listener\..+\.downstream_(cx_(active|total|overflow|overload_reject)|global_cx_overflow)"
    r"|overload\..+\.(active|pressure))$"
)
LISTENER_STATS = (
    "downstream_cx_active",
    "downstream_cx_total",
    "downstream_cx_overflow",
    "downstream_cx_overload_reject",
    "downstream_global_cx_overflow",  # refused by the global_downstream_max_connections cap
)
_LISTENER = re.compile(r"^listener\.(?P<listener>.+)\.(?P<stat>" + "|".join(LISTENER_STATS) + r")$")
_OVERLOAD = re.compile(r"^overload\.(?P<name>.+)\.(?P<stat>active|pressure)$")
_PER_THREAD = re.compile(r"\.(worker_\d+|main_thread)$")
_UNHEALTHY_FLAGS = (
    "failed_active_health_check",
    "failed_outlier_check",
    "failed_eds_health",
    "active_hc_timeout",
    "excluded_via_immediate_hc_fail",
)

Fetch = Callable[[str, float], str]  # (url, timeout in seconds) -> body; raises FetchError


class EnvoyAdminError(RuntimeError):
    """The admin API could not be used: unreachable, slow, an HTTP error, or an answer that is not
    what Envoy sends (then the subclass :class:`EnvoyParseError`).  One line saying which."""


class EnvoyParseError(EnvoyAdminError):
    """An admin answer that is not JSON or not of the documented shape."""


def host_port(host: str, port: int) -> str:
    """``host:port`` as a label or URL authority; IPv6 hosts in brackets (``[2001:db8::2]:18832``),
    because ``2001:db8::2:18832`` is itself a valid IPv6 address."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class EndpointStatus(NamedTuple):  # a NamedTuple: built 1,000s of times per scrape, cheaply
    cluster: str
    endpoint: str  # host:port ([v6]:port), see host_port
    node: str  # EDS hostname (the broker's node name), else the host
    host: str  # IP address as Envoy reports it (no brackets)
    port: int
    cx_active: int  # upstream connections open now
    cx_total: int  # upstream connections opened since Envoy (or the host) started
    cx_connect_fail: int
    weight: int  # load_balancing_weight in force
    health: str  # one of HEALTH_STATUSES


@dataclass(frozen=True)
class ClusterStatus:
    name: str
    stat_name: str  # observability_name: the prefix of the cluster's stats
    max_connections: dict[str, int]  # priority (default|high) -> circuit-breaker limit
    endpoints: tuple[EndpointStatus, ...]

    def by_node(self) -> dict[str, EndpointStatus]:
        """Endpoints keyed by node (EDS hostname); the last one wins if two share a hostname."""
        return {e.node: e for e in self.endpoints}


@dataclass(frozen=True)
class ListenerStats:
    listener: str
    cx_active: int
    cx_total: int
    cx_overflow: int
    cx_overload_reject: int


# --------------------------------------------------------------------------- parsing (pure)
def _int(value: Any, what: str) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise EnvoyParseError(f"{what}: not an integer: {value!r}") from None


def health_of(health_status: dict[str, Any]) -> str:
    """One of HEALTH_STATUSES from a host's ``health_status`` object (unhealthy > draining > degraded)."""
    eds = str(health_status.get("eds_health_status", "HEALTHY")).upper()
    if len(health_status) > 1 or eds != "HEALTHY":  # the common case is {"eds_health_status": "HEALTHY"}
        if eds in ("UNHEALTHY", "TIMEOUT") or any(health_status.get(flag) for flag in _UNHEALTHY_FLAGS):
            return "unhealthy"
        if eds == "DRAINING" or health_status.get("pending_dynamic_removal"):
            return "draining"
        if eds == "DEGRADED" or health_status.get("failed_active_degraded_check"):
            return "degraded"
    return "healthy"


def _endpoint(cluster: str, host: dict[str, Any]) -> EndpointStatus | None:
    socket = host.get("address", {}).get("socket_address")
    if not isinstance(socket, dict):
        return None  # pipe / internal addresses: not a broker endpoint
    ip = str(socket.get("address", ""))
    raw = {stat["name"]: stat["value"] for stat in host.get("stats", ()) if "value" in stat}  # absent = 0
    try:
        port = int(socket.get("port_value", 0))
        return EndpointStatus(
            cluster=cluster,
            endpoint=host_port(ip, port),
            node=str(host.get("hostname") or ip),
            host=ip,
            port=port,
            cx_active=int(raw.get("cx_active", 0)),
            cx_total=int(raw.get("cx_total", 0)),
            cx_connect_fail=int(raw.get("cx_connect_fail", 0)),
            weight=int(host.get("weight", 1)),
            health=health_of(host.get("health_status") or {}),
        )
    except (TypeError, ValueError) as exc:
        raise EnvoyParseError(f"{cluster} endpoint {ip}: non-numeric port, stat or weight: {exc}") from None


def parse_clusters(text: str | bytes, only: frozenset[str] | None = None) -> list[ClusterStatus]:
    """``/clusters?format=json`` -> its clusters (only those named in ``only``, if given), in
    Envoy's order.  Hosts without a socket address are left out.  Raises EnvoyParseError."""
    try:
        document = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise EnvoyParseError(f"/clusters is not JSON: {exc}") from None
    if not isinstance(document, dict) or not isinstance(document.get("cluster_statuses", []), list):
        raise EnvoyParseError("/clusters JSON has no cluster_statuses list")
    clusters = []
    try:
        for status in document.get("cluster_statuses", []):
            name = str(status["name"])
            if only is not None and name not in only:
                continue
            limits = {}
            for threshold in status.get("circuit_breakers", {}).get("thresholds", []):
                priority = str(threshold.get("priority", "DEFAULT")).lower()
                if "max_connections" in threshold:
                    limits[priority] = _int(threshold["max_connections"], f"{name} max_connections")
            endpoints = tuple(
                e for e in (_endpoint(name, h) for h in status.get("host_statuses", [])) if e is not None
            )
            clusters.append(
                ClusterStatus(name, str(status.get("observability_name") or name), limits, endpoints)
            )
    except (KeyError, TypeError, AttributeError) as exc:
        raise EnvoyParseError(
            f"/clusters JSON has an unexpected shape: {type(exc).__name__}: {exc}"
        ) from None
    return clusters


def parse_stats(text: str | bytes) -> dict[str, int]:
    """Counters and gauges of ``/stats?format=json`` by name (histograms are skipped).
    Raises EnvoyParseError."""
    try:
        document = orjson.loads(text)
        values = {}
        for stat in document["stats"]:
            if "name" in stat and "value" in stat:
                values[str(stat["name"])] = _int(stat["value"], str(stat["name"]))
    except orjson.JSONDecodeError as exc:
        raise EnvoyParseError(f"/stats is not JSON: {exc}") from None
    except (KeyError, TypeError, AttributeError) as exc:
        raise EnvoyParseError(f"/stats JSON has an unexpected shape: {type(exc).__name__}: {exc}") from None
    return values


def listeners(stats: Mapping[str, int]) -> list[ListenerStats]:
    """Per-listener downstream counts (per-worker copies left out), sorted by listener stat name."""
    found: dict[str, dict[str, int]] = {}
    for name, value in stats.items():
        match = _LISTENER.match(name)
        if match is None or _PER_THREAD.search(match.group("listener")):
            continue
        found.setdefault(match.group("listener"), {})[match.group("stat")] = value
    return [
        ListenerStats(
            listener,
            values.get("downstream_cx_active", 0),
            values.get("downstream_cx_total", 0),
            values.get("downstream_cx_overflow", 0) + values.get("downstream_global_cx_overflow", 0),
            values.get("downstream_cx_overload_reject", 0),
        )
        for listener, values in sorted(found.items())
    ]


def overload(stats: Mapping[str, int]) -> tuple[dict[str, int], dict[str, int]]:
    """(overload action -> active 0/1, resource monitor -> pressure in percent)."""
    actions: dict[str, int] = {}
    pressures: dict[str, int] = {}
    for name, value in stats.items():
        match = _OVERLOAD.match(name)
        if match is not None:
            (actions if match.group("stat") == "active" else pressures)[match.group("name")] = value
    return actions, pressures


def circuit_breaker_key(cluster: str) -> str:
    """The runtime key of the cluster's default-priority max_connections circuit breaker."""
    return f"circuit_breakers.{cluster}.default.max_connections"


def listener_limit_key(listener: str) -> str:
    """The runtime key of a listener's connection limit (Envoy: ``envoy.resource_limits.listener.<name>.
    connection_limit``); at 0 the listener closes every new connection at accept and counts it in
    ``listener.<address>.downstream_cx_overflow``, open connections stay."""
    return f"envoy.resource_limits.listener.{listener}.connection_limit"


# --------------------------------------------------------------------------- client
class EnvoyAdminClient:
    """One Envoy admin endpoint, e.g. ``http://127.0.0.1:9901``.

    Every request is bounded by ``timeout`` seconds (connect, each read, and the whole answer) and
    GET answers by a size cap, so a hung or trickling admin cannot hold the caller.  Every failure
    raises EnvoyAdminError.  ``fetch`` replaces the HTTP GET (tests and benchmarks serve recorded
    answers); it gets the full URL and the timeout and raises FetchError.
    """

    def __init__(
        self,
        base_url: str,
        timeout: float = 2.0,
        *,
        session: requests.Session | None = None,
        fetch: Fetch | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.session = session if session is not None else new_session()  # GETs with a total deadline
        self._fetch: Fetch = fetch or functools.partial(fetch_text, session=self.session)
        self.clusters_url = f"{self.base_url}/clusters?format=json"

    def stats_url(self, filter_regex: str | None = None) -> str:
        suffix = f"&filter={quote(filter_regex, safe='')}" if filter_regex else ""
        return f"{self.base_url}/stats?format=json{suffix}"

    def _get(self, url: str) -> str:
        try:
            return self._fetch(url, self.timeout)
        except FetchError as exc:
            raise EnvoyAdminError(str(exc)) from None

    # ---- reads
    def clusters(self, only: frozenset[str] | None = None) -> list[ClusterStatus]:
        """Every cluster (or those in ``only``) as Envoy applies it now."""
        return parse_clusters(self._get(self.clusters_url), only)

    def cluster(self, name: str) -> ClusterStatus:
        """One cluster; raises EnvoyAdminError if Envoy has no cluster of that name."""
        for status in self.clusters(frozenset({name})):
            return status
        raise EnvoyAdminError(f"Envoy at {self.base_url} has no cluster {name!r}")

    def stats(self, filter_regex: str | None = None) -> dict[str, int]:
        """Counters and gauges by name, optionally only those matching Envoy's ``filter`` regex."""
        return parse_stats(self._get(self.stats_url(filter_regex)))

    def active_connections(self, cluster: str) -> int:
        """``cluster.<cluster>.upstream_cx_active``: upstream connections open now."""
        name = f"cluster.{cluster}.upstream_cx_active"
        values = self.stats(f"^{re.escape(name)}$")
        if name not in values:
            raise EnvoyAdminError(f"Envoy has no stat {name} (unknown cluster {cluster!r}?)")
        return values[name]

    def runtime_value(self, key: str) -> str | None:
        """The final value of a runtime key, None if unset."""
        try:
            document = orjson.loads(self._get(f"{self.base_url}/runtime"))
            value = (document.get("entries", {}).get(key) or {}).get("final_value")
        except (orjson.JSONDecodeError, AttributeError) as exc:
            raise EnvoyParseError(f"/runtime: unexpected answer: {exc}") from None
        return None if value is None else str(value)

    # ---- writes
    def set_runtime(self, values: Mapping[str, str]) -> None:
        """POST /runtime_modify; an empty string removes a key's override."""
        url = f"{self.base_url}/runtime_modify"
        response = send(
            self.session, "POST", url, what=f"POST {url}", error=EnvoyAdminError, timeout=self.timeout,
            params=dict(values),
        )
        if response.status_code != 200:
            raise EnvoyAdminError(f"POST {url}: HTTP {response.status_code}: {response.text[:200]}")

    def set_max_connections(self, cluster: str, cap: int | None) -> None:
        """Runtime override of the cluster's default-priority circuit breaker; None removes it."""
        self.set_runtime({circuit_breaker_key(cluster): "" if cap is None else str(int(cap))})

    def wait_for_weights(
        self, cluster: str, expected: Mapping[str, int], timeout: float = 1.0, interval: float = 0.02
    ) -> tuple[dict[str, EndpointStatus], bool]:
        """Poll /clusters every ``interval`` s until each node in ``expected`` (node -> weight) has
        its weight, at most ``timeout`` s.  Returns (the last view by node, whether it matched)."""
        deadline = time.monotonic() + timeout
        while True:
            hosts = self.cluster(cluster).by_node()
            if all(n in hosts and hosts[n].weight == w for n, w in expected.items()):
                return hosts, True
            if time.monotonic() >= deadline:
                return hosts, False
            time.sleep(interval)
