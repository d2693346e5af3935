"""Envoy EDS (ClusterLoadAssignment) documents: build them and publish them atomically.

One snapshot holds every endpoint of the cluster with its weight and health status, and a
version that grows with each publication (as go-control-plane's snapshot cache does): Envoy
always sees a complete, consistent set, never a partial update.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mqttlb.atomic import atomic_write_text
from mqttlb.envoy_admin import host_port

CLA_TYPE = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
HEALTH_STATUSES = ("HEALTHY", "DRAINING", "UNHEALTHY")


@dataclass(frozen=True)
class Endpoint:
    node: str  # published as the endpoint's hostname, so Envoy's /clusters names the node
    host: str
    port: int
    weight: int
    health_status: str = "HEALTHY"

    @property
    def address(self) -> str:
        """``host:port``, IPv6 in brackets: the form Envoy's admin and the exporter's labels use."""
        return host_port(self.host, self.port)


def cluster_load_assignment(cluster: str, endpoints: Sequence[Endpoint]) -> dict[str, Any]:
    if not endpoints:
        raise ValueError("an EDS snapshot needs at least one endpoint")
    if all(e.weight <= 0 or e.health_status != "HEALTHY" for e in endpoints):
        raise ValueError("refusing an EDS snapshot in which no endpoint can take connections")
    lb_endpoints = []
    for e in endpoints:
        if not 1 <= e.weight <= 2**32 - 1:
            raise ValueError(f"weight of {e.node} must be 1..2^32-1, got {e.weight}")
        if e.health_status not in HEALTH_STATUSES:
            raise ValueError(f"unknown health status {e.health_status!r} for {e.node}")
        lb_endpoints.append(
            {
                "endpoint": {
                    "address": {"socket_address": {"address": e.host, "port_value": e.port}},
                    "hostname": e.node,
                },
                "load_balancing_weight": e.weight,
                "health_status": e.health_status,
            }
        )
    return {"@type": CLA_TYPE, "cluster_name": cluster, "endpoints": [{"lb_endpoints": lb_endpoints}]}


def discovery_response(version: int, assignments: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The DiscoveryResponse shape used by both the EDS file and REST-JSON EDS."""
    return {"version_info": str(version), "type_url": CLA_TYPE, "resources": list(assignments)}


def write_eds_file(path: Path, version: int, cluster: str, endpoints: Sequence[Endpoint]) -> None:
    """Publish a complete snapshot to the file Envoy watches (temp file outside the watched dir)."""
    document = discovery_response(version, [cluster_load_assignment(cluster, endpoints)])
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(document, indent=2, sort_keys=True) + "\n", tmp_dir=path.parent.parent)


def read_eds_file(path: Path) -> dict[str, Any]:
    return json.loads(Path(path).read_text())
