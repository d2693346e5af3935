"""Weighted-CPU rebalancing policy: per-node samples and current weights in, new weights and a reason out.

Pure functions, no I/O and no clock: the caller passes ``now``.  A node's target share of the new
connections grows with its spare CPU capacity (1 - smoothed utilisation); :mod:`policy_base` turns the
shares into the weights that give them under Envoy's base policy (ROUND_ROBIN or LEAST_REQUEST, the
latter at the connection counts that would even the CPU, see :func:`_targets`), normalised so the mean
target of the nodes that take part equals ``neutral_weight``.  Each decision moves a weight at most
``max_step`` toward its target, keeps it in ``[min_weight, max_weight]`` (``min_weight`` > 0, so never all
zero), ignores differences below ``hysteresis`` and respects the step interval (``cooldown_seconds``)
between two changes.  Nodes without a fresh sample, and DRAINING nodes, keep their weight.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from mqttlb.params import PolicyParams
from mqttlb.webhook import policy_base


@dataclass(frozen=True)
class NodeSample:
    cpu: float | None  # utilisation 0..1 of the node's cores (NODE_CPU); None = no sample
    connections: float | None  # MQTT connections held (NODE_CONNECTIONS)
    age_seconds: float | None  # age of the CPU sample; None = unknown (treated as stale)
    # Connections Envoy holds to the node (its /clusters cx_active): what LEAST_REQUEST divides the weight
    # by.  Clients that reach the broker past Envoy count in ``connections`` but not here.  None = unknown
    # (the policy then uses ``connections``).
    envoy_active: float | None = None
    # The broker's connections averaged over the range the CPU is a rate over: the counts the CPU sample
    # reflects (see :func:`predicted_cpu`).  None = unknown.
    window_connections: float | None = None


@dataclass(frozen=True)
class NodeDecision:
    node: str
    cpu: float | None  # raw sample
    smoothed_cpu: float | None
    fresh: bool
    weight_before: int
    target_weight: float | None
    weight_after: int
    connections: float | None
    weight_share: float  # weight_after / sum of the weights of nodes taking connections
    connection_share: float | None  # connections / total connections
    # Connections held above (+) or below (-) the node's weight share of all connections.  A
    # bounded-eviction lever (e.g. EMQX rebalance: donors = surplus > 0, recipients < 0) plugs in here.
    connection_surplus: float | None


@dataclass(frozen=True)
class Decision:
    weights: dict[str, int]
    smoothed_cpu: dict[str, float]
    changed: bool
    reason: str
    nodes: list[NodeDecision] = field(default_factory=list)
    # The weights the policy steers toward (node -> weight within [min_weight, max_weight]), for the fresh,
    # non-draining nodes; computed in the step interval too.  Empty with fewer than two such nodes.
    targets: dict[str, float] = field(default_factory=dict)

    def donors(self) -> list[str]:
        """Nodes holding more connections than their weight share, largest surplus first."""
        with_surplus = [
            n for n in self.nodes if n.connection_surplus is not None and n.connection_surplus > 0
        ]
        return [n.node for n in sorted(with_surplus, key=lambda n: -(n.connection_surplus or 0.0))]

    def recipients(self) -> list[str]:
        short = [n for n in self.nodes if n.connection_surplus is not None and n.connection_surplus < 0]
        return [n.node for n in sorted(short, key=lambda n: n.connection_surplus or 0.0)]


def _clamp(value: float, low: float, high: float) -> float:
    return max(low, min(high, value))


def _step_toward(current: int, target: float, max_step: int, low: int, high: int) -> int:
    delta = _clamp(target - current, -max_step, max_step)
    moved = current + delta
    # round toward the current weight so a step never overshoots the target
    rounded = math.floor(moved) if delta > 0 else math.ceil(moved)
    return int(_clamp(rounded, low, high))


def smooth(previous: float | None, sample: float, alpha: float) -> float:
    """Exponentially weighted moving average; the first sample is taken as is."""
    if previous is None:
        return sample
    return alpha * sample + (1 - alpha) * previous


def _initial_weight(weights: Mapping[str, int], node: str, params: PolicyParams) -> int:
    return int(_clamp(weights.get(node, params.neutral_weight), params.min_weight, params.max_weight))


def _node_details(
    nodes: list[str],
    samples: Mapping[str, NodeSample],
    before: Mapping[str, int],
    after: Mapping[str, int],
    smoothed: Mapping[str, float],
    targets: Mapping[str, float],
    fresh: set[str],
    active: set[str],
) -> list[NodeDecision]:
    total_weight = sum(after[n] for n in nodes if n in active) or 1
    conns = {n: samples[n].connections for n in nodes if n in samples and samples[n].connections is not None}
    total_conns = sum(c for c in conns.values() if c is not None)
    details = []
    for n in nodes:
        sample = samples.get(n)
        held = conns.get(n)
        share = after[n] / total_weight if n in active else 0.0
        details.append(
            NodeDecision(
                node=n,
                cpu=sample.cpu if sample else None,
                smoothed_cpu=smoothed.get(n),
                fresh=n in fresh,
                weight_before=before[n],
                target_weight=targets.get(n),
                weight_after=after[n],
                connections=held,
                weight_share=share,
                connection_share=(held / total_conns) if held is not None and total_conns > 0 else None,
                connection_surplus=(held - share * total_conns) if held is not None else None,
            )
        )
    return details


def _is_fresh(sample: NodeSample, params: PolicyParams) -> bool:
    if sample.cpu is None or sample.age_seconds is None or not math.isfinite(sample.cpu):
        return False
    return sample.age_seconds <= params.sample_max_age_seconds


def _smoothed(
    smoothed_cpu: Mapping[str, float], samples: Mapping[str, NodeSample], fresh: set[str], alpha: float
) -> dict[str, float]:
    """``smoothed_cpu`` (node -> utilisation 0..1) with each fresh node's sample, clamped to 0..1,
    folded into its moving average; other nodes keep their previous value."""
    smoothed = dict(smoothed_cpu)
    for n in fresh:
        raw = samples[n].cpu
        assert raw is not None
        smoothed[n] = smooth(smoothed.get(n), _clamp(raw, 0.0, 1.0), alpha)
    return smoothed


def _targets(
    cpu: Mapping[str, float], samples: Mapping[str, NodeSample], params: PolicyParams, *, arrivals: float = 0.0
) -> dict[str, float]:
    """Target weight of each node in ``cpu`` (node -> smoothed utilisation 0..1); the mean target is
    ``neutral_weight``.

    ``spare-share``: each node's share of the new connections from spare CPU
    (``policy_base.target_shares``), turned into the weights that make Envoy's base policy
    (``params.base_policy``) hand out that share (``policy_base.weights_for_shares``) at the connection
    counts that would even the CPU (``policy_base.count_targets`` at full gain, from Envoy's own active
    counts where known, else the broker's).  At those counts, not the current ones: under least request a
    node that holds few connections now (back from a restart, a recipient of evicted clients) would
    otherwise get a weight so low that its share collapses after the first few arrivals.
    ``connection-count``: each node's count target (``count_targets`` at ``count_gain``, from the CPU the
    counts held now will give, :func:`predicted_cpu`) reached within one step: with ``arrivals`` (new
    connections expected in one step interval) > 0, the shares that bring the counts there by the next
    decision (``policy_base.shares_toward_counts``), as weights at the targets; with none known, the
    weights under which the base policy settles at the targets in the long run
    (``policy_base.weights_for_counts``)."""
    # Targets depend on the samples only, never on the current weights: bounded steps then converge,
    # and the weights cannot inflate or deflate over time.
    active = {n: _usable_or_none(envoy_active(samples.get(n))) for n in cpu}
    counts = {n: c for n, c in active.items() if c is not None}
    complete = len(counts) == len(cpu) and sum(counts.values()) >= len(cpu)
    if params.steer_target == "connection-count" and complete:
        goal = policy_base.count_targets(predicted_cpu(cpu, samples), counts, params.count_gain)
        if arrivals <= 0:
            return policy_base.weights_for_counts(
                goal, params.base_policy, neutral_weight=params.neutral_weight,
                active_request_bias=params.active_request_bias,
            )
        return policy_base.weights_for_shares(
            policy_base.shares_toward_counts(goal, counts, arrivals, floor=policy_base.MIN_SPARE),
            params.base_policy,
            neutral_weight=params.neutral_weight,
            active=goal,
            active_request_bias=params.active_request_bias,
        )
    at: Mapping[str, float | None] = policy_base.count_targets(cpu, counts, 1.0) if complete else active
    shares = policy_base.target_shares(cpu, params.spare_exponent)
    return policy_base.weights_for_shares(
        shares,
        params.base_policy,
        neutral_weight=params.neutral_weight,
        active=at,
        active_request_bias=params.active_request_bias,
    )


def _usable_count(value: float) -> bool:
    return math.isfinite(value) and value >= 0


def _usable_or_none(count: float | None) -> float | None:
    """``count``, or None (unknown) when it is negative or not finite (NaN/inf from scraped text)."""
    return count if count is not None and _usable_count(count) else None


def predicted_cpu(cpu: Mapping[str, float], samples: Mapping[str, NodeSample]) -> dict[str, float]:
    """Each node's utilisation (0..1) as it will be once the CPU's rate window covers the connections the node
    holds now: ``c_i + k x (n_i - w_i)``, ``n_i`` the broker's connections now, ``w_i`` their average over the
    rate window (the counts the CPU sample reflects) and ``k`` the cluster's mean CPU per connection over the
    window (``sum c / sum w``), clamped to 0..1.  A Smith predictor: the measured CPU lags the counts by the
    rate window, so a target computed from it alone counts the clients moved since as not moved yet and
    overshoots.  ``cpu`` as measured when a node has no count or window average (None, negative or not
    finite), or the window averages sum to 0."""
    known: dict[str, tuple[float, float]] = {}
    for n in cpu:
        sample = samples.get(n)
        now, window = (sample.connections, sample.window_connections) if sample else (None, None)
        if now is not None and window is not None and _usable_count(now) and _usable_count(window):
            known[n] = (now, window)
    window_total = sum(w for _, w in known.values())
    if len(known) < len(cpu) or window_total <= 0:
        return dict(cpu)
    per_connection = sum(cpu.values()) / window_total
    return {n: _clamp(cpu[n] + per_connection * (now - window), 0.0, 1.0) for n, (now, window) in known.items()}


def envoy_active(sample: NodeSample | None) -> float | None:
    """The active-connection count Envoy's least request sees for a node: Envoy's own, else the broker's."""
    if sample is None:
        return None
    return sample.envoy_active if sample.envoy_active is not None else sample.connections


