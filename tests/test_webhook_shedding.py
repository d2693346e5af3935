"""Unit and property tests of the shed-level state machine."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mqttlb.webhook.shedding import ShedState, escalate, max_level, plan_for, relax

F = [0.8, 0.6, 0.4]


def test_ladder_from_hold_to_hard_stop_and_back():
    state = ShedState()
    assert plan_for(state, F).max_connections is None
    plans = []
    for _ in range(max_level(F) + 2):  # escalating past the top stays at the top
        state = escalate(state, active_connections=1000, fractions=F)
        plans.append(plan_for(state, F))
    caps = [p.max_connections for p in plans]
    assert caps[:5] == [1000, 800, 600, 400, 400]
    assert [p.hard_stop for p in plans[:5]] == [False, False, False, False, True]
    assert plans[-1].level == max_level(F) == 5
    levels = []
    while state.level:
        state = relax(state)
        levels.append(state.level)
    assert levels == [4, 3, 2, 1, 0]
    assert state == ShedState() and plan_for(state, F).max_connections is None


def test_anchor_is_taken_when_shedding_starts_only():
    state = escalate(ShedState(), 50, F)
    state = escalate(state, 9999, F)
    assert state.anchor == 50 and plan_for(state, F).max_connections == 40


def test_cap_never_zero_even_with_no_connections():
    state = ShedState()
    for _ in range(4):
        state = escalate(state, 0, F)
        assert plan_for(state, F).max_connections >= 1


def test_negative_connections_rejected():
    with pytest.raises(ValueError):
        escalate(ShedState(), -1, F)


@settings(max_examples=300, deadline=None)
@given(
    ops=st.lists(st.booleans(), max_size=30),
    active=st.integers(0, 10**6),
    fractions=st.lists(st.floats(0.01, 1.0), min_size=1, max_size=5).map(lambda f: sorted(f, reverse=True)),
)
def test_levels_stay_in_range_and_caps_never_loosen_while_escalating(ops, active, fractions):
    state = ShedState()
    previous_cap = None
    for up in ops:
        before = state
        state = escalate(state, active, fractions) if up else relax(state)
        assert 0 <= state.level <= max_level(fractions)
        assert abs(state.level - before.level) <= 1
        plan = plan_for(state, fractions)
        assert plan.hard_stop == (state.level == max_level(fractions))
        if state.level == 0:
            assert plan.max_connections is None and state.anchor is None
        else:
            assert 1 <= plan.max_connections <= max(1, active)
        if up and before.level > 0 and previous_cap is not None:
            assert plan.max_connections <= previous_cap
        previous_cap = plan.max_connections
