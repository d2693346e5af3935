"""The evict lever's pure policy (mqttlb.webhook.eviction_policy) and its place in decide_pass.

Property tests (hypothesis) for the invariants the issue names: victims' load adds up to at most the
surplus, never a client heavier than the surplus, bounds hold, persistent sessions stay on
independent brokers, never a donor that is not above the mean; table tests for the trigger.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mqttlb import contract
from mqttlb.brokers.eviction import ClientLoad
from mqttlb.params import EvictionParams, load_params
from mqttlb.webhook import eviction_policy as ep
from mqttlb.webhook.plan import Desired, Observation, decide_pass, timing_for
from mqttlb.webhook.policy import NodeSample, new_connection_shares
from mqttlb.webhook.shedding import max_level
from mqttlb.webhook.state import WebhookState

PARAMS = load_params()
EV = PARAMS.eviction
TIMING = timing_for(PARAMS, 5.0)
SETTINGS = ep.eviction_settings(PARAMS, TIMING.step_seconds, TIMING.pass_seconds)
NODES = ["node1", "node2", "node3"]
NOW = 1_000_000.0


def shares(weights: dict[str, int], active: dict[str, float] | None = None) -> dict[str, float]:
    """The shipped base policy's share of new connections for ``weights`` at ``active`` connections (equal if
    not given, so the shares follow the weights)."""
    samples = {n: NodeSample(0.5, a, 1.0, envoy_active=a) for n, a in (active or {}).items()}
    return new_connection_shares(weights, samples, PARAMS.policy)


def client(i: int, rate: float, persistent: bool = False, prefix: str = "c") -> ClientLoad:
    return ClientLoad(f"{prefix}{i}", rate, rate * 100, persistent, 4, 60.0)


clients_strategy = st.lists(
    st.tuples(st.floats(min_value=0, max_value=500), st.booleans()), min_size=0, max_size=300
).map(lambda items: [client(i, rate, persistent) for i, (rate, persistent) in enumerate(items)])


# ----------------------------------------------------------------------------- victims
@settings(max_examples=200, deadline=None)
@given(
    clients=clients_strategy,
    node_cpu=st.floats(min_value=0.01, max_value=2.0),
    surplus=st.floats(min_value=0.0, max_value=1.0),
    room=st.floats(min_value=0.0, max_value=1.0),
    shared=st.booleans(),
    allow=st.booleans(),
    max_fraction=st.floats(min_value=0.01, max_value=1.0),
    max_per_second=st.floats(min_value=0.5, max_value=200),
)
def test_victims_add_up_to_at_most_the_surplus_within_bounds(
    clients: list[ClientLoad],
    node_cpu: float,
    surplus: float,
    room: float,
    shared: bool,
    allow: bool,
    max_fraction: float,
    max_per_second: float,
) -> None:
    params = EvictionParams(max_fraction=max_fraction, max_per_second=max_per_second, allow_persistent=allow)
    choice = ep.choose_victims(
        node_cpu, surplus, clients, room=room, shared_sessions=shared, params=params, batch_seconds=2.5
    )
    by_id = {c.client_id: c for c in clients}
    total = sum(c.messages_in_per_s for c in clients)
    loads = [node_cpu * by_id[v].messages_in_per_s / total for v in choice.clients] if choice.clients else []
    assert math.isclose(sum(loads), choice.load, abs_tol=1e-9)
    assert choice.load <= surplus + 1e-6
    assert all(load <= min(surplus, room) + 1e-12 and load > 0 for load in loads)
    assert len(choice.clients) <= choice.bound
    assert choice.bound <= max(1, math.floor(max_per_second * 2.5))
    assert choice.bound <= max(1, math.floor(max_fraction * len(clients)))
    assert len(set(choice.clients)) == len(choice.clients)
    if not (shared or allow):
        assert not any(by_id[v].persistent for v in choice.clients)


@settings(max_examples=100, deadline=None)
@given(count=st.integers(min_value=20, max_value=400), surplus=st.floats(min_value=0.05, max_value=0.4))
def test_many_light_clients_fill_the_surplus(count: int, surplus: float) -> None:
    """Equal light clients (the restart pile-up): the batch takes the surplus' worth, up to the bound."""
    clients = [client(i, 6.0) for i in range(count)]
    params = EvictionParams(max_fraction=1.0, max_per_second=1000)
    choice = ep.choose_victims(0.8, surplus, clients, room=1.0, shared_sessions=False, params=params, batch_seconds=2.5)
    each = 0.8 / count
    assert surplus - each < choice.load + 1e-9 <= surplus + each
    assert len(choice.clients) == math.floor(surplus / each + 1e-9)


