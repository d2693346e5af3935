"""Envoy levers: the EDS file, the circuit-breaker cap via admin runtime, the overload file, and
read-back of what Envoy applied.  Knows nothing about policy."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import requests

from mqttlb.atomic import atomic_write_text
from mqttlb.webhook.eds import Endpoint, write_eds_file
from mqttlb.webhook.shedding import OVERLOAD_OFF, OVERLOAD_ON


class EnvoyError(RuntimeError):
    """The Envoy admin API could not be used (down, slow or an unexpected answer)."""


def publish_eds(path: Path, version: int, cluster: str, endpoints: Sequence[Endpoint]) -> None:
    write_eds_file(path, version, cluster, endpoints)


def write_overload(path: Path, hard_stop: bool) -> None:
    """The injected-resource file the overload manager reads (pressure 0..1)."""
    path = Path(path)
    atomic_write_text(path, (OVERLOAD_ON if hard_stop else OVERLOAD_OFF) + "\n")


def read_overload(path: Path) -> str | None:
    try:
        return Path(path).read_text().strip()
    except FileNotFoundError:
        return None


def circuit_breaker_key(cluster: str) -> str:
    return f"circuit_breakers.{cluster}.default.max_connections"


class EnvoyAdmin:
    def __init__(self, base_url: str, timeout: float = 2.0, session: requests.Session | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.session = session or requests.Session()

    def _request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        try:
            response = self.session.request(method, f"{self.base_url}{path}", timeout=self.timeout, **kwargs)
        except requests.Timeout as exc:
            raise EnvoyError(f"timeout after {self.timeout}s on {method} {path}") from exc
        except requests.RequestException as exc:
            raise EnvoyError(f"cannot reach Envoy admin at {self.base_url}: {exc}") from exc
        if response.status_code != 200:
            raise EnvoyError(f"{method} {path}: HTTP {response.status_code}: {response.text[:200]}")
        return response

    def set_max_connections(self, cluster: str, cap: int | None) -> None:
        """Runtime override of the cluster's default-priority circuit breaker; None removes it."""
        value = "" if cap is None else str(int(cap))
        self._request("POST", "/runtime_modify", params={circuit_breaker_key(cluster): value})

    def runtime_value(self, key: str) -> str | None:
        document = self._request("GET", "/runtime").json()
        entry = document.get("entries", {}).get(key)
        return None if entry is None else entry.get("final_value")

    def active_connections(self, cluster: str) -> int:
        name = f"cluster.{cluster}.upstream_cx_active"
        document = self._request("GET", "/stats", params={"format": "json", "filter": f"^{name}$"}).json()
        for stat in document.get("stats", []):
            if stat.get("name") == name:
                return int(stat["value"])
        raise EnvoyError(f"Envoy has no stat {name} (unknown cluster {cluster!r}?)")

    def cluster_hosts(self, cluster: str) -> dict[str, dict[str, Any]]:
        """Per-node (EDS hostname) weight, health and address as Envoy applies them."""
        document = self._request("GET", "/clusters", params={"format": "json"}).json()
        for status in document.get("cluster_statuses", []):
            if status.get("name") != cluster:
                continue
            hosts = {}
            for host in status.get("host_statuses", []):
                socket = host.get("address", {}).get("socket_address", {})
                address = f"{socket.get('address')}:{socket.get('port_value')}"
                node = host.get("hostname") or address
                hosts[node] = {
                    "weight": host.get("weight"),
                    "health": host.get("health_status", {}).get("eds_health_status", "HEALTHY"),
                    "address": address,
                }
            return hosts
        raise EnvoyError(f"Envoy has no cluster {cluster!r}")

    def wait_for_weights(
        self, cluster: str, expected: Mapping[str, int], timeout: float = 1.0, interval: float = 0.02
    ) -> tuple[dict[str, dict[str, Any]], bool]:
        """Poll /clusters until Envoy shows ``expected`` (bounded by ``timeout``); returns the last view."""
        deadline = time.monotonic() + timeout
        while True:
            hosts = self.cluster_hosts(cluster)
            if all(hosts.get(n, {}).get("weight") == w for n, w in expected.items()):
                return hosts, True
            if time.monotonic() >= deadline:
                return hosts, False
            time.sleep(interval)
