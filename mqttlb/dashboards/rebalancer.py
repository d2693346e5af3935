"""Rebalancer: what the webhook decided, what Envoy applied, and which alerts drove it."""

from __future__ import annotations

import grafanalib.core as G

from mqttlb import contract
from mqttlb.dashboards import cluster_balance
from mqttlb.dashboards import common as c
from mqttlb.params import Params

UID = "mqttlb-rebalancer"


def weights(params: Params) -> G.TimeSeries:
    policy = params.policy
    return c.timeseries(
        "Endpoint weights: decided vs applied",
        f"Weight the rebalancer decided per endpoint ({contract.WEBHOOK_WEIGHT}): thick dashed lines, "
        f"\u201cdecided\u201d in the legend; and the weight Envoy reports as configured "
        f"({contract.ENVOY_ENDPOINT_WEIGHT}): thin solid lines, \u201capplied\u201d. They should meet within "
        f"seconds: where they agree the thin line runs inside the dashed one, a dashed line alone is a "
        f"decision Envoy has not applied. Neutral weight is {policy.neutral_weight}.",
        c.targets(
            (
                f"{contract.WEBHOOK_WEIGHT}{{{c.webhook_selector(params)}, {c.envoy_endpoint_labels()}}}",
                "decided {{node}}",
            ),
            (f"{contract.ENVOY_ENDPOINT_WEIGHT}{{{c.envoy_selector(params)}}}", "applied {{node}}"),
        ),
        "none",
        [
            c.Mark(c.ORANGE, None),
            c.Mark(c.GREEN, float(policy.min_weight), "the policy's min weight"),
            c.Mark(c.ORANGE, float(policy.max_weight), "the policy's max weight"),
        ],
        stepped=True,
        min_value=0,
        overrides=[
            c.by_ref_id("A", lineWidth=5, lineStyle={"fill": "dash", "dash": [10, 6]}),
            c.by_ref_id("B", lineWidth=1, lineStyle={"fill": "solid"}),
        ],
    )


def shed_level(params: Params) -> G.TimeSeries:
    levels = params.policy.shed_levels
    allowed = ", ".join(f"{i + 1} = {fraction:.0%}" for i, fraction in enumerate(levels))
    return c.timeseries(
        "Shedding level",
        f"How hard the rebalancer limits *new* connections ({contract.WEBHOOK_SHED_LEVEL}): 0 = not shedding; "
        f"level n caps new connections at a fraction of the current ones ({allowed}).",
        c.targets((f"{contract.WEBHOOK_SHED_LEVEL}{{{c.webhook_selector(params)}}}", "shed level")),
        "none",
        [
            c.Mark(c.GREEN, None),
            c.Mark(c.ORANGE, 1.0, "shedding"),
            c.Mark(c.RED, float(len(levels)), "the deepest level"),
        ],
        stepped=True,
        min_value=0,
    )


def connection_cap(params: Params) -> G.TimeSeries:
    selector = f'{c.envoy_cluster_selector(params)}, priority="default"'
    return c.timeseries(
        "Circuit-breaker connection cap",
        f"Envoy's max_connections for the broker cluster ({contract.ENVOY_CLUSTER_MAX_CONNECTIONS}, default "
        "priority): the shedding lever lowers it at runtime to cap new connections, and lifts it stepwise.",
        c.targets(
            (
                f"{contract.ENVOY_CLUSTER_MAX_CONNECTIONS}{{{selector}}}",
                "max_connections",
            )
        ),
        "short",
        stepped=True,
        min_value=0,
    )


def refused_connections(params: Params) -> G.TimeSeries:
    return c.timeseries(
        "Connections refused by shedding",
        f"New connections Envoy closed at once: over the circuit-breaker cap "
        f"({contract.ENVOY_CLUSTER_CX_OVERFLOW}), or by the hard stop: the overload manager "
        f"({contract.ENVOY_LISTENER_CX_OVERLOAD_REJECT}; local and compose stacks) or the listener's runtime "
        f"connection limit ({contract.ENVOY_LISTENER_CX_OVERFLOW}; Helm chart). Existing clients are not affected.",
        c.targets(
            (
                f"sum(rate({contract.ENVOY_CLUSTER_CX_OVERFLOW}{{{c.envoy_stats_cluster_selector(params)}}}"
                "[$__rate_interval]))",
                "circuit breaker",
            ),
            (
                f"sum(rate({contract.ENVOY_LISTENER_CX_OVERLOAD_REJECT}{{{c.envoy_stats_listener_selector(params)}}}"
                "[$__rate_interval]))",
                "overload manager",
            ),
            (
                f"sum(rate({contract.ENVOY_LISTENER_CX_OVERFLOW}{{{c.envoy_stats_listener_selector(params)}}}"
                "[$__rate_interval]))",
                "listener limit",
            ),
        ),
        "cps",
        min_value=0,
    )


def evictions_per_node(params: Params) -> G.TimeSeries:
    eviction = params.eviction
    cooldown = "the step interval" if eviction.cooldown_seconds is None else f"{eviction.cooldown_seconds:g} s"
    return c.timeseries(
        "Evictions per node",
        f"Connected clients the evict lever disconnected per second on each node (rate of "
        f"{contract.WEBHOOK_EVICTED}, rebalance and evacuate batches together), beside the nodes' CPU: a "
        "donor's evictions should bring its CPU down to the cluster mean, and its clients reconnect through "
        f"Envoy to the nodes the weights favour. Bounds: {eviction.max_per_second:g} clients/s per node while a "
        f"batch runs, at most {eviction.max_fraction:.0%} of a node's clients per rebalance batch, one batch "
        f"per node per {cooldown}.",
        c.targets(
            (
                f'sum by (node) (rate({contract.WEBHOOK_EVICTED}{{{c.webhook_selector(params)}, node=~"$node"}}'
                "[$__rate_interval]))",
                "{{node}}",
            )
        ),
        "cps",
        min_value=0,
    )


