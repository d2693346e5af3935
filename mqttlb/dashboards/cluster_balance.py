"""Cluster balance: is CPU spread evenly over the brokers, and how far is each node from the mean?"""

from __future__ import annotations

import grafanalib.core as G

from mqttlb import contract
from mqttlb.dashboards import common as c
from mqttlb.params import Params

UID = "mqttlb-cluster-balance"


def mean_cpu_stat(params: Params) -> G.Stat:
    return c.stat(
        "Cluster mean CPU",
        f"Mean CPU utilisation over the nodes ({contract.CLUSTER_CPU_MEAN}). Above {params.cpu_critical:.0%} "
        "rebalancing cannot help any more and the rebalancer sheds new connections.",
        c.targets((f"{contract.CLUSTER_CPU_MEAN}{{{c.cluster_selector(params)}}}", "mean")),
        "percentunit",
        c.critical_thresholds(params),
    )


def squared_deviation_stat(params: Params) -> G.Stat:
    return c.stat(
        "Max squared deviation",
        f"Largest squared distance of a node's CPU from the cluster mean ({contract.CLUSTER_CPU_MSD}). "
        f"The imbalance alert fires above {params.imbalance_max_squared_deviation} while the mean is above "
        f"{params.imbalance_min_mean:.0%}.",
        c.targets((f"{contract.CLUSTER_CPU_MSD}{{{c.cluster_selector(params)}}}", "max squared deviation")),
        "none",
        c.imbalance_thresholds(params),
        decimals=4,
    )


def max_over_min_stat(params: Params) -> G.Stat:
    busy = f"{params.imbalance_min_mean:.0%}"
    by = params.mqtt_cluster_label
    return c.stat(
        "Busiest / idlest node",
        f"CPU of the busiest node divided by that of the idlest ({contract.CLUSTER_CPU_MAX_OVER_MIN}); "
        f"1 is perfectly even. Shown only while the cluster mean CPU is at least {busy} "
        "(imbalance_min_mean, below which the imbalance alert ignores spread): on an idle cluster the "
        "ratio of two small numbers is noise, so the query gives 0 there, shown as \u201cidle\u201d.",
        c.targets(
            (
                # one series {<mqtt cluster label>}: both sides without the metric name, so `or` joins them in time
                f"max by ({by}) ({contract.CLUSTER_CPU_MAX_OVER_MIN}{{{c.cluster_selector(params)}}} and on ({by}) "
                f"{contract.CLUSTER_CPU_MEAN}{{{c.cluster_selector(params)}}} >= {params.imbalance_min_mean:g}) "
                f"or on ({by}) ({contract.CLUSTER_CPU_MEAN}{{{c.cluster_selector(params)}}} "
                f"< {params.imbalance_min_mean:g}) * 0",
                "max / min",
            )
        ),
        "none",
        c.max_over_min_thresholds(),
        value_texts={0: f"idle (mean < {busy})"},
    )


def nodes_up_stat(params: Params) -> G.Stat:
    return c.stat(
        "Nodes up",
        f"Nodes whose broker answered the exporter's last scrape ({contract.BROKER_UP}).",
        c.targets((f"sum({contract.BROKER_UP}{{{c.broker_selector(params)}}})", "up")),
        "short",
        decimals=0,
    )


def cpu_per_node(params: Params) -> G.TimeSeries:
    return c.timeseries(
        "CPU utilisation per node",
        f"Broker process CPU as a fraction of the node's configured cores ({contract.NODE_CPU}), with the "
        "cluster mean.",
        c.targets(
            (f"{contract.NODE_CPU}{{{c.node_selector(params)}}}", "{{node}}"),
            (f"{contract.CLUSTER_CPU_MEAN}{{{c.cluster_selector(params)}}}", "cluster mean"),
        ),
        "percentunit",
        c.cpu_thresholds(params),
        min_value=0,
    )


def deviation_per_node(params: Params) -> G.TimeSeries:
    return c.timeseries(
        "CPU deviation from the cluster mean",
        f"Node CPU minus the cluster mean ({contract.NODE_CPU_DEVIATION}), centred on zero. Outside the "
        "dashed lines a node's squared deviation exceeds the imbalance threshold.",
        c.targets((f"{contract.NODE_CPU_DEVIATION}{{{c.node_selector(params)}}}", "{{node}}")),
        "percentunit",
        c.deviation_thresholds(params),
        centred=True,
    )


