"""The webhook's own Prometheus metrics (own registry, served at /metrics).

Every labelled counter starts at 0 for every label value the contract knows
(``OutcomeKind``, ``FAILURE_REASONS``, ``REJECT_ROUTES`` x ``REJECT_REASONS``): a counter that is
born at its first increment is invisible to ``increase()`` and ``rate()`` for that increment.
"""

from __future__ import annotations

from collections.abc import Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from mqttlb import contract
from mqttlb.webhook.firing import IgnoreReason

# Bucket bounds in seconds.
DECISION_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1)
PASS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class WebhookMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.actions = self._counter(
            contract.WEBHOOK_ACTIONS,
            "Actions taken by the rebalancer, by kind (rebalance, shed, unshed, recover, hold, noop, ...)",
            ["kind"],
        )
        self.failures = self._counter(
            contract.WEBHOOK_FAILURES, "Requests or actions that failed, by kind and reason", ["kind", "reason"]
        )
        self.rejected = self._counter(
            contract.WEBHOOK_REJECTED,
            "Requests refused: 401 unauthorised, 400/404 invalid_payload (an unknown node), 404/405 wrong_route, "
            "413 too_large, 422 unknown_action, 409 refused (the operator request cannot be carried out now), "
            "by route and reason",
            ["route", "reason"],
        )
        self.decision_seconds = self._histogram(
            contract.WEBHOOK_DECISION_SECONDS,
            "The fast path: a valid notification read, validated and applied to the firing set "
            "(the reconcile loop acts on it; see the pass duration)",
            DECISION_BUCKETS,
        )
        self.weight = self._gauge(
            contract.WEBHOOK_WEIGHT,
            "Current EDS load_balancing_weight per node as published",
            [contract.ENVOY_CLUSTER_LABEL, contract.NODE_LABEL, contract.ENVOY_ENDPOINT_LABEL],
        )
        self.shed_level = self._gauge(contract.WEBHOOK_SHED_LEVEL, "Current shed level (0 = not shedding)")
        self.pass_seconds = self._histogram(
            contract.WEBHOOK_PASS_SECONDS,
            "Time of one reconcile pass: read Prometheus and Envoy, decide, commit, publish, verify",
            PASS_BUCKETS,
        )
        self.evicted = self._counter(
            contract.WEBHOOK_EVICTED,
            "Connected clients the evict lever disconnected, by node and purpose (rebalance, evacuate)",
            ["node", "purpose"],
        )
        self.firing = self._gauge(
            contract.WEBHOOK_FIRING_ALERTS,
            "Rebalance/shed alerts in the controller's firing set, by action",
            ["action"],
        )
        self.alerts_ignored = self._counter(
            contract.WEBHOOK_ALERTS_IGNORED,
            "Alerts of POST /alerts notifications that changed nothing, by reason (duplicate, stale, test, "
            "other_cluster, unknown_node, ...)",
            ["reason"],
        )
        self._start_at_zero()

    def start_nodes(self, nodes: Sequence[str], purposes: Sequence[str]) -> None:
        """Export the per-node counters at 0 for every node and purpose (the node set is the config's)."""
        for node in nodes:
            for purpose in purposes:
                self.evicted.labels(node, purpose)

    def _counter(self, name: str, documentation: str, labels: Sequence[str]) -> Counter:
        """A counter in this registry exposed as ``name`` (which ends in ``_total``: prometheus-client
        appends that suffix itself, so it is taken off here)."""
        return Counter(name.removesuffix("_total"), documentation, labels, registry=self.registry)

    def _gauge(self, name: str, documentation: str, labels: Sequence[str] = ()) -> Gauge:
        return Gauge(name, documentation, labels, registry=self.registry)

    def _histogram(self, name: str, documentation: str, buckets: Sequence[float]) -> Histogram:
        """An unlabelled histogram in this registry; ``buckets``: upper bounds in seconds."""
        return Histogram(name, documentation, buckets=buckets, registry=self.registry)

    def _start_at_zero(self) -> None:
        for kind in contract.OutcomeKind:
            self.actions.labels(kind.value)
        for failure, reasons in contract.FAILURE_REASONS.items():
            for reason in reasons:
                self.failures.labels(failure, reason)
        for route in contract.REJECT_ROUTES:
            for reason in contract.REJECT_REASONS:
                self.rejected.labels(route, reason)
        for action in (contract.Action.REBALANCE, contract.Action.SHED):
            self.firing.labels(action.value)
        for reason in IgnoreReason:
            self.alerts_ignored.labels(reason.value)
