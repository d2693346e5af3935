"""Unit and property tests of the pure weighted-CPU policy."""

from __future__ import annotations

from functools import partial

from hypothesis import given, settings
from hypothesis import strategies as st

from mqttlb.params import PolicyParams, load_params
from mqttlb.webhook import policy
from mqttlb.webhook.policy import NodeSample, recover, recovery_hold

P = load_params().policy
NODES = ["node1", "node2", "node3"]
STEP = 15.0  # the controller's step interval (mqttlb.params.step_interval_seconds) in these tests
decide = partial(policy.decide, cooldown_seconds=STEP)


def fresh(cpu: float, connections: float = 100.0) -> NodeSample:
    return NodeSample(cpu=cpu, connections=connections, age_seconds=1.0)


def params(**overrides: object) -> PolicyParams:
    return P.model_copy(update=overrides)


def run(samples, weights, p=P, steps=1, start=0.0, smoothed=None):
    smoothed = dict(smoothed or {})
    last = None
    decision = None
    for i in range(steps):
        now = start + i * (STEP + 1)
        decision = decide(NODES, samples, weights, smoothed, p, now, last)
        if decision.changed:
            last = now
        weights, smoothed = decision.weights, decision.smoothed_cpu
    return decision


def test_weight_moves_away_from_the_hot_node_toward_the_cool_ones():
    d = run({"node1": fresh(0.9), "node2": fresh(0.3), "node3": fresh(0.3)}, dict.fromkeys(NODES, 100))
    assert d.changed
    assert d.weights["node1"] < 100 < d.weights["node2"]
    assert d.weights["node2"] == d.weights["node3"]
    assert all(abs(d.weights[n] - 100) <= P.max_step for n in NODES)
    assert "hottest node1" in d.reason


def test_spread_below_hysteresis_changes_nothing():
    d = run({"node1": fresh(0.52), "node2": fresh(0.50), "node3": fresh(0.49)}, dict.fromkeys(NODES, 100))
    assert not d.changed and "hysteresis" in d.reason


def test_cooldown_blocks_a_second_change():
    samples = {"node1": fresh(0.9), "node2": fresh(0.2), "node3": fresh(0.2)}
    first = decide(NODES, samples, dict.fromkeys(NODES, 100), {}, P, now=100.0, last_change=None)
    second = decide(NODES, samples, first.weights, first.smoothed_cpu, P, now=105.0, last_change=100.0)
    assert first.changed and not second.changed and "cooldown" in second.reason
    third = decide(
        NODES,
        samples,
        first.weights,
        first.smoothed_cpu,
        P,
        now=100.0 + STEP,
        last_change=100.0,
    )
    assert third.changed


def test_stale_and_missing_nodes_keep_their_weight():
    samples = {
        "node1": fresh(0.9),
        "node2": fresh(0.1),
        "node3": NodeSample(cpu=0.0, connections=5, age_seconds=P.sample_max_age_seconds + 1),
    }
    d = run(samples, {"node1": 100, "node2": 100, "node3": 77})
    assert d.weights["node3"] == 77 and d.changed
    assert "no fresh data for node3" in d.reason
    d2 = run({"node1": fresh(0.9)}, {"node1": 100, "node2": 120, "node3": 80})
    assert d2.weights == {"node1": 100, "node2": 120, "node3": 80} and not d2.changed


def test_draining_nodes_are_not_steered():
    samples = {n: fresh(c) for n, c in zip(NODES, [0.9, 0.2, 0.2], strict=True)}
    d = decide(NODES, samples, dict.fromkeys(NODES, 100), {}, P, 0.0, None, draining=frozenset({"node1"}))
    assert d.weights["node1"] == 100
    assert next(n for n in d.nodes if n.node == "node1").weight_share == 0.0


def test_ewma_smooths_a_single_spike():
    weights = dict.fromkeys(NODES, 100)
    smoothed = {"node1": 0.3, "node2": 0.3, "node3": 0.3}
    d = decide(
        NODES,
        {"node1": fresh(0.9), "node2": fresh(0.3), "node3": fresh(0.3)},
        weights,
        smoothed,
        params(ewma_alpha=0.5),
        0.0,
        None,
    )
    assert abs(d.smoothed_cpu["node1"] - 0.6) < 1e-9


def test_decision_reports_connection_surplus_for_a_later_eviction_lever():
    samples = {"node1": fresh(0.9, 600), "node2": fresh(0.3, 200), "node3": fresh(0.3, 200)}
    d = run(samples, dict.fromkeys(NODES, 100))
    by = {n.node: n for n in d.nodes}
    assert by["node1"].connection_surplus > 0 > by["node2"].connection_surplus
    assert abs(sum(n.connection_surplus for n in d.nodes)) < 1e-6
    assert d.donors() == ["node1"] and set(d.recipients()) == {"node2", "node3"}
    assert abs(by["node1"].connection_share - 0.6) < 1e-9