def mean_absolute_deviation(params: Params) -> G.TimeSeries:
    return c.timeseries(
        "Mean absolute deviation of CPU",
        f"Average distance of the nodes' CPU from the cluster mean ({contract.CLUSTER_CPU_MAD}): how uneven "
        "the cluster is as a whole.",
        c.targets((f"{contract.CLUSTER_CPU_MAD}{{{c.cluster_selector(params)}}}", "mean absolute deviation")),
        "percentunit",
        min_value=0,
    )


def max_squared_deviation(params: Params) -> G.TimeSeries:
    return c.timeseries(
        "Max squared deviation of CPU",
        f"Largest squared distance of a node's CPU from the cluster mean ({contract.CLUSTER_CPU_MSD}).",
        c.targets((f"{contract.CLUSTER_CPU_MSD}{{{c.cluster_selector(params)}}}", "max squared deviation")),
        "none",
        c.imbalance_thresholds(params),
        min_value=0,
    )


# --- the per-node row (repeated over $node) ---------------------------------------------------
def node_cpu(params: Params) -> G.TimeSeries:
    return c.timeseries(
        "CPU utilisation",
        f"This node's CPU utilisation ({contract.NODE_CPU}) against the hot and critical marks.",
        c.targets((f"{contract.NODE_CPU}{{{c.node_selector(params)}}}", "{{node}}")),
        "percentunit",
        c.cpu_thresholds(params),
        min_value=0,
    )


def node_deviation(params: Params) -> G.TimeSeries:
    return c.timeseries(
        "Deviation from mean",
        f"This node's CPU minus the cluster mean ({contract.NODE_CPU_DEVIATION}).",
        c.targets((f"{contract.NODE_CPU_DEVIATION}{{{c.node_selector(params)}}}", "{{node}}")),
        "percentunit",
        c.deviation_thresholds(params),
        centred=True,
    )


def node_connections(params: Params) -> G.TimeSeries:
    return c.timeseries(
        "Connections",
        f"Clients connected to this node ({contract.NODE_CONNECTIONS}).",
        c.targets((f"{contract.NODE_CONNECTIONS}{{{c.node_selector(params)}}}", "{{node}}")),
        "short",
        stepped=True,
        min_value=0,
    )


def node_publish_rate(params: Params) -> G.TimeSeries:
    return c.timeseries(
        "Publish rate",
        f"PUBLISH messages received per second by this node ({contract.NODE_PUBLISH_RATE}).",
        c.targets((f"{contract.NODE_PUBLISH_RATE}{{{c.node_selector(params)}}}", "{{node}}")),
        "ops",
        min_value=0,
    )


def build(params: Params) -> G.Dashboard:
    Cell = c.Cell
    sections = [
        (
            c.row("Cluster", "Cluster-wide balance indicators from the recording rules."),
            [
                [
                    Cell(mean_cpu_stat(params), 6, 4),
                    Cell(squared_deviation_stat(params), 6, 4),
                    Cell(max_over_min_stat(params), 6, 4),
                    Cell(nodes_up_stat(params), 6, 4),
                ],
                [Cell(cpu_per_node(params), 12), Cell(deviation_per_node(params), 12)],
                [Cell(mean_absolute_deviation(params), 12), Cell(max_squared_deviation(params), 12)],
            ],
        ),
        (
            c.row(
                "Node $node", "One row per selected node (repeated over the node variable).", repeat="node"
            ),
            [
                [
                    Cell(node_cpu(params), 6, 7),
                    Cell(node_deviation(params), 6, 7),
                    Cell(node_connections(params), 6, 7),
                    Cell(node_publish_rate(params), 6, 7),
                ]
            ],
        ),
    ]
    return c.dashboard(
        UID,
        "mqttlb / Cluster balance",
        "CPU utilisation per broker, each node's deviation from the cluster mean and the imbalance "
        "indicators the rebalancer acts on.",
        params,
        sections,
    )
