"""Parse Envoy admin ``/clusters?format=json`` and ``/stats?format=json`` (pure, no I/O).

Facts from Envoy 1.40 (see tests/fixtures/envoy/clusters.json, recorded from the real binary):
per-host stats are ``cx_active`` (gauge), ``cx_total``, ``cx_connect_fail`` and ``rq_*``; a stat
whose value is 0 has no ``value`` key, and values are JSON strings.  There are no per-host byte
counters: bytes exist per cluster (``cluster.<name>.upstream_cx_{rx,tx}_bytes_total``) only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, NamedTuple

import orjson

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


class EnvoyParseError(ValueError):
    pass


class EndpointStatus(NamedTuple):  # a NamedTuple: built 1,000s of times per scrape, cheaply
    cluster: str
    endpoint: str  # host:port
    node: str  # EDS hostname (the broker's node name), else the host
    cx_active: int
    cx_total: int
    cx_connect_fail: int
    weight: int
    health: str  # one of HEALTH_STATUSES


@dataclass(frozen=True)
class ClusterStatus:
    name: str
    stat_name: str  # observability_name: the prefix of the cluster's stats
    max_connections: dict[str, int]  # priority (default|high) -> circuit-breaker limit
    endpoints: tuple[EndpointStatus, ...]


@dataclass(frozen=True)
class ListenerStats:
    listener: str
    cx_active: int
    cx_total: int
    cx_overflow: int
    cx_overload_reject: int


def _int(value: Any, what: str) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise EnvoyParseError(f"{what}: not an integer: {value!r}") from None


def health_of(health_status: dict[str, Any]) -> str:
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
        return EndpointStatus(
            cluster=cluster,
            endpoint=f"{ip}:{int(socket.get('port_value', 0))}",
            node=str(host.get("hostname") or ip),
            cx_active=int(raw.get("cx_active", 0)),
            cx_total=int(raw.get("cx_total", 0)),
            cx_connect_fail=int(raw.get("cx_connect_fail", 0)),
            weight=int(host.get("weight", 1)),
            health=health_of(host.get("health_status") or {}),
        )
    except (TypeError, ValueError) as exc:
        raise EnvoyParseError(f"{cluster} endpoint {ip}: non-numeric port, stat or weight: {exc}") from None


def parse_clusters(text: str, only: frozenset[str] | None = None) -> list[ClusterStatus]:
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


def parse_stats(text: str) -> dict[str, int]:
    """Counters and gauges of ``/stats?format=json`` by name (histograms are skipped)."""
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


def listeners(stats: dict[str, int]) -> list[ListenerStats]:
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


def overload(stats: dict[str, int]) -> tuple[dict[str, int], dict[str, int]]:
    """(overload action -> active 0/1, resource monitor -> pressure in percent)."""
    actions: dict[str, int] = {}
    pressures: dict[str, int] = {}
    for name, value in stats.items():
        match = _OVERLOAD.match(name)
        if match is not None:
            (actions if match.group("stat") == "active" else pressures)[match.group("name")] = value
    return actions, pressures