def test_the_one_heavy_client_is_never_taken_only_light_ones() -> None:
    """Evicting the heaviest client would move the hot spot: it carries more than the surplus."""
    clients = [client(0, 900.0, prefix="heavy"), *(client(i, 10.0) for i in range(1, 11))]
    choice = ep.choose_victims(
        1.0, 0.2, clients, room=0.5, shared_sessions=False, params=EvictionParams(max_fraction=1.0), batch_seconds=2.5
    )
    assert "heavy0" not in choice.clients and choice.skipped_heavy == 1
    assert len(choice.clients) == 10 and choice.load == pytest.approx(0.1)


def test_own_clients_and_idle_clients_are_never_taken() -> None:
    clients = [
        ClientLoad(contract.HEALTH_CHECK_CLIENT_ID, 5.0, 5.0, False, 4, 1.0),
        ClientLoad(contract.EVICTION_CONTROL_CLIENT_ID, 5.0, 5.0, False, 5, 1.0),
        client(1, 0.0),
        client(2, 5.0),
    ]
    params = EvictionParams(max_fraction=1.0)
    choice = ep.choose_victims(0.9, 0.9, clients, room=1.0, shared_sessions=True, params=params, batch_seconds=2.5)
    assert choice.clients == ("c2",)


def test_persistent_sessions_move_only_with_shared_sessions_or_the_opt_in() -> None:
    clients = [client(i, 5.0, persistent=i % 2 == 0) for i in range(10)]
    params = EvictionParams(max_fraction=1.0)
    kept = ep.choose_victims(0.9, 0.9, clients, room=1.0, shared_sessions=False, params=params, batch_seconds=2.5)
    assert kept.skipped_persistent == 5 and len(kept.clients) == 5
    shared = ep.choose_victims(0.9, 0.9, clients, room=1.0, shared_sessions=True, params=params, batch_seconds=2.5)
    assert len(shared.clients) == 10
    opted = EvictionParams(max_fraction=1.0, allow_persistent=True)
    assert (
        len(
            ep.choose_victims(
                0.9, 0.9, clients, room=1.0, shared_sessions=False, params=opted, batch_seconds=2.5
            ).clients
        )
        == 10
    )


def test_evacuation_takes_every_evictable_client_at_the_rate_bound() -> None:
    clients = [client(i, float(i)) for i in range(100)]
    params = EvictionParams(max_per_second=10)
    first = ep.evacuation_victims(clients, shared_sessions=False, params=params, batch_seconds=2.5)
    assert len(first.clients) == 25 and first.eligible == 100 and first.clients[0] == "c99"


# ----------------------------------------------------------------------------- donors and recipients
@settings(max_examples=200, deadline=None)
@given(
    cpu=st.dictionaries(st.sampled_from(["n1", "n2", "n3", "n4", "n5"]), st.floats(0, 1.5), min_size=2),
    target=st.floats(min_value=0.01, max_value=0.5),
)
def test_donors_are_above_the_mean_by_the_target_and_recipients_below(cpu: dict[str, float], target: float) -> None:
    spread = ep.spread_of(cpu)
    assert spread is not None
    weights = {n: (10 if c > spread.mean else 400) for n, c in cpu.items()}
    intent = ep.intent(
        spread,
        cpu,
        weights,
        shares=shares(weights),
        armed=True,
        reason="t",
        evacuating=(),
        last_eviction={},
        cooldown_seconds=35,
        params=EvictionParams(spread_target=target),
        now=NOW,
    )
    for donor in intent.donors:
        assert cpu[donor.node] - spread.mean > target and donor.surplus == pytest.approx(cpu[donor.node] - spread.mean)
    assert all(cpu[r] < spread.mean for r in intent.recipients)
    assert not set(intent.recipients) & {d.node for d in intent.donors}


