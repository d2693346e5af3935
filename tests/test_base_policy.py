"""policy_base: spare CPU -> share of new connections -> Envoy weights for ROUND_ROBIN or LEAST_REQUEST."""

from __future__ import annotations

import math
import subprocess
from pathlib import Path

import pytest
from stackutil import free_ports_config

from mqttlb.params import Params, with_defaults
from mqttlb.stack.builders import envoy_bootstrap, webhook_config
from mqttlb.stack.config import check_binaries
from mqttlb.stack.render import render_all
from mqttlb.stack.topology import native_topology
from mqttlb.webhook import policy, policy_base
from mqttlb.webhook.config import WebhookConfig
from mqttlb.webhook.policy import NodeSample

NODES = ["node1", "node2", "node3"]


def test_shares_follow_spare_cpu_and_sum_to_one() -> None:
    shares = policy_base.target_shares({"node1": 0.9, "node2": 0.5, "node3": 0.5}, spare_exponent=1.0)
    assert sum(shares.values()) == pytest.approx(1.0)
    assert shares["node1"] == pytest.approx(0.1 / 1.1) and shares["node2"] == pytest.approx(0.5 / 1.1)


def test_exponent_takes_the_hot_share_down_faster_and_saturation_keeps_a_sliver() -> None:
    cpu = {"node1": 0.8, "node2": 0.4}
    assert policy_base.target_shares(cpu, 2.0)["node1"] < policy_base.target_shares(cpu, 1.0)["node1"]
    saturated = policy_base.target_shares({"node1": 1.3, "node2": 0.0}, 1.0)  # clamped to 1.0 -> MIN_SPARE
    assert saturated["node1"] == pytest.approx(policy_base.MIN_SPARE / (1 + policy_base.MIN_SPARE))


def test_round_robin_weights_are_proportional_to_the_shares() -> None:
    weights = policy_base.weights_for_shares({"node1": 0.2, "node2": 0.3, "node3": 0.5}, "ROUND_ROBIN",
                                             neutral_weight=100)
    assert weights == pytest.approx({"node1": 60.0, "node2": 90.0, "node3": 150.0})


def test_least_request_weights_undo_the_active_connections_term() -> None:
    shares = {"node1": 0.2, "node2": 0.3, "node3": 0.5}
    active = {"node1": 99, "node2": 9, "node3": 49}
    weights = policy_base.weights_for_shares(shares, "LEAST_REQUEST", neutral_weight=100, active=active,
                                             active_request_bias=1.0)
    # weight ~ share x (active + 1): 20, 3, 25 -> mean 16
    assert weights == pytest.approx({"node1": 125.0, "node2": 18.75, "node3": 156.25})
    # Envoy's dynamic weight w / (a + 1) then gives exactly the target shares
    back = policy_base.pick_shares(weights, "LEAST_REQUEST", active=active, active_request_bias=1.0)
    assert back == pytest.approx(shares)


@pytest.mark.parametrize("bias", [0.0, 0.5, 1.0, 2.0])
def test_round_trip_for_every_bias(bias: float) -> None:
    shares = {"node1": 0.1, "node2": 0.6, "node3": 0.3}
    active = {"node1": 10, "node2": 200, "node3": None}  # node3 unknown: the mean of the others
    weights = policy_base.weights_for_shares(shares, "LEAST_REQUEST", neutral_weight=100, active=active,
                                             active_request_bias=bias)
    assert sum(weights.values()) / 3 == pytest.approx(100.0)
    assert policy_base.pick_shares(weights, "LEAST_REQUEST", active=active, active_request_bias=bias) == (
        pytest.approx(shares))


def test_bias_zero_is_round_robin() -> None:
    shares = {"node1": 0.25, "node2": 0.75}
    lr = policy_base.weights_for_shares(shares, "LEAST_REQUEST", neutral_weight=100, active={"node1": 5, "node2": 50},
                                        active_request_bias=0.0)
    assert lr == pytest.approx(policy_base.weights_for_shares(shares, "ROUND_ROBIN", neutral_weight=100))


