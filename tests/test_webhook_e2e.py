"""End to end on the whole stack: real load on one broker -> Prometheus rules -> alert ->
Alertmanager -> webhook -> EDS weights in Envoy (read back from /clusters)."""

from __future__ import annotations

import json
import time

import pytest
from stackutil import active_alerts, connect_through_envoy, stack_diagnosis, wait_until

from mqttlb.loadgen.hot import HotNodeDriver, fan_out_subscribers
from mqttlb.stack.runner import Stack

pytestmark = [pytest.mark.live, pytest.mark.slow]


def audit_entries(stack: Stack) -> list[dict]:
    path = stack.paths.webhook_dir / "audit.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def envoy_weights(stack: Stack) -> dict[str, int]:
    return {h.node: h.weight for h in stack.envoy_hosts()}


def wait_calm(stack: Stack, timeout: float = 120.0) -> None:
    """Until every weight is neutral and no alert fires: a test before this one on the shared stack (the rules
    test's hot broker) leaves the weights stepping back and its alerts resolving for a while."""
    neutral = stack.cfg.params.policy.neutral_weight
    try:
        wait_until(lambda: set(envoy_weights(stack).values()) == {neutral} and not active_alerts(stack),
                   timeout, "neutral weights and no alert firing", interval=1.0)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{stack_diagnosis(stack)}") from None


def test_hot_node_loses_weight_in_envoy(live_stack: Stack) -> None:
    stack = live_stack
    hot_node = stack.cfg.node_names[0]
    hot_port = stack.cfg.broker_ports[0]
    wait_calm(stack)
    seen_before = len(audit_entries(stack))
    rebalanced: dict | None = None
    started = time.monotonic()
    with (
        fan_out_subscribers(hot_port, 4),
        HotNodeDriver(hot_port, publishers=4, rate=600.0, size=256, duration=150.0),
    ):
        deadline = time.monotonic() + 150
        while time.monotonic() < deadline and rebalanced is None:
            time.sleep(1.0)
            for entry in audit_entries(stack)[seen_before:]:
                if entry.get("kind") == "rebalance" and entry["after"][hot_node] < entry["before"][hot_node]:
                    rebalanced = entry
                    break
    assert rebalanced is not None, (
        f"no rebalance within 150 s; audit: {audit_entries(stack)[seen_before:]}\n{stack_diagnosis(stack)}"
    )
    elapsed = time.monotonic() - started
    print(f"load start -> weight moved in Envoy: {elapsed:.0f} s; decision {rebalanced['reason']}")
    assert rebalanced["applied"] is True and rebalanced["dry_run"] is False
    assert "firing" in rebalanced["reason"] or "early steer" in rebalanced["reason"]
    # the decision looked at every node, not only the alerting one
    details = rebalanced["details"]
    assert {n["node"] for n in details["nodes"]} == set(stack.cfg.node_names)
    assert all(n["fresh"] for n in details["nodes"])
    # the loop verifies Envoy applies the snapshot: the weights show in /clusters
    weights = rebalanced["after"]
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and envoy_weights(stack) != weights:
        time.sleep(0.2)
    assert envoy_weights(stack)[hot_node] <= weights[hot_node]
    assert weights[hot_node] < max(w for n, w in weights.items() if n != hot_node)

    # New connections now follow the weights: the hot node gets less than an equal share.
    landed = connect_through_envoy(stack, 60, "e2e-new")
    print(f"60 new connections through Envoy after the decision: {landed} (weights {envoy_weights(stack)})")
    assert sum(landed.values()) == 60
    assert landed[hot_node] < 60 / len(landed)
    assert landed[hot_node] < min(n for node, n in landed.items() if node != hot_node)
    # Envoy still shows weights at least as far from the hot node (later steps only move further)
    now = envoy_weights(stack)
    assert now[hot_node] <= weights[hot_node] or now[hot_node] < max(
        v for n, v in now.items() if n != hot_node
    )

    # Load gone -> the alert resolves -> the loop steps the weights back to neutral, one recover step
    # per step interval; this also leaves the shared stack neutral for the tests that follow.
    neutral = stack.cfg.params.policy.neutral_weight
    deadline = time.monotonic() + 150
    while time.monotonic() < deadline and set(envoy_weights(stack).values()) != {neutral}:
        time.sleep(1.0)
    assert set(envoy_weights(stack).values()) == {neutral}, envoy_weights(stack)
    steps = [e for e in audit_entries(stack)[seen_before:] if e.get("kind") == "recover"]
    assert steps, "weights must come back through recover steps, not a jump"
    assert all(
        abs(step["after"][n] - step["before"][n]) <= stack.cfg.params.policy.recover_step
        for step in steps
        for n in step["after"]
    )
    print(f"load start -> back to neutral: {time.monotonic() - started:.0f} s in {len(steps)} recover steps")