def test_nothing_is_evicted_until_the_weights_favour_the_recipients() -> None:
    cpu = {"node1": 0.8, "node2": 0.8, "node3": 0.0}
    spread = ep.spread_of(cpu)
    common = dict(armed=True, reason="t", evacuating=(), last_eviction={}, cooldown_seconds=35, params=EV, now=NOW)
    even = dict.fromkeys(cpu, 100)
    neutral = ep.intent(spread, cpu, even, shares=shares(even), **common)  # type: ignore[arg-type]
    assert not neutral.donors and "weights do not favour" in (neutral.waiting or "")
    halfway = {"node1": 50, "node2": 50, "node3": 150}  # node3 would take 60 %: 40 % of the evicted come back
    waiting = ep.intent(spread, cpu, halfway, shares=shares(halfway), **common)  # type: ignore[arg-type]
    assert not waiting.donors and "they would take 60% of the new connections, at least 80% wanted" in (
        waiting.waiting or "")
    weights = {"node1": 10, "node2": 10, "node3": 200}  # 91 %
    steered = ep.intent(spread, cpu, weights, shares=shares(weights), **common)  # type: ignore[arg-type]
    assert [d.node for d in steered.donors] == ["node1", "node2"] and steered.recipients == ("node3",)
    assert steered.room == pytest.approx(0.8 * 2 / 3)


def test_under_least_request_an_empty_recipient_is_favoured_whatever_its_raw_weight() -> None:
    """restart-pileup, seed 1 (docs/experiment/restart-pileup/runs): node3 came back empty and least request's
    weights for it fell to 21 (weight ~ share x (active + 1)), below the donors' 100 and 128.  Envoy still
    sends it nearly every new connection (21 / 1 against 100 / 151), so the lever must evict; comparing raw
    weights held it back for the whole run."""
    cpu = {"node1": 0.81, "node2": 0.86, "node3": 0.03}
    spread = ep.spread_of(cpu)
    weights = {"node1": 100, "node2": 128, "node3": 21}
    common = dict(armed=True, reason="t", evacuating=(), last_eviction={}, cooldown_seconds=35, params=EV, now=NOW)
    piled = shares(weights, {"node1": 150, "node2": 150, "node3": 0})
    assert piled["node3"] > 0.9
    lr = ep.intent(spread, cpu, weights, shares=piled, **common)  # type: ignore[arg-type]
    assert [d.node for d in lr.donors] == ["node2", "node1"] and lr.waiting is None
    even = ep.intent(spread, cpu, weights, shares=shares(weights), **common)  # type: ignore[arg-type]
    assert not even.donors and "weights do not favour the recipients over node1, node2" in (even.waiting or "")


def test_cooldown_and_unarmed_and_no_recipient() -> None:
    cpu = {"node1": 0.8, "node2": 0.1, "node3": 0.1}
    spread = ep.spread_of(cpu)
    weights = {"node1": 20, "node2": 150, "node3": 150}
    base = dict(reason="t", evacuating=(), cooldown_seconds=35, params=EV, now=NOW)
    base = dict(base, shares=shares(weights))
    cooling = ep.intent(spread, cpu, weights, armed=True, last_eviction={"node1": NOW - 10}, **base)  # type: ignore[arg-type]
    assert not cooling.donors and "cooldown" in (cooling.waiting or "")
    later = ep.intent(spread, cpu, weights, armed=True, last_eviction={"node1": NOW - 35}, **base)  # type: ignore[arg-type]
    assert [d.node for d in later.donors] == ["node1"]
    assert not ep.intent(spread, cpu, weights, armed=False, last_eviction={}, **base).donors  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- the trigger
