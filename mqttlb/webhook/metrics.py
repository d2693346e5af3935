"""The webhook's own Prometheus metrics (own registry, served at /metrics).

Every labelled counter starts at 0 for every label value the contract knows
(``OutcomeKind``, ``FAILURE_REASONS``, ``REJECT_ROUTES`` x ``REJECT_REASONS``): a counter that is
born at its first increment is invisible to ``increase()`` and ``rate()`` for that increment.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from mqttlb import contract


def _base(name: str, suffix: str) -> str:
    # prometheus-client appends _total to counters itself
    return name[: -len(suffix)] if name.endswith(suffix) else name


class WebhookMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.actions = Counter(
            _base(contract.WEBHOOK_ACTIONS, "_total"),
            "Actions taken by the rebalancer, by kind (rebalance, shed, unshed, recover, hold, noop, ...)",
            ["kind"],
            registry=self.registry,
        )
        self.failures = Counter(
            _base(contract.WEBHOOK_FAILURES, "_total"),
            "Requests or actions that failed, by kind and reason",
            ["kind", "reason"],
            registry=self.registry,
        )
        self.rejected = Counter(
            _base(contract.WEBHOOK_REJECTED, "_total"),
            "Requests refused before any decision (401, 400, 413, 422), by route and reason",
            ["route", "reason"],
            registry=self.registry,
        )
        self.decision_seconds = Histogram(
            contract.WEBHOOK_DECISION_SECONDS,
            "The fast path: a valid notification read, validated and applied to the firing set "
            "(the reconcile loop acts on it; see the pass duration)",
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1),
            registry=self.registry,
        )
        self.weight = Gauge(
            contract.WEBHOOK_WEIGHT,
            "Current EDS load_balancing_weight per node as published",
            ["cluster", "node", "endpoint"],
            registry=self.registry,
        )
        self.shed_level = Gauge(
            contract.WEBHOOK_SHED_LEVEL, "Current shed level (0 = not shedding)", registry=self.registry
        )
        self.pass_seconds = Histogram(
            contract.WEBHOOK_PASS_SECONDS,
            "Time of one reconcile pass: read Prometheus and Envoy, decide, commit, publish, verify",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=self.registry,
        )
        self.firing = Gauge(
            contract.WEBHOOK_FIRING_ALERTS,
            "Rebalance/shed alerts in the controller's firing set, by action",
            ["action"],
            registry=self.registry,
        )
        self._start_at_zero()

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