@pytest.mark.parametrize(
    "call",
    [
        lambda: policy_base.target_shares({}, 1.0),
        lambda: policy_base.target_shares({"a": 0.5}, 0.0),
        lambda: policy_base.weights_for_shares({"a": 0.0, "b": 0.0}, "ROUND_ROBIN", neutral_weight=100),
        lambda: policy_base.weights_for_shares({"a": -0.1, "b": 1.1}, "ROUND_ROBIN", neutral_weight=100),
        lambda: policy_base.weights_for_shares({"a": 1.0}, "RANDOM", neutral_weight=100),  # type: ignore[arg-type]
        lambda: policy_base.weights_for_shares({"a": 1.0}, "LEAST_REQUEST", neutral_weight=100,
                                               active_request_bias=-1.0),
        lambda: policy_base.pick_shares({"a": 0, "b": 0}, "ROUND_ROBIN"),
        lambda: policy_base.count_targets({}, {}, 0.5),
        lambda: policy_base.count_targets({"a": 0.5}, {"b": 10}, 0.5),
        lambda: policy_base.count_targets({"a": 0.5, "b": 0.1}, {"a": 0, "b": 0}, 0.5),
        lambda: policy_base.count_targets({"a": 0.5, "b": 0.1}, {"a": -1, "b": 5}, 0.5),
        lambda: policy_base.count_targets({"a": 0.5, "b": 0.1}, {"a": 5, "b": 5}, 0.0),
        lambda: policy_base.count_targets({"a": 0.5, "b": 0.1}, {"a": 5, "b": 5}, 1.5),
        lambda: policy_base.weights_for_counts({"a": 0.0, "b": 0.0}, "ROUND_ROBIN", neutral_weight=100),
        lambda: policy_base.weights_for_counts({"a": 1.0}, "RANDOM", neutral_weight=100),  # type: ignore[arg-type]
        lambda: policy_base.shares_toward_counts({"a": 1.0}, {"a": 1.0}, 0.0),
        lambda: policy_base.shares_toward_counts({"a": 1.0}, {"b": 1.0}, 5.0),
        lambda: policy_base.shares_toward_counts({"a": 1.0, "b": 1.0}, {"a": 0.0, "b": 0.0}, 5.0),
    ],
)
def test_bad_input_is_refused(call: object) -> None:
    with pytest.raises(ValueError):
        call()  # type: ignore[operator]


def test_count_targets_move_connections_from_the_hot_node_in_proportion_to_its_excess() -> None:
    cpu = {"node1": 0.9, "node2": 0.6, "node3": 0.6}  # mean 0.7; 0.7 x 3 / 300 = 0.007 per connection
    counts = dict.fromkeys(NODES, 100.0)
    full = policy_base.count_targets(cpu, counts, 1.0)
    # node1 is 0.2 above the mean: 0.2 / 0.007 = 28.6 connections fewer; the others 14.3 more each
    assert full["node1"] == pytest.approx(100 - 0.2 / 0.007) and full["node2"] == pytest.approx(100 + 0.1 / 0.007)
    assert sum(full.values()) == pytest.approx(300.0)
    half = policy_base.count_targets(cpu, counts, 0.5)
    assert half["node1"] == pytest.approx(100 - 0.1 / 0.007)  # the gain scales the move


def test_count_targets_with_even_cpu_keep_the_counts_as_they_are() -> None:
    """Integral action: once the CPU is even the targets are the counts that made it so, not neutral."""
    counts = {"node1": 40.0, "node2": 130.0, "node3": 130.0}
    assert policy_base.count_targets(dict.fromkeys(NODES, 0.6), counts, 0.5) == pytest.approx(counts)


def test_count_targets_never_steer_a_node_empty() -> None:
    targets = policy_base.count_targets({"node1": 1.0, "node2": 0.0, "node3": 0.0}, dict.fromkeys(NODES, 10.0), 1.0)
    assert min(targets.values()) > 0 and sum(targets.values()) == pytest.approx(30.0)
    assert targets["node1"] == pytest.approx(min(targets.values()))