def step(
    episode: ep.Episode,
    cpu: dict[str, float],
    now: float,
    *,
    imbalanced: bool | None = None,
    requested: bool = False,
    placement: ep.Placement | None = None,
) -> ep.Episode:
    spread = ep.spread_of(cpu)
    flag = ep.imbalanced(spread, SETTINGS) if imbalanced is None else imbalanced
    return ep.next_episode(
        episode, spread, imbalanced=flag, requested=requested, params=EV, after_seconds=SETTINGS.after_seconds,
        now=now, placement=placement,
    )


PILE_UP = {"node1": 0.7, "node2": 0.7, "node3": 0.0}


def test_arms_after_the_configured_time_when_weights_do_not_reduce_the_spread() -> None:
    episode = step(ep.Episode(), PILE_UP, NOW)
    assert episode.since == NOW and not episode.armed
    assert not step(episode, PILE_UP, NOW + SETTINGS.after_seconds - 1).armed
    armed = step(episode, PILE_UP, NOW + SETTINGS.after_seconds)
    assert armed.armed and "did not reduce" in armed.reason


def test_clients_to_move_is_the_donors_surplus_over_the_cpu_per_client() -> None:
    spread = ep.spread_of({"node1": 0.8, "node2": 0.8, "node3": 0.0})
    # 1.6 CPU over 300 clients; each donor is 0.267 above the mean 0.533: 50 clients each
    assert ep.clients_to_move(spread, {"node1": 150, "node2": 150, "node3": 0}, 0.05) == pytest.approx(100.0)
    assert ep.clients_to_move(spread, {"node1": 150, "node2": 150}, 0.05) is None  # a count unknown
    assert ep.clients_to_move(spread, dict.fromkeys(NODES, 0.0), 0.05) is None


IDLE = ep.Placement(connects_total=5000.0, clients_to_move=100.0)
IDLE_AFTER = 10.0  # params.yaml's eviction.idle_after


@pytest.mark.parametrize(
    ("connects_later", "to_move", "at", "armed"),
    [
        (5000.0, 100.0, IDLE_AFTER, True),  # nobody connected: the weights have nothing to steer
        (5099.0, 100.0, IDLE_AFTER, True),  # fewer connects than clients to move
        (5100.0, 100.0, IDLE_AFTER, False),  # enough connects: give the weights until `after`
        (5000.0, 100.0, IDLE_AFTER - 1, False),  # not yet idle_after
        (None, 100.0, IDLE_AFTER, False),  # Envoy's count unknown: only `after` arms
        (5000.0, None, IDLE_AFTER, False),  # clients to move unknown
        (4000.0, 100.0, IDLE_AFTER, False),  # Envoy restarted (its count went down): not evidence
    ],
)
def test_arms_early_when_too_few_clients_connect_for_the_weights_to_steer(
    connects_later: float | None, to_move: float | None, at: float, armed: bool
) -> None:
    assert EV.idle_after == "10s"
    episode = step(ep.Episode(), PILE_UP, NOW, placement=IDLE)
    assert episode.connects_mark == 5000.0 and not episode.armed
    later = step(episode, PILE_UP, NOW + at, placement=ep.Placement(connects_later, to_move))
    assert later.armed is armed
    if armed:
        assert "the weights have too little to steer" in later.reason and later.since == NOW


def test_an_envoy_restart_restarts_the_connect_count() -> None:
    episode = step(ep.Episode(), PILE_UP, NOW, placement=IDLE)
    restarted = step(episode, PILE_UP, NOW + 5, placement=ep.Placement(30.0, 100.0))
    assert restarted.since == NOW and restarted.connects_mark == 30.0 and not restarted.armed
    assert step(restarted, PILE_UP, NOW + IDLE_AFTER, placement=ep.Placement(40.0, 100.0)).armed