def cluster_mean_cpu(params: Params) -> G.TimeSeries:
    return c.timeseries(
        "Cluster mean CPU vs shedding mark",
        f"Mean CPU over the nodes ({contract.CLUSTER_CPU_MEAN}); above {params.cpu_critical:.0%} for "
        f"{params.cpu_critical_for} the critical alert asks the rebalancer to shed.",
        c.targets((f"{contract.CLUSTER_CPU_MEAN}{{{c.cluster_selector(params)}}}", "cluster mean")),
        "percentunit",
        c.cpu_thresholds(params),
        min_value=0,
    )


def count_query(counter: str, by: str, params: Params) -> str:
    """Whole events per interval: ``increase`` extrapolates to the window's edges (1 action reads as
    1.33), so the sum per ``by`` labels is rounded."""
    return (
        f"round(sum by ({by}) (increase({counter}{{{c.webhook_selector(params)}}}[$__rate_interval])))"
    )


def actions(params: Params) -> G.TimeSeries:
    return c.timeseries(
        "Actions taken",
        f"Actions of the rebalancer per kind in each interval (increase of {contract.WEBHOOK_ACTIONS}, "
        "rounded to whole actions); the same increases are the orange annotation lines on every mqttlb "
        "dashboard.",
        c.targets((count_query(contract.WEBHOOK_ACTIONS, "kind", params), "{{kind}}")),
        "none",
        bars=True,
        min_value=0,
        decimals=0,
    )


def failures(params: Params) -> G.TimeSeries:
    return c.timeseries(
        "Action failures",
        f"Actions that failed per kind and reason (increase of {contract.WEBHOOK_FAILURES}, rounded to "
        "whole actions); any bar here means Envoy did not get what the policy decided.",
        c.targets((count_query(contract.WEBHOOK_FAILURES, "kind, reason", params), "{{kind}}: {{reason}}")),
        "none",
        [c.Mark(c.GREEN, None), c.Mark(c.RED, 1.0, "one failed action")],
        bars=True,
        min_value=0,
        decimals=0,
    )


def rejected_requests(params: Params) -> G.TimeSeries:
    return c.timeseries(
        "Rejected requests",
        f"Requests the webhook refused (increase of {contract.WEBHOOK_REJECTED}, rounded to whole requests), by "
        "route and reason: unauthorised (bad token), invalid_payload (malformed JSON, an unknown node), too_large, "
        "unknown_action, wrong_route (unknown path or method), refused (an operator request that cannot be "
        "carried out now: 409).",
        c.targets((count_query(contract.WEBHOOK_REJECTED, "route, reason", params), "{{route}}: {{reason}}")),
        "none",
        bars=True,
        min_value=0,
        decimals=0,
    )


def decision_latency(params: Params) -> G.TimeSeries:
    fast, loop = contract.WEBHOOK_DECISION_SECONDS, contract.WEBHOOK_PASS_SECONDS
    selector = c.webhook_selector(params)

    def mean(metric: str) -> str:
        return (
            f"rate({metric}_sum{{{selector}}}[$__rate_interval]) / rate({metric}_count{{{selector}}}"
            "[$__rate_interval])"
        )

    return c.timeseries(
        "Rebalancer latency",
        f"Mean time of the fast path — a notification validated and applied to the firing set ({fast}) — "
        f"and of one reconcile pass — Prometheus and Envoy read, decision, commit, EDS publish and "
        f"verify ({loop}).",
        c.targets((mean(fast), "notification (fast path)"), (mean(loop), "reconcile pass")),
        "s",
        min_value=0,
    )


def alert_states() -> G.StateTimeline:
    return c.state_timeline(
        "Alert states",
        f'mqttlb alerts (ALERTS{{alertname=~"{c.ALERTNAME_REGEX}"}}) per name and state '
        "(pending/firing): the input the rebalancer reacts to.",
        c.targets(
            (
                f'max by (alertname, alertstate) (ALERTS{{alertname=~"{c.ALERTNAME_REGEX}"}})',
                "{{alertname}} ({{alertstate}})",
            )
        ),
        "none",
    )


def build(params: Params) -> G.Dashboard:
    Cell = c.Cell
    sections = [
        (
            c.row("Decisions", "What the rebalancer decided and what Envoy applied."),
            [
                [Cell(weights(params), 24, 9)],
                [
                    Cell(cluster_mean_cpu(params), 6),
                    Cell(shed_level(params), 6),
                    Cell(connection_cap(params), 6),
                    Cell(refused_connections(params), 6),
                ],
            ],
        ),
        (
            c.row(
                "Evict lever",
                "Clients moved off donor nodes (weights steer only new connections), next to each node's CPU.",
            ),
            [[Cell(cluster_balance.cpu_per_node(params), 12), Cell(evictions_per_node(params), 12)]],
        ),
        (
            c.row("Actions and alerts", "The alerts that drive the rebalancer and the actions it took."),
            [
                [Cell(alert_states(), 24, 7)],
                [
                    Cell(actions(params), 6),
                    Cell(failures(params), 6),
                    Cell(rejected_requests(params), 6),
                    Cell(decision_latency(params), 6),
                ],
            ],
        ),
    ]
    return c.dashboard(
        UID,
        "mqttlb / Rebalancer",
        "Endpoint weights over time (decided by the webhook, applied by Envoy), shedding level and its "
        "effect in Envoy, evictions per node next to CPU, actions taken and the alert states behind them.",
        params,
        sections,
        envoy=True,
    )