@pytest.mark.parametrize("bias", [0.0, 1.0, 2.0])
def test_count_weights_make_arrivals_match_departures_at_the_targets(bias: float) -> None:
    """Departures are proportional to the connections held (every client's session ends alike), so at the
    targets each node's share of the new connections must be its share of the targets."""
    targets = {"node1": 40.0, "node2": 130.0, "node3": 130.0}
    for base in ("ROUND_ROBIN", "LEAST_REQUEST"):
        weights = policy_base.weights_for_counts(targets, base, neutral_weight=100, active_request_bias=bias)
        assert sum(weights.values()) / 3 == pytest.approx(100.0)
        shares = policy_base.pick_shares(weights, base, active=targets, active_request_bias=bias)
        assert shares == pytest.approx({n: t / 300 for n, t in targets.items()})
        # a node below its target gets more than its share, so least request itself closes the gap
        if base == "LEAST_REQUEST" and bias > 0:
            below = policy_base.pick_shares(weights, base, active={**targets, "node1": 10.0}, active_request_bias=bias)
            assert below["node1"] > 40 / 300


def test_shares_toward_counts_reach_the_targets_in_one_step() -> None:
    """Departures take each node's share of what it holds; the shares of the arrivals make up the rest, so after
    ``arrivals`` connects (and as many departures) every node is at its target."""
    active = {"node1": 80.0, "node2": 80.0, "node3": 80.0}
    targets = {"node1": 72.0, "node2": 84.0, "node3": 84.0}
    for arrivals in (70.0, 210.0):
        shares = policy_base.shares_toward_counts(targets, active, arrivals)
        assert sum(shares.values()) == pytest.approx(1.0)
        after = {n: active[n] + arrivals * (shares[n] - active[n] / 240) for n in active}
        assert after == pytest.approx(targets)
    slow, fast = (policy_base.shares_toward_counts(targets, active, a)["node1"] for a in (70.0, 210.0))
    assert slow < fast < 1 / 3  # fewer arrivals: each must go more firmly where it is needed


def test_shares_toward_counts_with_nobody_connecting_send_everything_below_target() -> None:
    shares = policy_base.shares_toward_counts({"node1": 100.0, "node2": 100.0, "node3": 100.0},
                                              {"node1": 150.0, "node2": 150.0, "node3": 0.0}, 1.0, floor=0.01)
    assert shares["node3"] > 0.95 and shares["node1"] == pytest.approx(shares["node2"])


def test_count_target_decisions_steer_harder_when_fewer_clients_connect() -> None:
    samples = {n: NodeSample(cpu=c, connections=80, age_seconds=1, envoy_active=80)
               for n, c in {"node1": 0.8, "node2": 0.6, "node3": 0.6}.items()}
    p = _params("LEAST_REQUEST", steer_target="connection-count").policy

    def hot_share(connects_per_second: float | None) -> float:
        d = policy.decide(NODES, samples, dict.fromkeys(NODES, 100), {}, p, now=100.0, last_change=None,
                          cooldown_seconds=35, connects_per_second=connects_per_second)
        target = {n.node: n.target_weight or 0.0 for n in d.nodes}
        return policy_base.pick_shares(target, "LEAST_REQUEST", active={n: 80.0 for n in NODES})["node1"]

    assert hot_share(2.0) < hot_share(6.0) < 1 / 3
    assert hot_share(None) < 1 / 3  # unknown churn: the long-run weights still lean away from node1


def _params(base: str, **policy_overrides: object) -> Params:
    return Params.model_validate(with_defaults({"policy": {"base_policy": base, **policy_overrides}}))


def test_decide_targets_depend_on_the_base_policy() -> None:
    samples = {
        "node1": NodeSample(cpu=0.9, connections=50, age_seconds=1),
        "node2": NodeSample(cpu=0.3, connections=200, age_seconds=1),
        "node3": NodeSample(cpu=0.3, connections=50, age_seconds=1),
    }
    weights = dict.fromkeys(NODES, 100)
    targets: dict[str, dict[str, float]] = {}
    for base in ("ROUND_ROBIN", "LEAST_REQUEST"):
        p = _params(base).policy
        d = policy.decide(NODES, samples, weights, {}, p, now=100.0, last_change=None, cooldown_seconds=10)
        targets[base] = {n.node: n.target_weight or 0.0 for n in d.nodes}
    rr, lr = targets["ROUND_ROBIN"], targets["LEAST_REQUEST"]
    assert rr["node2"] == pytest.approx(rr["node3"])  # RR ignores what a node holds
    assert lr["node2"] > lr["node3"]  # LR: node2's 200 connections lower its dynamic weight; the weight makes up
    # at the counts that even the CPU (where least request will evaluate them once the connections land),
    # node2 and node3 get the same share of the next connections and node1 a sliver
    cpu = {n: s.cpu or 0.0 for n, s in samples.items()}
    even = policy_base.count_targets(cpu, {n: float(s.connections or 0) for n, s in samples.items()}, 1.0)
    shares = policy_base.pick_shares(lr, "LEAST_REQUEST", active=even)
    assert shares["node2"] == pytest.approx(shares["node3"]) and shares["node1"] < shares["node2"] / 10