def test_idle_after_may_not_exceed_after() -> None:
    with pytest.raises(ValueError, match="need idle_after <= after"):
        load_params({"eviction": {"idle_after": "1m", "after": "30s"}})


def test_a_shrinking_spread_restarts_the_window() -> None:
    episode = step(ep.Episode(), PILE_UP, NOW)
    better = {"node1": 0.6, "node2": 0.6, "node3": 0.2}  # msd 0.22 -> 0.071: the weights are working
    restarted = step(episode, better, NOW + 20)
    assert restarted.since == NOW + 20 and not restarted.armed
    assert not step(restarted, better, NOW + 20 + SETTINGS.after_seconds - 1).armed


def test_disarms_inside_the_target_and_request_arms_at_once() -> None:
    armed = ep.Episode(NOW, 0.2, True, "x")
    assert step(armed, {"node1": 0.5, "node2": 0.52, "node3": 0.48}, NOW + 5) == ep.Episode()
    assert step(armed, PILE_UP, NOW + 5).armed  # stays armed while outside the target
    requested = step(ep.Episode(), {"node1": 0.3, "node2": 0.3, "node3": 0.1}, NOW, requested=True)
    assert requested.armed and requested.reason == "operator request"


def test_quiet_or_lone_cluster_is_never_imbalanced() -> None:
    assert step(ep.Episode(NOW, 0.2, False, ""), {"node1": 0.05, "node2": 0.0, "node3": 0.0}, NOW + 99) == ep.Episode()
    assert step(ep.Episode(NOW, 0.2, True, "x"), {"node1": 0.9}, NOW + 99) == ep.Episode()


# ----------------------------------------------------------------------------- in decide_pass
def observe(cpu: dict[str, float]) -> Observation:
    return Observation(
        samples={n: NodeSample(cpu=c, connections=100, age_seconds=1) for n, c in cpu.items()},
        fast_cpu={n: min(c, 0.5) for n, c in cpu.items()},
    )


def test_decide_pass_steers_first_then_names_the_donors_and_starts_their_cooldown() -> None:
    quiet = Desired(rebalance_firing=False, shed_firing=False)
    state = WebhookState(nodes=NODES, weights=dict.fromkeys(NODES, 100))
    state = decide_pass(state, quiet, observe(PILE_UP), PARAMS.policy, TIMING, NODES, NOW, SETTINGS).state
    assert state.evict_since == NOW and not state.evict_armed
    armed = decide_pass(
        state, quiet, observe(PILE_UP), PARAMS.policy, TIMING, NODES, NOW + SETTINGS.after_seconds, SETTINGS
    )
    assert armed.state.evict_armed and armed.weights_changed  # armed: the weights move first ...
    assert not armed.eviction.donors and "enough yet" in (armed.eviction.waiting or "")  # ... one bounded step
    later = NOW + SETTINGS.after_seconds + TIMING.step_seconds
    landed = decide_pass(armed.state, quiet, observe(PILE_UP), PARAMS.policy, TIMING, NODES, later, SETTINGS)
    assert landed.weights_changed and {d.node for d in landed.eviction.donors} == {"node1", "node2"}
    assert landed.state.last_eviction == dict.fromkeys(["node1", "node2"], later)


