"""Per-node samples for the policy, from the recording rules in ``mqttlb.contract``.

Always asks for *every* node of the cluster: a decision taken on the alerting node alone would
push its load onto a neighbour that may be just as hot.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from mqttlb import contract
from mqttlb.prometheus_api import InstantSample, PrometheusApiError
from mqttlb.webhook.policy import NodeSample

_LABEL_VALUE = re.compile(r'^[^"\\\n]*$')


def cluster_selector(cluster: str, cluster_label: str = contract.CLUSTER_LABEL) -> str:
    """``{<cluster_label>="<cluster>"}``: the series of one MQTT cluster (``cluster_label`` is the parameter
    ``mqtt_cluster_label``).  Raises ValueError for a cluster name that cannot go in a label matcher."""
    if not _LABEL_VALUE.match(cluster):
        raise ValueError(f"cluster name {cluster!r} cannot be used in a label matcher")
    return f'{{{cluster_label}="{cluster}"}}'


def _by_node(samples: list[InstantSample], what: str) -> dict[str, InstantSample]:
    result: dict[str, InstantSample] = {}
    for sample in samples:
        node = sample.labels.get("node")
        if node is None:
            raise PrometheusApiError(f"{what} series without a node label: {sample.labels}")
        if node in result:
            raise PrometheusApiError(f"{what} has more than one series for node {node}")
        result[node] = sample
    return result


def node_samples_from(
    cpu: list[InstantSample],
    cpu_timestamps: list[InstantSample],
    connections: list[InstantSample],
    nodes: Sequence[str],
    now: float,
    *,
    window_connections: list[InstantSample] | None = None,
) -> dict[str, NodeSample]:
    """Combine the query results; ``timestamp()`` gives each CPU sample's real age; ``window_connections``:
    the connections averaged over the CPU's rate window (None: not asked for)."""
    cpu_by = _by_node(cpu, contract.NODE_CPU)
    ts_by = _by_node(cpu_timestamps, f"timestamp({contract.NODE_CPU})")
    conn_by = _by_node(connections, contract.NODE_CONNECTIONS)
    window_by = _by_node(window_connections or [], f"avg_over_time({contract.NODE_CONNECTIONS})")
    result = {}
    for node in nodes:
        c = cpu_by.get(node)
        t = ts_by.get(node)
        k = conn_by.get(node)
        w = window_by.get(node)
        result[node] = NodeSample(
            cpu=c.value if c is not None else None,
            connections=k.value if k is not None else None,
            age_seconds=max(0.0, now - t.value) if t is not None else None,
            window_connections=w.value if w is not None else None,
        )
    return result
