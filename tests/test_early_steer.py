"""Early steering integrates the short-window CPU's excess over cpu_high (mqttlb.webhook.plan.early_hot).

A saturated node is steered after ``early_steer_for``; a node barely above ``cpu_high`` needs
proportionally longer; a noise peak of a scrape or two never steers; a stalled loop does not jump.
"""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from mqttlb.contract import OutcomeKind
from mqttlb.params import load_params
from mqttlb.webhook.plan import Desired, Observation, decide_pass, early_steer_excess, timing_for
from mqttlb.webhook.policy import NodeSample
from mqttlb.webhook.state import WebhookState

PARAMS = load_params()
POLICY = PARAMS.policy
TIMING = timing_for(PARAMS, 5.0)
NODES = ["node1", "node2", "node3"]
QUIET = Desired(rebalance_firing=False, shed_firing=False)
NOW = 1_000_000.0


def neutral() -> WebhookState:
    return WebhookState(nodes=NODES, weights=dict.fromkeys(NODES, POLICY.neutral_weight))


def observation(hot_fast: float, hot_rate_window: float = 0.9) -> Observation:
    samples = {
        "node1": NodeSample(cpu=hot_rate_window, connections=100, age_seconds=1),
        "node2": NodeSample(cpu=0.2, connections=100, age_seconds=1),
        "node3": NodeSample(cpu=0.2, connections=100, age_seconds=1),
    }
    return Observation(samples=samples, fast_cpu={"node1": hot_fast, "node2": 0.2, "node3": 0.2})


def first_steer(fast_series: list[float], state: WebhookState | None = None) -> float | None:
    """Seconds from the first pass to the first early-steer rebalance, passes every pass_seconds."""
    state = state or neutral()
    for i, fast in enumerate(fast_series):
        now = NOW + i * TIMING.pass_seconds
        result = decide_pass(state, QUIET, observation(fast), POLICY, TIMING, NODES, now)
        if any(s.kind is OutcomeKind.REBALANCE for s in result.steps):
            assert "early steer" in result.steps[0].reason
            return now - NOW
        state = result.state
    return None


def test_a_saturated_node_is_steered_after_early_steer_for() -> None:
    assert first_steer([1.0] * 20) == TIMING.early_steer_seconds


def test_a_node_barely_above_cpu_high_waits_proportionally_longer() -> None:
    excess = 0.05
    expected = early_steer_excess(TIMING) / excess  # 25 s with cpu_high 0.75, early_steer_for 5 s
    took = first_steer([PARAMS.cpu_high + excess] * 40)
    assert took is not None and math.isclose(took, expected, abs_tol=TIMING.pass_seconds)
    assert took > 2 * TIMING.early_steer_seconds


def test_a_noise_peak_of_two_scrapes_does_not_steer_and_the_episode_restarts() -> None:
    peak = [0.89] * 4  # two scrapes (four passes) at 0.89, as in the noisy-but-even bench run
    series = (peak + [0.5]) * 10
    assert first_steer(series) is None


def test_a_stalled_loop_counts_at_most_two_passes() -> None:
    state = decide_pass(neutral(), QUIET, observation(1.0), POLICY, TIMING, NODES, NOW).state
    later = decide_pass(state, QUIET, observation(1.0), POLICY, TIMING, NODES, NOW + 600).state
    assert later.hot_excess == (1.0 - PARAMS.cpu_high) * 2 * TIMING.pass_seconds


def test_cooling_down_clears_the_episode() -> None:
    state = decide_pass(neutral(), QUIET, observation(0.95), POLICY, TIMING, NODES, NOW).state
    state = decide_pass(state, QUIET, observation(0.95), POLICY, TIMING, NODES, NOW + TIMING.pass_seconds).state
    assert state.hot_excess > 0
    cooled = decide_pass(state, QUIET, observation(0.5), POLICY, TIMING, NODES, NOW + 2 * TIMING.pass_seconds).state
    assert (cooled.hot_since, cooled.hot_excess, cooled.hot_checked) == (None, 0.0, None)


def test_a_burst_whose_rate_window_stays_below_cpu_high_does_not_steer() -> None:
    """The noisy-but-even bench's false step: short-window CPU 0.98 for 8 s, the 30 s window at 0.68."""
    state = neutral()
    for i in range(12):
        burst = Observation(
            samples={
                "node1": NodeSample(cpu=0.68, connections=100, age_seconds=1),
                "node2": NodeSample(cpu=0.5, connections=100, age_seconds=1),
                "node3": NodeSample(cpu=0.22, connections=100, age_seconds=1),
            },
            fast_cpu={"node1": 0.98, "node2": 0.5, "node3": 0.3},
        )
        result = decide_pass(state, QUIET, burst, POLICY, TIMING, NODES, NOW + i * TIMING.pass_seconds)
        assert not result.acts, i
        state = result.state
    assert state.hot_excess > early_steer_excess(TIMING)  # hot now, but not hot on average: no steering


def test_a_saturated_node_is_steered_before_its_rate_window_catches_up() -> None:
    """A flood: the short window at or above the node's cores, the 30 s window still at 0.4."""
    state = neutral()
    took = None
    for i in range(10):
        now = NOW + i * TIMING.pass_seconds
        result = decide_pass(state, QUIET, observation(1.0, hot_rate_window=0.4), POLICY, TIMING, NODES, now)
        if result.acts:
            took = now - NOW
            break
        state = result.state
    assert took == TIMING.early_steer_seconds


@settings(max_examples=60, deadline=None)
@given(level=st.floats(min_value=PARAMS.cpu_high + 0.02, max_value=4.0))
def test_steady_hot_level_steers_at_the_integrated_threshold(level: float) -> None:
    """Utilisation above 1.0 (more than the node's configured cores) counts as 1.0: never sooner."""
    expected = early_steer_excess(TIMING) / (min(level, 1.0) - PARAMS.cpu_high)
    took = first_steer([level] * (int(expected / TIMING.pass_seconds) + 4))
    assert took is not None
    assert expected - 1e-6 <= took <= expected + TIMING.pass_seconds