def test_decide_pass_evicts_onto_a_returned_empty_node_under_least_request() -> None:
    """The pile-up after a restart, as the controller sees it: node3 is back with no connection and least
    request's weights put it below the donors' raw weights; it still takes the evicted clients."""
    assert PARAMS.policy.base_policy == "LEAST_REQUEST"
    conns = {"node1": 150.0, "node2": 150.0, "node3": 0.0}
    seen = Observation(
        samples={n: NodeSample(cpu=c, connections=conns[n], age_seconds=1, envoy_active=conns[n])
                 for n, c in PILE_UP.items()},
        fast_cpu={n: min(c, 0.5) for n, c in PILE_UP.items()},
    )
    state = WebhookState(nodes=NODES, weights={"node1": 100, "node2": 128, "node3": 21}, evict_armed=True,
                         evict_since=NOW - 60, evict_mark=0.25, evict_reason="test",
                         last_weight_change=NOW - 1)  # in the step interval: the weights stay as they are
    quiet = Desired(rebalance_firing=False, shed_firing=False)
    result = decide_pass(state, quiet, seen, PARAMS.policy, TIMING, NODES, NOW, SETTINGS)
    assert {d.node for d in result.eviction.donors} == {"node1", "node2"}, result.eviction.waiting
    assert not result.weights_changed and result.state.weights["node3"] < result.state.weights["node1"]


@pytest.mark.parametrize("lever_on", [True, False])
def test_nothing_is_evicted_while_envoy_sheds_new_connections(lever_on: bool) -> None:
    """Benchmark, 2026-12-01 (heterogeneous, seed 2): a batch went while the saturated cluster was being shed,
    and about 10 evicted clients failed 467 reconnects ("closed before CONNACK") to the run's end.
    While any shed level is in force neither a rebalance batch nor an evacuation goes; both resume once it
    lifts."""
    conns = {"node1": 150.0, "node2": 150.0, "node3": 0.0}
    seen = Observation(
        samples={n: NodeSample(cpu=c, connections=conns[n], age_seconds=1, envoy_active=conns[n])
                 for n, c in PILE_UP.items()},
        fast_cpu={n: min(c, 0.5) for n, c in PILE_UP.items()},
    )
    quiet = Desired(rebalance_firing=False, shed_firing=False)
    settings_ = SETTINGS if lever_on else ep.eviction_settings(load_params({"eviction": {"enabled": False}}), 35, 2.5)

    def evicts(shed_level: int) -> ep.EvictionIntent:
        state = WebhookState(nodes=NODES, weights={"node1": 100, "node2": 128, "node3": 21}, evict_armed=lever_on,
                             evict_since=NOW - 60, evict_mark=0.25, evict_reason="test", last_weight_change=NOW - 1,
                             shed_level=shed_level, shed_anchor=300 if shed_level else None,
                             last_shed_change=NOW - 1, evacuating=["node2"])
        result = decide_pass(state, quiet, seen, PARAMS.policy, TIMING, NODES, NOW, settings_)
        steering = [s.reason for s in result.steps if s.reason.startswith("evicting (")]
        assert (bool(steering) is lever_on) and all(
            ("nobody is evicted while new connections are shed" in r) == (shed_level > 0) for r in steering)
        return result.eviction

    for level in (1, 2, max_level(PARAMS.policy.shed_levels)):
        held = evicts(level)
        assert not held.acts, (level, held)
        assert held.waiting == (f"new connections are being shed (level {level}): an evicted client might not get "
                                "back in; eviction resumes once shedding lifts")
    lifted = evicts(0)
    assert lifted.evacuate == ("node2",) and bool(lifted.donors) is lever_on, lifted.waiting


def test_decide_pass_arms_early_after_a_restart_when_nobody_connects() -> None:
    """restart-pileup: node3 is back, the clients are long-lived and Envoy opens no new connection: the lever
    arms after idle_after (10 s), not after `after` (30 s)."""
    conns = {"node1": 150.0, "node2": 150.0, "node3": 0.0}
    seen = Observation(
        samples={n: NodeSample(cpu=c, connections=conns[n], age_seconds=1, envoy_active=conns[n])
                 for n, c in PILE_UP.items()},
        connects_total=900.0,
    )
    quiet = Desired(rebalance_firing=False, shed_firing=False)
    state = decide_pass(WebhookState(nodes=NODES, weights=dict.fromkeys(NODES, 100)), quiet, seen, PARAMS.policy,
                        TIMING, NODES, NOW, SETTINGS).state
    assert state.evict_since == NOW and state.evict_connects_mark == 900.0 and not state.evict_armed
    armed = decide_pass(state, quiet, seen, PARAMS.policy, TIMING, NODES, NOW + 10, SETTINGS)
    assert armed.state.evict_armed and "only 0 clients connected through Envoy in 10s" in armed.state.evict_reason
    assert {d.node for d in armed.eviction.donors} == {"node1", "node2"}


