"""Connections staircase: where MQTT clients land, how fast they come and go, and what Envoy does."""

from __future__ import annotations

import grafanalib.core as G

from mqttlb import contract
from mqttlb.dashboards import common as c
from mqttlb.params import Params

ENDPOINT_LEGEND = "{{node}} {{" + contract.ENVOY_ENDPOINT_LABEL + "}}"  # an Envoy exporter endpoint series
# Envoy's own per-endpoint series name the node and address with Envoy's labels.
STATS_LEGEND = "{{" + contract.ENVOY_ENDPOINT_HOSTNAME_LABEL + "}} {{" + contract.ENVOY_ENDPOINT_LABEL + "}}"

UID = "mqttlb-connections"


def connections_per_node(params: Params) -> G.TimeSeries:
    return c.timeseries(
        "Connections per node",
        f"Clients connected to each broker ({contract.NODE_CONNECTIONS}), drawn as steps: long-lived MQTT "
        "connections pile up in a staircase and only move when clients reconnect.",
        c.targets((f"{contract.NODE_CONNECTIONS}{{{c.node_selector(params)}}}", "{{node}}")),
        "short",
        stepped=True,
        min_value=0,
    )


def total_connections(params: Params) -> G.Stat:
    return c.stat(
        "Connections in the cluster",
        f"Sum of the connected clients over the selected nodes ({contract.NODE_CONNECTIONS}).",
        c.targets((f"sum({contract.NODE_CONNECTIONS}{{{c.node_selector(params)}}})", "total")),
        "short",
        decimals=0,
    )


def connects_per_second(params: Params) -> G.TimeSeries:
    return c.timeseries(
        "Connects per second",
        f"New client connections per second per node ({contract.NODE_CONNECTS_RATE}) and for the whole "
        f"cluster ({contract.CLUSTER_CONNECTS_RATE}); a spike is a reconnect storm.",
        c.targets(
            (f"{contract.NODE_CONNECTS_RATE}{{{c.node_selector(params)}}}", "{{node}}"),
            (f"{contract.CLUSTER_CONNECTS_RATE}{{{c.cluster_selector(params)}}}", "cluster"),
        ),
        "cps",
        min_value=0,
    )


def disconnects_per_second(params: Params) -> G.TimeSeries:
    return c.timeseries(
        "Disconnects per second",
        f"Client disconnections per second per node ({contract.NODE_DISCONNECTS_RATE}).",
        c.targets((f"{contract.NODE_DISCONNECTS_RATE}{{{c.node_selector(params)}}}", "{{node}}")),
        "cps",
        min_value=0,
    )


def connection_share(params: Params) -> G.TimeSeries:
    return c.timeseries(
        "Connection share per node",
        f"Each node's fraction of the cluster's connections ({contract.NODE_CONNECTIONS_SHARE}), stacked to "
        "100 %.",
        c.targets((f"{contract.NODE_CONNECTIONS_SHARE}{{{c.node_selector(params)}}}", "{{node}}")),
        "percentunit",
        stepped=True,
        stacked=True,
        min_value=0,
        max_value=1,
    )


def share_deviation(params: Params) -> G.TimeSeries:
    return c.timeseries(
        "Connection share minus 1/N",
        f"Each node's share minus an even share ({contract.NODE_CONNECTIONS_DEVIATION}), centred on zero.",
        c.targets((f"{contract.NODE_CONNECTIONS_DEVIATION}{{{c.node_selector(params)}}}", "{{node}}")),
        "percentunit",
        stepped=True,
        centred=True,
    )


def share_mean_absolute_deviation(params: Params) -> G.TimeSeries:
    return c.timeseries(
        "Mean absolute deviation of connection share",
        f"Average distance of the nodes' shares from 1/N ({contract.CLUSTER_CONNECTIONS_MAD}).",
        c.targets((f"{contract.CLUSTER_CONNECTIONS_MAD}{{{c.cluster_selector(params)}}}", "mean absolute deviation")),
        "percentunit",
        min_value=0,
    )


def share_max_squared_deviation(params: Params) -> G.TimeSeries:
    return c.timeseries(
        "Max squared deviation of connection share",
        f"Largest squared distance of a node's share from 1/N ({contract.CLUSTER_CONNECTIONS_MSD}).",
        c.targets((f"{contract.CLUSTER_CONNECTIONS_MSD}{{{c.cluster_selector(params)}}}", "max squared deviation")),
        "none",
        min_value=0,
    )