def new_connection_shares(
    weights: Mapping[str, int], samples: Mapping[str, NodeSample], params: PolicyParams
) -> dict[str, float]:
    """Node -> the share (0..1, summing to 1) of the next new connections that ``weights`` give under Envoy's
    base policy (``params.base_policy``) at the nodes' active connections (Envoy's own where known, else
    the broker's; see ``policy_base.pick_shares``).  Raises ValueError for no weight or all weights 0."""
    return policy_base.pick_shares(
        weights,
        params.base_policy,
        active={n: envoy_active(samples.get(n)) for n in weights},
        active_request_bias=params.active_request_bias,
    )


def _stepped(before: Mapping[str, int], targets: Mapping[str, float], params: PolicyParams) -> dict[str, int]:
    """``before`` with each node of ``targets`` that is more than the hysteresis band
    (``hysteresis * neutral_weight``) from its target moved one bounded step toward it."""
    band = params.hysteresis * params.neutral_weight
    after = dict(before)
    for n, target in targets.items():
        if abs(target - before[n]) > band:
            after[n] = _step_toward(before[n], target, params.max_step, params.min_weight, params.max_weight)
    return after


def _spread_summary(cpu: Mapping[str, float], spread: float) -> str:
    """``weighted CPU: spread ... (hottest ..., coolest ...)`` for the reason text."""
    hottest = max(cpu, key=lambda n: cpu[n])
    coolest = min(cpu, key=lambda n: cpu[n])
    return (
        f"weighted CPU: spread {spread:.3f} (hottest {hottest} {cpu[hottest]:.2f}, "
        f"coolest {coolest} {cpu[coolest]:.2f})"
    )