@pytest.mark.parametrize("base", ["LEAST_REQUEST", "ROUND_ROBIN"])
def test_an_armed_lever_evicts_once_the_weights_near_targets_below_min_recipient_share(base: str) -> None:
    """Trial of 2026-12-01: at 0.65/0.65/0.30 the spare-CPU target weights give the recipient 79 % (least
    request) or 67 % (round robin) of the new connections, never the 80 % wanted; nobody reconnects, so the
    lever waited forever.  It waits while the weights are far from their targets and evicts once they give
    the recipient the targets' share less LANDING_TOLERANCE."""
    params = load_params({"policy": {"base_policy": base}})
    settings = ep.eviction_settings(params, TIMING.step_seconds, TIMING.pass_seconds)
    cpu = {"node1": 0.65, "node2": 0.65, "node3": 0.30}
    seen = Observation(samples={n: NodeSample(cpu=c, connections=100, age_seconds=1, envoy_active=100)
                                for n, c in cpu.items()})
    quiet = Desired(rebalance_firing=False, shed_firing=False)
    state = WebhookState(nodes=NODES, weights=dict.fromkeys(NODES, 100), evict_armed=True, evict_since=NOW,
                         evict_mark=0.05, evict_reason="test")
    waited = []
    for step_no in range(12):
        result = decide_pass(state, quiet, seen, params.policy, TIMING, NODES, NOW + step_no * TIMING.step_seconds,
                             settings)
        if result.eviction.donors:
            break
        waited.append(result.eviction.waiting or "")
        state = result.state
    else:
        pytest.fail(f"never evicted: {waited[-1]}")
    assert any("enough yet" in w for w in waited)  # it did wait while the weights were far from their targets
    landing = new_connection_shares(result.state.weights, seen.samples, params.policy)["node3"]
    assert landing < params.eviction.min_recipient_share
    assert {d.node for d in result.eviction.donors} == {"node1", "node2"}


def test_the_landing_gate_is_judged_against_the_target_weights_share() -> None:
    """Restart run of 2026-12-01 (seed 3): at 50/50/200 on 118/118/64 connections node3 takes 79 % under least
    request, the targets give it more, and a fixed 80 % held the second batch ~130 s.  Within
    LANDING_TOLERANCE of the targets' share the batch goes; far below it, it waits."""
    conns = {"node1": 118.0, "node2": 118.0, "node3": 64.0}
    samples = {n: NodeSample(cpu=c, connections=conns[n], age_seconds=1, envoy_active=conns[n])
               for n, c in {"node1": 0.55, "node2": 0.55, "node3": 0.25}.items()}
    weights = {"node1": 50, "node2": 50, "node3": 200}
    shares = new_connection_shares(weights, samples, PARAMS.policy)
    assert 0.75 < shares["node3"] < PARAMS.eviction.min_recipient_share
    spread = ep.spread_of({n: s.cpu or 0.0 for n, s in samples.items()})

    def gate(target_node3: float) -> ep.EvictionIntent:
        targets = {"node1": (1 - target_node3) / 2, "node2": (1 - target_node3) / 2, "node3": target_node3}
        return ep.intent(spread, {n: s.cpu or 0.0 for n, s in samples.items()}, weights, shares=shares,
                         armed=True, reason="test", evacuating=(), last_eviction={}, cooldown_seconds=35,
                         params=PARAMS.eviction, now=NOW, target_shares=targets)

    assert gate(shares["node3"] + ep.LANDING_TOLERANCE / 2).donors  # near the targets' share: go
    far = gate(0.95)  # the targets give far more: the next steps take the weights past 80 %
    assert not far.donors and "at least 80%" in (far.waiting or "")
    assert not ep.intent(spread, {n: s.cpu or 0.0 for n, s in samples.items()}, weights, shares=shares, armed=True,
                         reason="test", evacuating=(), last_eviction={}, cooldown_seconds=35,
                         params=PARAMS.eviction, now=NOW).donors  # no target known: 80 % is waited for