def test_recover_steps_toward_neutral_and_stops_there():
    weights = {"node1": 40, "node2": 160, "node3": 100}
    steps = 0
    neutral = False
    while not neutral and steps < 20:
        new, neutral = recover(weights, P)
        assert all(abs(new[n] - weights[n]) <= P.recover_step for n in NODES)
        weights = new
        steps += 1
    assert neutral and weights == dict.fromkeys(NODES, P.neutral_weight)
    assert steps == 3  # 60 / 25 rounded up


def test_recovery_holds_the_weights_while_the_cpu_spread_persists():
    uneven = {"node1": fresh(0.72), "node2": fresh(0.6), "node3": fresh(0.61)}
    reason = recovery_hold(uneven, P)
    assert reason is not None and "0.120" in reason and "held" in reason
    even = {"node1": fresh(0.62), "node2": fresh(0.6), "node3": fresh(0.61)}
    assert recovery_hold(even, P) is None  # spread 0.02 < recover_max_spread: recover
    idle = {n: fresh(0.0) for n in NODES}
    assert recovery_hold(idle, P) is None  # load gone
    # A draining node's CPU does not count, nor does a stale sample, and with fewer than two
    # nodes left to compare nothing holds recovery back.
    assert recovery_hold(uneven, P, draining=frozenset({"node1"})) is None
    stale = {**even, "node1": NodeSample(cpu=0.99, connections=1.0, age_seconds=P.sample_max_age_seconds + 1)}
    assert recovery_hold(stale, P) is None
    assert recovery_hold({"node1": fresh(0.9)}, P) is None
    assert recovery_hold(uneven, params(recover_max_spread=0.2)) is None


cpus = st.floats(min_value=0.0, max_value=1.0, allow_nan=False)
weight_values = st.integers(min_value=P.min_weight, max_value=P.max_weight)
policy_params = st.builds(
    lambda mn, span, step, alpha, hyst: params(
        min_weight=mn,
        max_weight=mn + span,
        neutral_weight=mn + span // 2,
        max_step=step,
        ewma_alpha=alpha,
        hysteresis=hyst,
    ),
    st.integers(1, 50),
    st.integers(0, 500),
    st.integers(1, 100),
    st.floats(0.05, 1.0),
    st.floats(0.0, 0.2),
)


@settings(max_examples=300, deadline=None)
@given(
    cpu=st.lists(cpus, min_size=3, max_size=3),
    w=st.lists(weight_values, min_size=3, max_size=3),
    p=policy_params,
    ages=st.lists(st.one_of(st.none(), st.floats(0, 200)), min_size=3, max_size=3),
)
def test_weights_stay_in_bounds_and_never_all_zero(cpu, w, p, ages):
    weights = {n: max(p.min_weight, min(p.max_weight, x)) for n, x in zip(NODES, w, strict=True)}
    samples = {n: NodeSample(c, 10, a) for n, c, a in zip(NODES, cpu, ages, strict=True)}
    d = decide(NODES, samples, weights, {}, p, 0.0, None)
    assert all(p.min_weight <= d.weights[n] <= p.max_weight for n in NODES)
    assert any(v > 0 for v in d.weights.values())
    assert all(abs(d.weights[n] - weights[n]) <= p.max_step for n in NODES)
    for n, a in zip(NODES, ages, strict=True):
        if a is None or a > p.sample_max_age_seconds:
            assert d.weights[n] == weights[n]


@settings(max_examples=200, deadline=None)
@given(
    cpu=st.lists(cpus, min_size=3, max_size=3),
    w=st.lists(weight_values, min_size=3, max_size=3),
    p=policy_params,
)
def test_converges_for_static_input(cpu, w, p):
    weights = {n: max(p.min_weight, min(p.max_weight, x)) for n, x in zip(NODES, w, strict=True)}
    samples = {n: fresh(c) for n, c in zip(NODES, cpu, strict=True)}
    smoothed: dict[str, float] = {}
    history = []
    rounds = (p.max_weight - p.min_weight) // p.max_step + 300
    for i in range(rounds):
        d = decide(NODES, samples, weights, smoothed, p, i * (STEP + 1), None)
        weights, smoothed = d.weights, d.smoothed_cpu
        history.append(weights)
    assert history[-1] == history[-2] == history[-10], history[-10:]


@settings(max_examples=300, deadline=None)
@given(
    hot=st.floats(0.0, 1.0),
    cool=st.floats(0.0, 1.0),
    mid=st.floats(0.0, 1.0),
    w=st.one_of(st.just(P.neutral_weight), weight_values),
)
def test_moves_toward_the_cooler_node(hot, cool, mid, w):
    if hot - cool <= P.hysteresis:
        hot, cool = min(1.0, cool + P.hysteresis + 0.01), cool
        if hot - cool <= P.hysteresis:
            return
    weights = dict.fromkeys(NODES, w)
    samples = {"node1": fresh(hot), "node2": fresh(cool), "node3": fresh(mid)}
    d = decide(NODES, samples, weights, {}, P, 0.0, None)
    assert d.weights["node2"] >= d.weights["node1"]
    if w == P.neutral_weight and hot - cool >= 0.2 and hot >= mid >= cool:
        # from balanced weights a clearly hotter node loses and the coolest one gains
        assert d.weights["node1"] < w < d.weights["node2"]