def decide(
    nodes: list[str],
    samples: Mapping[str, NodeSample],
    weights: Mapping[str, int],
    smoothed_cpu: Mapping[str, float],
    params: PolicyParams,
    now: float,
    last_change: float | None,
    draining: frozenset[str] = frozenset(),
    *,
    cooldown_seconds: float,
    connects_per_second: float | None = None,
) -> Decision:
    """One rebalancing decision over *all* ``nodes`` (never the alerting node alone).

    ``connects_per_second``: the cluster's client connects/s (None = unknown); with ``connection-count``
    targets it sets how many arrivals one step places (see :func:`_targets`).

    ``cooldown_seconds``: minimum time since ``last_change`` (the controller's step interval,
    ``mqttlb.params.step_interval_seconds``).
    """
    cooldown = cooldown_seconds
    if not nodes:
        raise ValueError("decide() needs at least one node")
    before = {n: _initial_weight(weights, n, params) for n in nodes}
    fresh = {n for n in nodes if n in samples and _is_fresh(samples[n], params)}
    smoothed = _smoothed(smoothed_cpu, samples, fresh, params.ewma_alpha)
    active = {n for n in nodes if n not in draining}
    steerable = sorted(fresh & active)

    def result(after: Mapping[str, int], targets: Mapping[str, float], reason: str) -> Decision:
        after = dict(after)
        return Decision(
            weights=after,
            smoothed_cpu=smoothed,
            changed=after != before,
            reason=reason,
            nodes=_node_details(nodes, samples, before, after, smoothed, targets, fresh, active),
            targets={n: _clamp(t, params.min_weight, params.max_weight) for n, t in targets.items()},
        )

    stale = sorted(set(nodes) - fresh)
    stale_note = f"; no fresh data for {', '.join(stale)} (weights kept)" if stale else ""
    if len(steerable) < 2:
        return result(before, {}, f"fewer than two fresh, non-draining nodes: nothing to balance{stale_note}")
    cpu = {n: smoothed[n] for n in steerable}
    targets = _targets(cpu, samples, params, arrivals=(connects_per_second or 0.0) * cooldown)
    if last_change is not None and now - last_change < cooldown:
        remaining = cooldown - (now - last_change)
        return result(before, targets, f"cooldown: {remaining:.1f}s left{stale_note}")
    spread = max(cpu.values()) - min(cpu.values())
    if spread < params.hysteresis:
        return result(before, targets, f"CPU spread {spread:.3f} below hysteresis {params.hysteresis}{stale_note}")
    after = _stepped(before, targets, params)
    summary = _spread_summary(cpu, spread)
    if after == before:
        return result(after, targets, f"{summary}; weights already within hysteresis of target{stale_note}")
    return result(after, targets, f"{summary}; weights moved toward spare capacity{stale_note}")