def _armed(
    cpu: dict[str, float], conns: dict[str, float], weights: dict[str, int]
) -> tuple[dict[str, float], Callable[[Mapping[str, float] | None], ep.EvictionIntent]]:
    """The shares ``weights`` give at ``conns`` under the shipped base policy, and the armed lever's intent for
    given target shares (None: no target known)."""
    samples = {n: NodeSample(cpu=c, connections=conns[n], age_seconds=1, envoy_active=conns[n]) for n, c in cpu.items()}
    shares = new_connection_shares(weights, samples, PARAMS.policy)

    def intent(target: Mapping[str, float] | None) -> ep.EvictionIntent:
        return ep.intent(ep.spread_of(cpu), cpu, weights, shares=shares, armed=True, reason="test", evacuating=(),
                         last_eviction={}, cooldown_seconds=35, params=PARAMS.eviction, now=NOW, target_shares=target)

    return shares, intent


def test_the_landing_gate_never_sends_half_or_more_of_the_evicted_clients_elsewhere() -> None:
    """Trial of 2026-12-01: node2, the one recipient, holds 300 connections, so at the target weights least request
    gives it 31 % of the new connections and the gate's aim followed the target down to 26 %: most evicted
    clients would have gone to node3 (above the mean) or back to node1.  Half or less is never enough."""
    shares, intent = _armed({"node1": 0.80, "node2": 0.55, "node3": 0.70},
                            {"node1": 20.0, "node2": 300.0, "node3": 5.0}, {"node1": 10, "node2": 286, "node3": 10})
    assert shares["node2"] < ep.MIN_LANDING
    held = intent(shares)  # the weights are at their targets
    assert not held.donors and "at least 50%" in (held.waiting or "")
    assert ep.landing_aim(("node2",), {"node1": 0.0, "node2": 0.02, "node3": 0.98}, PARAMS.eviction) > ep.MIN_LANDING


def test_a_donor_the_weights_cannot_disfavour_is_said_so_not_yet() -> None:
    """Trial of 2026-12-01: a donor with 10 heavy clients beside recipients holding 300 idle ones each keeps the
    largest share under least request even at min_weight; the status said "yet" for good."""
    shares, intent = _armed({"node1": 0.26, "node2": 0.10, "node3": 0.06},
                            {"node1": 10.0, "node2": 300.0, "node3": 300.0}, {"node1": 11, "node2": 127, "node3": 162})

    def waiting(target: dict[str, float] | None) -> str:
        result = intent(target)
        assert not result.donors
        return result.waiting or ""

    assert waiting(shares).startswith("weights cannot favour the recipients over node1: even at their targets")
    assert waiting(None) == "weights do not favour the recipients over node1 yet"
    assert waiting({"node1": 0.1, "node2": 0.45, "node3": 0.45}).endswith("yet")  # the targets will get there


def test_decide_pass_without_settings_or_disabled_never_evicts() -> None:
    quiet = Desired(rebalance_firing=False, shed_firing=False, rebalance_requested=True)
    state = WebhookState(nodes=NODES, weights={"node1": 50, "node2": 50, "node3": 150})
    off = ep.eviction_settings(load_params({"eviction": {"enabled": False}}), 35, 2.5)
    for settings_ in (None, off):
        result = decide_pass(state, quiet, observe(PILE_UP), PARAMS.policy, TIMING, NODES, NOW, settings_)
        assert not result.eviction.donors and not result.state.evict_armed