def test_least_request_weights_hold_the_share_of_a_node_back_from_a_restart() -> None:
    """restart-pileup (docs/experiment/restart-pileup/runs, seed 3): node3 came back empty beside two nodes with
    150 connections each.  Weights computed at the current counts (0 against 150) gave node3 50 and the donors
    150 and 133: node3's dynamic weight 50 / (a + 1) fell to the donors' after about 40 arrivals, and 34 of 74
    evicted clients went back to the donors.  At the counts that even the CPU node3 keeps the larger weight."""
    samples = {
        "node1": NodeSample(cpu=0.78, connections=150, age_seconds=1, envoy_active=150),
        "node2": NodeSample(cpu=0.78, connections=150, age_seconds=1, envoy_active=150),
        "node3": NodeSample(cpu=0.0, connections=0, age_seconds=1, envoy_active=0),
    }
    p = _params("LEAST_REQUEST").policy
    d = policy.decide(NODES, samples, dict.fromkeys(NODES, 100), {}, p, now=100.0, last_change=None,
                      cooldown_seconds=10)
    target = {n.node: n.target_weight or 0.0 for n in d.nodes}
    assert target["node3"] > 10 * target["node1"]
    assert d.weights["node3"] == 100 + p.max_step and d.weights["node1"] == 100 - p.max_step
    # landing: with node3 at 75 of the 300 connections (the first batch in), it still takes most new ones
    landed = policy_base.pick_shares(d.weights, "LEAST_REQUEST", active={"node1": 113, "node2": 112, "node3": 75})
    assert landed["node3"] > 0.5


def test_least_request_counts_what_envoy_holds_not_clients_that_bypass_it() -> None:
    """A hot node whose clients connect straight to the broker: Envoy's least request divides by Envoy's own
    active count (0 here), so the broker's 8 connections must not raise the hot node's weight."""
    def samples(envoy_active: float | None) -> dict[str, NodeSample]:
        return {
            "node1": NodeSample(cpu=0.9, connections=8, age_seconds=1, envoy_active=envoy_active),
            "node2": NodeSample(cpu=0.1, connections=0, age_seconds=1, envoy_active=envoy_active),
            "node3": NodeSample(cpu=0.1, connections=0, age_seconds=1, envoy_active=envoy_active),
        }

    p = _params("LEAST_REQUEST").policy

    def targets(envoy_active: float | None) -> dict[str, float]:
        d = policy.decide(NODES, samples(envoy_active), dict.fromkeys(NODES, 100), {}, p, now=100.0,
                          last_change=None, cooldown_seconds=10)
        return {n.node: n.target_weight or 0.0 for n in d.nodes}

    through_envoy = targets(0.0)
    assert through_envoy["node1"] < through_envoy["node2"] / 10  # steered away, as Envoy will see it
    assert targets(None)["node1"] > through_envoy["node1"]  # unknown: the broker's count stands in