def recovery_hold(
    samples: Mapping[str, NodeSample], params: PolicyParams, draining: frozenset[str] = frozenset()
) -> str | None:
    """Why the weights should stay as they are instead of stepping back to neutral, or None.

    A resolved imbalance alert often means the weights are doing their job: walking them back
    would bring the imbalance back and fire the alert again.  So recovery waits until the CPU
    spread of the fresh, non-draining nodes is below ``recover_max_spread`` (load gone or evened
    out).  With fewer than two such nodes there is nothing to judge and recovery goes ahead.
    """
    cpu = [
        _clamp(sample.cpu, 0.0, 1.0)
        for node, sample in samples.items()
        if node not in draining and _is_fresh(sample, params) and sample.cpu is not None
    ]
    if len(cpu) < 2:
        return None
    spread = max(cpu) - min(cpu)
    if spread < params.recover_max_spread:
        return None
    return f"CPU spread {spread:.3f} still >= {params.recover_max_spread}: weights held, not recovered"


def recover(weights: Mapping[str, int], params: PolicyParams) -> tuple[dict[str, int], bool]:
    """One slow-ramp step of every weight toward neutral (after the alert resolved)."""
    after = {
        n: _step_toward(
            int(_clamp(w, params.min_weight, params.max_weight)),
            params.neutral_weight,
            params.recover_step,
            params.min_weight,
            params.max_weight,
        )
        for n, w in weights.items()
    }
    neutral = all(w == params.neutral_weight for w in after.values())
    return after, neutral
