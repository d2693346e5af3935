"""Live, end to end on HiveMQ nodes: real load on one HiveMQ CE node -> its CPU in Prometheus -> early
steering or a rebalance alert -> webhook -> a lower EDS weight for that node in Envoy (read back from
/clusters) -> new connections through Envoy land on the other nodes.

Its own stack (3 HiveMQ nodes by the brokers/hivemq launcher, the fast parameters): the hot load connects
straight to node1's MQTT port, not through Envoy, so the evict lever is off (``eviction.enabled: false``),
it would only disconnect the load.  ``cpu_critical_for`` is long enough that the shed lever stays out of
this test (its cap would refuse the new connections the test counts).  The JVM uses little CPU per message,
so each node is credited ``NODE_CPU_CORES`` cores and the load gets fan-out subscribers.

Marked ``hivemq`` (and ``live``): `make test-hivemq` runs it (about a minute), `make test` leaves it out.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest
from hivemqnode import ensure_built
from stackutil import connect_through_envoy, free_ports_config, running_stack, wait_until

from mqttlb import contract
from mqttlb.loadgen.hot import HotNodeDriver, fan_out_subscribers
from mqttlb.stack.ephemeral import FAST_PARAMS
from mqttlb.stack.runner import Stack

pytestmark = [pytest.mark.hivemq, pytest.mark.live]

NODE_CPU_CORES = 0.15
NEW_CONNECTIONS = 60
PARAMS = {**FAST_PARAMS, "eviction": {"enabled": False}, "cpu_critical_for": "5m"}


@pytest.fixture(scope="module")
def hive(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    ensure_built()
    state = tmp_path_factory.mktemp("hivemq-e2e") / "state"
    cfg = free_ports_config(
        state, nodes=3, broker="hivemq", params=PARAMS, scrape_interval="2s", node_cpu_cores=NODE_CPU_CORES
    )
    with running_stack(cfg) as stack:
        yield stack


def audit_entries(stack: Stack) -> list[dict]:
    path = stack.topology.state.webhook_audit
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def envoy_weights(stack: Stack) -> dict[str, int]:
    return {h.node: h.weight for h in stack.envoy_hosts()}


def test_hot_hivemq_node_loses_weight_in_envoy_and_new_connections_go_elsewhere(hive: Stack) -> None:
    stack = hive
    hot_node, hot_port = stack.cfg.node_names[0], stack.cfg.broker_ports[0]
    neutral = stack.cfg.params.policy.neutral_weight
    wait_until(lambda: set(envoy_weights(stack).values()) == {neutral}, 10, "neutral weights in Envoy")
    rebalanced: dict | None = None
    started = time.monotonic()
    with (
        fan_out_subscribers(hot_port, 4),
        HotNodeDriver(hot_port, publishers=4, rate=500.0, size=256, duration=90.0, client_prefix="hq-hot"),
    ):
        deadline = time.monotonic() + 80
        while time.monotonic() < deadline and rebalanced is None:
            time.sleep(1.0)
            rebalanced = next(
                (
                    e
                    for e in audit_entries(stack)
                    if e.get("kind") == contract.OutcomeKind.REBALANCE.value
                    and e["after"][hot_node] < e["before"][hot_node]
                ),
                None,
            )
        assert rebalanced is not None, f"no rebalance within 80 s; audit: {audit_entries(stack)}"
        decided = time.monotonic() - started
        nodes = {n["node"]: n for n in rebalanced["details"]["nodes"]}
        print(f"\n[figures] load start -> weight lowered: {decided:.0f} s; {rebalanced['reason']}; nodes {nodes}")
        assert rebalanced["applied"] is True and rebalanced["dry_run"] is False
        assert "firing" in rebalanced["reason"] or "early steer" in rebalanced["reason"], rebalanced["reason"]
        assert set(nodes) == set(stack.cfg.node_names) and all(n["fresh"] for n in nodes.values())

        # The loop verifies that Envoy applies the snapshot: the lowered weight shows in /clusters.
        weights = rebalanced["after"]
        seen = wait_until(
            lambda: (w := envoy_weights(stack)) and w[hot_node] <= weights[hot_node] and w, 10, "the weight in Envoy"
        )
        assert seen[hot_node] < max(w for n, w in seen.items() if n != hot_node), seen

        # New connections through Envoy follow the weights: the hot node gets less than any other node.
        landed = connect_through_envoy(stack, NEW_CONNECTIONS, "hq-e2e-new")
        print(f"[figures] {NEW_CONNECTIONS} new connections through Envoy: {landed} (weights {envoy_weights(stack)})")
        assert sum(landed.values()) == NEW_CONNECTIONS
        assert landed[hot_node] < NEW_CONNECTIONS / len(landed)
        assert landed[hot_node] < min(n for node, n in landed.items() if node != hot_node), landed
