"""The controller's view of the world: one Prometheus query and one Envoy read per pass.

Adapters only (no policy): :class:`ClusterObserver` turns the recording rules of
``mqttlb.contract`` and Envoy's ``/clusters`` into a :class:`mqttlb.webhook.plan.Observation`
for *every* node of the cluster.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

from mqttlb import contract
from mqttlb.envoy_admin import EnvoyAdminClient, EnvoyAdminError
from mqttlb.prometheus_api import InstantSample, PrometheusApi, PrometheusApiError
from mqttlb.webhook.controller import LeverError
from mqttlb.webhook.plan import Observation
from mqttlb.webhook.samples import cluster_selector, node_samples_from

PART_LABEL = "mqttlb_part"  # tags which part of the combined query a series answers
PARTS = {
    "cpu": "{rule}",
    "cpu_timestamp": "timestamp({rule})",
    "connections": "{connections}",
    "connections_window": "avg_over_time({connections}[{cpu_window}])",
    "cpu_fast": "{fast}",
    "up": "{up}",
    "connects": "{connects}",
}


def observation_query(cluster: str, cluster_label: str = contract.CLUSTER_LABEL, *, cpu_window: str) -> str:
    """CPU (rate window and short window), sample times, connections (now and averaged over ``cpu_window``,
    the range the CPU is a rate over: ``rulegen.cpu_rate_window``) and ``up`` of every node of ``cluster``
    (the value of the label ``cluster_label``), and the cluster's connects/s (rate window), in ONE instant
    query; each part tagged with ``PART_LABEL`` so they can be split."""
    selector = cluster_selector(cluster, cluster_label)
    names = {
        "cpu_window": cpu_window,
        "rule": f"{contract.NODE_CPU}{selector}",
        "connections": f"{contract.NODE_CONNECTIONS}{selector}",
        "fast": f"{contract.NODE_CPU_FAST}{selector}",
        "up": f"{contract.BROKER_UP}{selector}",
        "connects": f"{contract.CLUSTER_CONNECTS_RATE}{selector}",
    }
    return " or ".join(
        f'label_replace({template.format(**names)}, "{PART_LABEL}", "{part}", "", "")'
        for part, template in PARTS.items()
    )


def split_parts(samples: Sequence[InstantSample]) -> dict[str, list[InstantSample]]:
    """The query's answer by part; raises PrometheusApiError for a series of no known part."""
    parts: dict[str, list[InstantSample]] = {part: [] for part in PARTS}
    for sample in samples:
        part = sample.labels.get(PART_LABEL, "")
        if part not in parts:
            raise PrometheusApiError(f"unexpected series in the observation query: {sample.labels}")
        parts[part].append(sample)
    return parts


def _per_node(samples: list[InstantSample]) -> dict[str, float]:
    return {
        s.labels[contract.NODE_LABEL]: s.value
        for s in samples
        if contract.NODE_LABEL in s.labels and math.isfinite(s.value)
    }


def _cluster_value(samples: list[InstantSample]) -> float | None:
    """The one finite value of a per-cluster series, or None (no series yet, or not finite)."""
    values = [s.value for s in samples if math.isfinite(s.value)]
    return sum(values) if values else None


class ClusterObserver:
    """Reads Prometheus and Envoy for one MQTT cluster behind one Envoy cluster."""

    def __init__(
        self,
        cluster: str,
        envoy_cluster: str,
        nodes: Sequence[str],
        prometheus: PrometheusApi,
        envoy: EnvoyAdminClient,
        cluster_label: str = contract.CLUSTER_LABEL,
        *,
        cpu_window: str,
    ) -> None:
        self.cluster = cluster
        self.envoy_cluster = envoy_cluster
        self.nodes = list(nodes)
        self.prometheus = prometheus
        self.envoy = envoy
        self.query = observation_query(cluster, cluster_label, cpu_window=cpu_window)

    def observe(self, now: float) -> Observation:
        try:
            parts = split_parts(self.prometheus.query(self.query))
            samples = node_samples_from(
                parts["cpu"], parts["cpu_timestamp"], parts["connections"], self.nodes, now,
                window_connections=parts["connections_window"],
            )
        except PrometheusApiError as exc:
            raise LeverError("prometheus", str(exc)) from exc
        up = _per_node(parts["up"])
        try:
            endpoints = self.envoy.cluster(self.envoy_cluster).by_node()
        except EnvoyAdminError as exc:
            raise LeverError("envoy", str(exc)) from exc
        down = frozenset(
            n for n in self.nodes if up.get(n) == 0 or (n in endpoints and endpoints[n].health == "unhealthy")
        )
        connections = [s.connections for n, s in samples.items() if n not in down and s.connections is not None]
        return Observation(
            samples={
                n: dataclasses.replace(s, envoy_active=float(endpoints[n].cx_active)) if n in endpoints else s
                for n, s in samples.items()
            },
            fast_cpu=_per_node(parts["cpu_fast"]),
            down=down,
            active_connections=sum(e.cx_active for e in endpoints.values()),
            connects_total=float(sum(e.cx_total for e in endpoints.values())) if endpoints else None,
            connects_per_second=_cluster_value(parts["connects"]),
            cluster_connections=sum(connections) if connections else None,
        )

    def applied_weights(self) -> dict[str, int]:
        try:
            return {n: e.weight for n, e in self.envoy.cluster(self.envoy_cluster).by_node().items()}
        except EnvoyAdminError as exc:
            raise LeverError("envoy_unreachable", str(exc)) from exc