def connections_max_over_min(params: Params) -> G.TimeSeries:
    return c.timeseries(
        "Most / fewest connections",
        f"Connections on the fullest node divided by those on the emptiest "
        f"({contract.CLUSTER_CONNECTIONS_MAX_OVER_MIN}); 1 is even.",
        c.targets((f"{contract.CLUSTER_CONNECTIONS_MAX_OVER_MIN}{{{c.cluster_selector(params)}}}", "max / min")),
        "none",
    )


def envoy_active_connections(params: Params) -> G.TimeSeries:
    return c.timeseries(
        "Envoy active connections per endpoint",
        f"Connections Envoy holds open to each broker endpoint ({contract.ENVOY_ENDPOINT_CX_ACTIVE}); compare "
        "with the configured weights on the right.",
        c.targets(
            (f"{contract.ENVOY_ENDPOINT_CX_ACTIVE}{{{c.envoy_stats_endpoint_selector(params)}}}", STATS_LEGEND)
        ),
        "short",
        stepped=True,
        min_value=0,
    )


def envoy_weights(params: Params) -> G.TimeSeries:
    return c.timeseries(
        "Envoy configured weight per endpoint",
        f"load_balancing_weight Envoy currently applies to each endpoint ({contract.ENVOY_ENDPOINT_WEIGHT}); "
        "new connections follow these, existing ones stay where they are.",
        c.targets((f"{contract.ENVOY_ENDPOINT_WEIGHT}{{{c.envoy_selector(params)}}}", ENDPOINT_LEGEND)),
        "none",
        stepped=True,
        min_value=0,
    )


def envoy_new_connections(params: Params) -> G.TimeSeries:
    return c.timeseries(
        "Envoy new connections per second per endpoint",
        f"Rate of connections Envoy opened to each endpoint ({contract.ENVOY_ENDPOINT_CX_TOTAL}): where new "
        "clients are being sent right now.",
        c.targets(
            (
                f"rate({contract.ENVOY_ENDPOINT_CX_TOTAL}{{{c.envoy_stats_endpoint_selector(params)}}}"
                "[$__rate_interval])",
                STATS_LEGEND,
            )
        ),
        "cps",
        min_value=0,
    )


def envoy_connect_failures(params: Params) -> G.TimeSeries:
    return c.timeseries(
        "Envoy connect failures per second per endpoint",
        f"Failed upstream connection attempts per endpoint ({contract.ENVOY_ENDPOINT_CX_FAIL}).",
        c.targets(
            (
                f"rate({contract.ENVOY_ENDPOINT_CX_FAIL}{{{c.envoy_stats_endpoint_selector(params)}}}"
                "[$__rate_interval])",
                STATS_LEGEND,
            )
        ),
        "cps",
        min_value=0,
    )


def build(params: Params) -> G.Dashboard:
    Cell = c.Cell
    sections = [
        (
            c.row("Brokers", "Connections as the brokers count them (recording rules)."),
            [
                [Cell(connections_per_node(params), 18, 9), Cell(total_connections(params), 6, 9)],
                [Cell(connects_per_second(params), 12), Cell(disconnects_per_second(params), 12)],
                [Cell(connection_share(params), 12), Cell(share_deviation(params), 12)],
                [
                    Cell(share_mean_absolute_deviation(params), 8),
                    Cell(share_max_squared_deviation(params), 8),
                    Cell(connections_max_over_min(params), 8),
                ],
            ],
        ),
        (
            c.row("Envoy endpoints", "Connections as Envoy sees them, next to the weights it applies."),
            [
                [Cell(envoy_active_connections(params), 12), Cell(envoy_weights(params), 12)],
                [Cell(envoy_new_connections(params), 12), Cell(envoy_connect_failures(params), 12)],
            ],
        ),
    ]
    return c.dashboard(
        UID,
        "mqttlb / Connections staircase",
        "Connections per broker as a staircase, connection churn, each node's share of the cluster and "
        "Envoy's per-endpoint connections next to the configured weights.",
        params,
        sections,
        envoy=True,
    )