def test_connection_count_target_holds_even_cpu_where_spare_shares_walk_back_to_neutral() -> None:
    """Even CPU over unequal counts (a heavy client on node1): the spare-share target is neutral, which would
    put the light clients back on node1; the connection-count target keeps the counts that evened the CPU."""
    samples = {
        "node1": NodeSample(cpu=0.6, connections=40, age_seconds=1, envoy_active=40),
        "node2": NodeSample(cpu=0.6, connections=130, age_seconds=1, envoy_active=130),
        "node3": NodeSample(cpu=0.6, connections=130, age_seconds=1, envoy_active=130),
    }

    def target(steer_target: str) -> dict[str, float]:
        p = _params("LEAST_REQUEST", steer_target=steer_target).policy
        d = policy.decide(NODES, samples, dict.fromkeys(NODES, 100), {}, p, now=100.0, last_change=None,
                          cooldown_seconds=10)
        return {n.node: n.target_weight or 0.0 for n in d.nodes}

    counts, spare = target("connection-count"), target("spare-share")
    active = {n: float(s.connections or 0) for n, s in samples.items()}
    assert policy_base.pick_shares(counts, "LEAST_REQUEST", active=active)["node1"] == pytest.approx(40 / 300)
    assert policy_base.pick_shares(spare, "LEAST_REQUEST", active=active)["node1"] == pytest.approx(1 / 3)


def test_predicted_cpu_moves_each_node_by_the_connections_moved_since_the_window() -> None:
    """The CPU is a rate over the window; the counts now differ from their window average by what moved since:
    node1 lost 40 connections, node2 gained them, at the window's mean cost 0.9 / 150 = 0.006 each."""
    samples = {"node1": NodeSample(cpu=0.6, connections=60, age_seconds=1, window_connections=100),
               "node2": NodeSample(cpu=0.3, connections=90, age_seconds=1, window_connections=50)}
    predicted = policy.predicted_cpu({"node1": 0.6, "node2": 0.3}, samples)
    assert predicted == pytest.approx({"node1": 0.36, "node2": 0.54})
    unknown = {**samples, "node2": NodeSample(cpu=0.3, connections=90, age_seconds=1)}
    assert policy.predicted_cpu({"node1": 0.6, "node2": 0.3}, unknown) == {"node1": 0.6, "node2": 0.3}
    for bad in (math.nan, math.inf, -5.0):  # trial: a NaN average made every node read as saturated
        odd = {**samples, "node2": NodeSample(cpu=0.3, connections=90, age_seconds=1, window_connections=bad)}
        assert policy.predicted_cpu({"node1": 0.6, "node2": 0.3}, odd) == {"node1": 0.6, "node2": 0.3}
        odd = {**samples, "node1": NodeSample(cpu=0.6, connections=bad, age_seconds=1, window_connections=100)}
        assert policy.predicted_cpu({"node1": 0.6, "node2": 0.3}, odd) == {"node1": 0.6, "node2": 0.3}
    assert policy.predicted_cpu({"node1": 1.0, "node2": 0.0}, {
        "node1": NodeSample(cpu=1.0, connections=200, age_seconds=1, window_connections=10),
        "node2": NodeSample(cpu=0.0, connections=0, age_seconds=1, window_connections=10)})["node1"] == 1.0


@pytest.mark.parametrize("steer_target", ["spare-share", "connection-count"])
def test_a_count_that_is_not_a_number_never_reaches_the_weights(steer_target: str) -> None:
    """A NaN or infinite active count (scraped text) is unknown, like a negative one: finite weights, the
    same as with the count missing."""
    def targets(active: float | None) -> dict[str, float]:
        samples = {n: NodeSample(cpu=c, connections=100, age_seconds=1, envoy_active=100.0)
                   for n, c in {"node1": 0.8, "node2": 0.4, "node3": 0.4}.items()}
        samples["node2"] = NodeSample(cpu=0.4, connections=None, age_seconds=1, envoy_active=active)
        p = _params("LEAST_REQUEST", steer_target=steer_target).policy
        d = policy.decide(NODES, samples, dict.fromkeys(NODES, 100), {}, p, now=100.0, last_change=None,
                          cooldown_seconds=10)
        return {n.node: n.target_weight or 0.0 for n in d.nodes}

    for bad in (math.nan, math.inf, -1.0):
        weights = targets(bad)
        assert all(math.isfinite(w) for w in weights.values()), (bad, weights)
        assert weights == targets(None), bad


