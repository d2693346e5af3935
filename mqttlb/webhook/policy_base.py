"""From spare CPU to Envoy weights, for the base load-balancing policy Envoy runs: pure, no I/O.

Weights steer only *new* connections, so the policy decides each node's **share of the new
connections** first (:func:`target_shares`, from spare CPU) and then converts that share into the
``load_balancing_weight`` values that make Envoy's base policy hand out those shares
(:func:`weights_for_shares`).  :func:`pick_shares` is the inverse: the share of the next connections
each node gets from given weights.

What Envoy does with the weights (Envoy's "Supported load balancers" page and the
``least_request.proto`` reference, https://www.envoyproxy.io/docs/envoy/latest/intro/arch_overview/upstream/load_balancing/load_balancers
and https://www.envoyproxy.io/docs/envoy/latest/api-v3/extensions/load_balancing_policies/least_request/v3/least_request.proto;
measured on Envoy 1.40 in ``/work/shared/reference/envoy-levers.md`` §1):

* ``ROUND_ROBIN``: a weighted round-robin schedule; node i gets ``w_i / sum(w)`` of the new connections,
  whatever it already holds.
* ``LEAST_REQUEST`` with unequal weights: an EDF schedule on the dynamic weight
  ``w_i / (active_i + 1) ** active_request_bias``; for tcp_proxy ``active`` is the node's active
  connections (``rq_active`` equals ``cx_active``).  So the next connection goes to node i with
  probability ``w_i / (a_i + 1) ** b`` over the sum of those; to give node i a share ``p_i`` *now*, its
  weight must be ``p_i x (a_i + 1) ** b`` (normalised).  As connections land the dynamic weights fall
  where they landed, so between two decisions least request still evens out connection counts: CPU
  sets the share at each decision, the count term damps the drift until the next one.  With all
  weights equal Envoy uses power-of-two-choices on the active counts instead (no formula to invert).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

BasePolicy = Literal["ROUND_ROBIN", "LEAST_REQUEST"]
BASE_POLICIES: tuple[BasePolicy, ...] = ("ROUND_ROBIN", "LEAST_REQUEST")
MIN_SPARE = 0.01  # a node at 100 % CPU keeps a sliver of share; min_weight is the real floor


def target_shares(cpu: Mapping[str, float], spare_exponent: float) -> dict[str, float]:
    """Each node's share (0..1, summing to 1) of the new connections, proportional to
    ``max(MIN_SPARE, 1 - cpu) ** spare_exponent``.

    ``cpu``: node -> smoothed utilisation 0..1 (values outside are clamped).  An exponent above 1 takes
    the hotter node's share down faster than its spare capacity, which offsets load that weights cannot
    move (connections that stay where they are).  Raises ValueError for no node or an exponent <= 0."""
    if not cpu:
        raise ValueError("target_shares() needs at least one node")
    if spare_exponent <= 0:
        raise ValueError(f"spare_exponent must be > 0, got {spare_exponent}")
    spare = {n: max(MIN_SPARE, 1.0 - min(1.0, max(0.0, c))) ** spare_exponent for n, c in cpu.items()}
    total = sum(spare.values())
    return {n: s / total for n, s in spare.items()}


def count_targets(
    cpu: Mapping[str, float], counts: Mapping[str, float], gain: float, *, floor_fraction: float = 0.2
) -> dict[str, float]:
    """Each node's target number of connections: ``n_i - gain x (c_i - mean c) / k``, where ``k`` is the
    cluster's CPU per connection (``sum c / sum n``), so a node ``d`` above the mean CPU is to hold the
    connections that carry ``gain x d`` fewer.  Targets sum to ``sum n``; none is below ``floor_fraction``
    of the mean count (a node is never steered empty).

    ``cpu``: node -> utilisation 0..1; ``counts``: node -> active connections (same nodes, >= 0, summing
    to > 0); ``gain``: 0 < gain <= 1, the share of the estimated move asked for at once (the CPU lags the
    counts by the rate window, so less than 1 keeps a second step from counting the first one's move
    twice).  ``k`` is the *mean* cost of a connection: the clients that move are mostly lighter than the
    heavy ones that stay, so the move asked for errs on the small side and the next step adds to it
    (integral action: with even CPU the targets are the counts as they are, whatever they are).
    Raises ValueError for no node, different node sets, a negative or all-zero count, or a gain out of
    range."""
    if not cpu or set(cpu) != set(counts):
        raise ValueError("count_targets() needs the same nodes, at least one, in cpu and counts")
    if not 0 < gain <= 1 or not 0 <= floor_fraction < 1:
        raise ValueError(f"need 0 < gain <= 1 and 0 <= floor_fraction < 1, got {gain}, {floor_fraction}")
    if any(n < 0 for n in counts.values()) or sum(counts.values()) <= 0:
        raise ValueError("counts must be >= 0 and not all 0")
    total = sum(counts.values())
    used = sum(min(1.0, max(0.0, c)) for c in cpu.values())
    mean_cpu = used / len(cpu)
    floor = floor_fraction * total / len(cpu)
    per_connection = used / total
    if not per_connection > 0:  # no CPU in use (or too little to divide by): nothing to even out
        return {n: float(counts[n]) for n in counts}
    raw = {n: max(floor, counts[n] - gain * (min(1.0, max(0.0, cpu[n])) - mean_cpu) / per_connection) for n in cpu}
    scale = total / sum(raw.values())
    return {n: v * scale for n, v in raw.items()}


def weights_for_counts(
    targets: Mapping[str, float], base: BasePolicy, *, neutral_weight: float, active_request_bias: float = 1.0
) -> dict[str, float]:
    """Weights (floats, mean ``neutral_weight``) under which Envoy's base policy settles each node at its
    ``targets`` connections while clients come and go (arrivals match departures, which are proportional
    to the connections held).  ROUND_ROBIN: arrivals ~ w, so ``w ~ n``.  LEAST_REQUEST: arrivals ~
    ``w / (n + 1) ** bias``, so ``w ~ n x (n + 1) ** bias``; a node above its target then gets fewer new
    connections than it loses and one below more, so Envoy steers the counts toward the targets at the
    pace of the churn, between two decisions.  Raises ValueError for an unknown base, no node, a negative
    target or bias, or all targets 0."""
    if base not in BASE_POLICIES:
        raise ValueError(f"base policy must be one of {', '.join(BASE_POLICIES)}, got {base!r}")
    if not targets or any(t < 0 for t in targets.values()) or sum(targets.values()) <= 0 or active_request_bias < 0:
        raise ValueError("weights_for_counts() needs targets >= 0, not all 0, and a bias >= 0")
    nodes = sorted(targets)
    if base == "ROUND_ROBIN":
        raw = {n: float(targets[n]) for n in nodes}
    else:
        raw = {n: targets[n] * (targets[n] + 1.0) ** active_request_bias for n in nodes}
    return _mean_at(raw, neutral_weight)


def shares_toward_counts(
    targets: Mapping[str, float], active: Mapping[str, float], arrivals: float, *, floor: float = 0.0
) -> dict[str, float]:
    """Each node's share (0..1, summing to 1) of the next ``arrivals`` new connections that brings it from
    ``active`` to its ``targets`` connections by then, while clients leave every node in proportion to what
    it holds: ``a_i / sum a + (target_i - a_i) / arrivals``, at least ``floor``, normalised.

    ``arrivals``: the new connections expected before the next decision (connects/s x the step interval,
    > 0).  Few arrivals (slow churn, or nobody connecting) make the shares extreme: a node below its target
    takes nearly all of them; many make them gentle.  Raises ValueError for different node sets, a negative
    count or target, all counts 0, or ``arrivals`` <= 0."""
    if set(targets) != set(active) or not targets:
        raise ValueError("shares_toward_counts() needs the same nodes, at least one, in targets and active")
    if arrivals <= 0 or any(v < 0 for v in (*targets.values(), *active.values())) or sum(active.values()) <= 0:
        raise ValueError("need arrivals > 0, targets and counts >= 0, and counts not all 0")
    held = sum(active.values())
    raw = {n: max(floor, active[n] / held + (targets[n] - active[n]) / arrivals) for n in targets}
    total = sum(raw.values())
    if total <= 0:
        return {n: 1.0 / len(raw) for n in raw}
    return {n: v / total for n, v in raw.items()}


def _mean_at(raw: Mapping[str, float], neutral_weight: float) -> dict[str, float]:
    """``raw`` scaled so that its mean is ``neutral_weight`` (raw values > 0 in total)."""
    mean = sum(raw.values()) / len(raw)
    return {n: neutral_weight * v / mean for n, v in raw.items()}


def _active_factors(
    nodes: list[str], active: Mapping[str, float | None], bias: float
) -> dict[str, float]:
    """``(a_i + 1) ** bias`` per node; a node with no count gets the mean count of the others (0 if none)."""
    known = [float(v) for n in nodes if (v := active.get(n)) is not None and v >= 0]
    fallback = sum(known) / len(known) if known else 0.0
    factors = {}
    for n in nodes:
        count = active.get(n)
        held = float(count) if count is not None and count >= 0 else fallback
        factors[n] = (held + 1.0) ** bias
    return factors


def weights_for_shares(
    shares: Mapping[str, float],
    base: BasePolicy,
    *,
    neutral_weight: float,
    active: Mapping[str, float | None] | None = None,
    active_request_bias: float = 1.0,
) -> dict[str, float]:
    """Weights (floats, mean ``neutral_weight``) that make ``base`` give each node its ``shares`` of the
    next new connections.

    ``shares``: node -> share >= 0 (not all 0; normalised here); ``active``: node -> active connections
    (LEAST_REQUEST only; missing or None = the mean of the known ones); ``active_request_bias``: Envoy's
    ``least_request_lb_config.active_request_bias`` (>= 0).  ROUND_ROBIN: weight ~ share.  LEAST_REQUEST:
    weight ~ share x (active + 1) ** bias.  The caller rounds and clamps (min/max weight, bounded step).
    Raises ValueError for an unknown base, no node, a negative share or bias, or all shares 0."""
    if base not in BASE_POLICIES:
        raise ValueError(f"base policy must be one of {', '.join(BASE_POLICIES)}, got {base!r}")
    if not shares:
        raise ValueError("weights_for_shares() needs at least one node")
    if any(s < 0 for s in shares.values()) or active_request_bias < 0:
        raise ValueError("shares and active_request_bias must be >= 0")
    total = sum(shares.values())
    if total <= 0:
        raise ValueError("at least one share must be > 0")
    nodes = sorted(shares)
    if base == "ROUND_ROBIN":
        raw = {n: shares[n] / total for n in nodes}
    else:
        factors = _active_factors(nodes, active or {}, active_request_bias)
        raw = {n: shares[n] / total * factors[n] for n in nodes}
    return _mean_at(raw, neutral_weight)


def pick_shares(
    weights: Mapping[str, float],
    base: BasePolicy,
    *,
    active: Mapping[str, float | None] | None = None,
    active_request_bias: float = 1.0,
) -> dict[str, float]:
    """The share (0..1, summing to 1) of the next new connection each node gets from ``weights`` under
    ``base`` (the inverse of :func:`weights_for_shares`; for LEAST_REQUEST with unequal weights, at the
    given ``active`` counts).  Raises ValueError for no node, a negative weight or all weights 0."""
    if base not in BASE_POLICIES:
        raise ValueError(f"base policy must be one of {', '.join(BASE_POLICIES)}, got {base!r}")
    if not weights or any(w < 0 for w in weights.values()) or sum(weights.values()) <= 0:
        raise ValueError("pick_shares() needs at least one node, weights >= 0, not all 0")
    nodes = sorted(weights)
    if base == "ROUND_ROBIN":
        dynamic = {n: float(weights[n]) for n in nodes}
    else:
        factors = _active_factors(nodes, active or {}, active_request_bias)
        dynamic = {n: weights[n] / factors[n] for n in nodes}
    total = sum(dynamic.values())
    return {n: d / total for n, d in dynamic.items()}