def test_count_target_does_not_ask_again_for_a_move_the_cpu_has_not_seen_yet() -> None:
    """Slow-churn overshoot (2026-12-01): the CPU still shows node1 hot from the counts of the last 30 s, but the
    clients that even it have already moved.  With the window averages known, the count target keeps the counts
    where they are; without them it would move the same clients a second time."""
    cpu = {"node1": 0.7, "node2": 0.4, "node3": 0.4}
    window = {"node1": 100.0, "node2": 100.0, "node3": 100.0}
    now = {"node1": 60.0, "node2": 120.0, "node3": 120.0}  # node1 0.2 above the mean at 0.005 a connection: moved

    def count_target(with_window: bool) -> dict[str, float]:
        samples = {n: NodeSample(cpu=c, connections=now[n], age_seconds=1, envoy_active=now[n],
                                 window_connections=window[n] if with_window else None) for n, c in cpu.items()}
        p = _params("LEAST_REQUEST", steer_target="connection-count", count_gain=1.0).policy
        d = policy.decide(NODES, samples, dict.fromkeys(NODES, 100), {}, p, now=100.0, last_change=None,
                          cooldown_seconds=35)
        target = {n.node: n.target_weight or 0.0 for n in d.nodes}
        return policy_base.pick_shares(target, "LEAST_REQUEST", active=now)

    held = {n: c / sum(now.values()) for n, c in now.items()}  # the share that keeps the counts as they are
    assert count_target(True) == pytest.approx(held, abs=0.01)
    assert count_target(False)["node1"] < held["node1"] / 2  # the measured CPU alone: node1 steered empty again


def test_steer_below_alert_steers_without_a_firing_alert() -> None:
    from mqttlb.webhook.plan import Desired, Observation, decide_pass, timing_for
    from mqttlb.webhook.state import WebhookState

    quiet = Desired(rebalance_firing=False, shed_firing=False)
    cpu = {"node1": 0.6, "node2": 0.3, "node3": 0.3}  # spread 0.3: max squared deviation 0.04, not above the alert's
    seen = Observation(samples={n: NodeSample(cpu=c, connections=80, age_seconds=1, envoy_active=80)
                                for n, c in cpu.items()}, fast_cpu=cpu)
    for below, moves in ((False, False), (True, True)):
        params = _params("LEAST_REQUEST", steer_target="connection-count", steer_below_alert=below)
        state = WebhookState(nodes=NODES, weights=dict.fromkeys(NODES, 100))
        result = decide_pass(state, quiet, seen, params.policy, timing_for(params, 5.0), NODES, 100.0)
        assert result.weights_changed is moves
        if moves:
            assert result.state.weights["node1"] < 100 < result.state.weights["node2"]
            assert "steering below the alert" in result.steps[0].reason


def test_params_refuse_an_unknown_base_and_a_negative_bias() -> None:
    with pytest.raises(ValueError, match="base_policy"):
        _params("RANDOM")
    with pytest.raises(ValueError, match="active_request_bias"):
        _params("LEAST_REQUEST", active_request_bias=-0.5)


@pytest.mark.parametrize("lb_policy", ["ROUND_ROBIN", "LEAST_REQUEST"])
def test_the_stack_runs_envoy_on_its_lb_policy_and_tells_the_webhook(tmp_path: Path, lb_policy: str) -> None:
    cfg = free_ports_config(tmp_path / "state", nodes=3, lb_policy=lb_policy,
                            params={"policy": {"active_request_bias": 0.75}})
    topo = native_topology(cfg)
    cluster = envoy_bootstrap(topo)["static_resources"]["clusters"][0]
    assert cluster["lb_policy"] == lb_policy
    if lb_policy == "LEAST_REQUEST":
        assert cluster["least_request_lb_config"]["active_request_bias"]["default_value"] == 0.75
    else:
        assert "least_request_lb_config" not in cluster
    webhook = WebhookConfig.model_validate(webhook_config(topo))
    assert webhook.params_overrides.policy.base_policy == lb_policy
    assert webhook.params_overrides.policy.active_request_bias == 0.75


def test_envoy_accepts_least_request_with_the_bias(tmp_path: Path) -> None:
    binaries = check_binaries()
    cfg = free_ports_config(tmp_path / "state", nodes=3, lb_policy="LEAST_REQUEST")
    paths, _ = render_all(cfg, binaries)
    envoy = subprocess.run([binaries["envoy"], "--mode", "validate", "-c", str(paths.envoy_yaml)],
                           capture_output=True, text=True, timeout=60)
    assert envoy.returncode == 0, envoy.stdout + envoy.stderr
