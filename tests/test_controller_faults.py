"""Issue 13, faults 5 and 8, reproduced live: a dead broker, and resolves from many groups at once.

Real Mosquitto nodes (the stack's config), Envoy with the product bootstrap (its MQTT-CONNECT
active health check, ``mqttlb.stack.builders._health_check``), ``mqttlb webhook`` with the stack's
config; only Prometheus is a stub (``webhookrig.PrometheusStub``).

* fault 5: node2 was stopped and Envoy kept it HEALTHY at its weight, so 25 % of new connects
  failed.  Now Envoy marks it unhealthy within two probe intervals, 100 new MQTT sessions through
  Envoy all get CONNACK 0, and the controller's pass lists it as down and leaves it out of the plan.
  While a broker is up, the probe is accepted (it stays healthy).
* fault 8: resolved notifications from many groups stepped the weights back all at once.  Now
  one pass decides: at most one weight change per step interval.
"""

from __future__ import annotations

import concurrent.futures
import time

import pytest
import requests
from stackutil import running_envoy, token_headers, wait_until
from webhookrig import (
    NODES,
    Brokers,
    PrometheusStub,
    alert,
    audit,
    bounded_poll,
    connects,
    eds_file_view,
    envoy_health,
    envoy_view,
    notification,
    post_alerts,
    rig_topology,
    running_webhook,
    write_webhook_config,
)

from mqttlb.contract import ALERT_CPU_HIGH, ALERT_IMBALANCED, Action, OutcomeKind
from mqttlb.envoy_admin import EnvoyAdminClient
from mqttlb.stack import builders
from mqttlb.stack.topology import Topology

pytestmark = pytest.mark.live

FAST_BELOW_HIGH = dict.fromkeys(NODES, 0.5)  # short-window CPU under cpu_high: no early steering


def health_check_stats(topo: Topology) -> dict[str, int]:
    cluster = topo.settings.envoy_cluster
    stats = EnvoyAdminClient(topo.envoy_admin.url()).stats(rf"^cluster\.{cluster}\.health_check\.")
    return {name.rsplit(".", 1)[1]: value for name, value in stats.items()}


def all_healthy(topo: Topology) -> bool:
    return set(envoy_health(topo).values()) == {"healthy"}


# --------------------------------------------------------------------------- fault 5: a dead broker
def test_a_dead_broker_is_unhealthy_within_two_probes_gets_no_connects_and_leaves_the_plan(tmp_path):
    interval = float(builders.HEALTH_CHECK_INTERVAL.rstrip("s"))
    topo = rig_topology(tmp_path, policy={"cooldown_seconds": 1})
    listener = topo.envoy_listener.port
    prometheus = PrometheusStub()
    # node2's last reading looks idle (a dead broker's CPU): a plan that kept it would send it the most
    prometheus.set(cpu={"node1": 0.9, "node2": 0.05, "node3": 0.3}, fast=FAST_BELOW_HIGH)
    write_webhook_config(topo, prometheus_url=prometheus.url)
    try:
        with Brokers(topo) as brokers, running_envoy(topo), running_webhook(topo):
            # the MQTT CONNECT probe is accepted by a real Mosquitto: healthy, and it stays so
            wait_until(lambda: all_healthy(topo), 3 * interval + 2, "every broker healthy")
            watch_until = time.monotonic() + 3 * interval
            while time.monotonic() < watch_until:
                assert all_healthy(topo), f"a running broker failed the health probe: {envoy_health(topo)}"
                time.sleep(0.2)
            probes = health_check_stats(topo)
            assert probes.get("success", 0) >= 3 * len(NODES) and probes.get("failure", 0) == 0, probes

            brokers.stop("node2")
            took = bounded_poll(lambda: envoy_health(topo)["node2"] == "unhealthy", 4 * interval + 2)
            assert took is not None, f"Envoy still reports node2 {envoy_health(topo)['node2']}"
            assert took <= 2 * interval + 1.5, f"marked unhealthy after {took:.1f}s (two probes: {2 * interval}s)"
            hosts = EnvoyAdminClient(topo.envoy_admin.url()).cluster(topo.settings.envoy_cluster).by_node()
            failed_before = hosts["node2"].cx_connect_fail
            results = [connects(listener, f"after-node2-died-{i}") for i in range(100)]
            assert sum(results) == 100, f"{100 - sum(results)} of 100 connects through Envoy failed"
            hosts = EnvoyAdminClient(topo.envoy_admin.url()).cluster(topo.settings.envoy_cluster).by_node()
            assert hosts["node2"].cx_connect_fail == failed_before, "Envoy still sent clients to the dead node"

            # the controller's pass sees node2 down and leaves it out of the plan
            seen = len(audit(topo))
            post_alerts(topo, notification([alert(ALERT_CPU_HIGH, Action.REBALANCE, node="node1")], ALERT_CPU_HIGH))

            def steered() -> dict | None:
                steps = [e for e in audit(topo)[seen:] if e["kind"] == OutcomeKind.REBALANCE.value]
                return steps[0] if steps else None

            step = wait_until(steered, 10, "a rebalance step")
            assert step["details"]["down"] == ["node2"], step["details"]
            assert step["after"]["node2"] == step["before"]["node2"], "a down node keeps its weight"
            assert step["after"]["node1"] < step["before"]["node1"] and step["after"]["node3"] > step["before"]["node3"]
            assert envoy_view(topo).weights == eds_file_view(topo).weights

            brokers.start("node2")
            back = bounded_poll(lambda: envoy_health(topo)["node2"] == "healthy", 2 * interval + 2)
            assert back is not None, "node2 did not come back after its broker restarted"
            print(
                f"dead broker: unhealthy in Envoy after {took:.2f} s (probe every {interval:g} s, 2 failures), "
                f"100/100 connects through Envoy succeeded, healthy again {back:.2f} s after restart"
            )
    finally:
        prometheus.close()


# --------------------------------------------------------------------------- fault 8: many resolves at once
GROUPS = [
    (ALERT_CPU_HIGH, {"node": "node1"}),
    (ALERT_CPU_HIGH, {"node": "node2"}),
    (ALERT_CPU_HIGH, {"node": "node3"}),
    (ALERT_IMBALANCED, {}),
    *[(ALERT_IMBALANCED, {"shard": str(i)}) for i in range(6)],
]


def group_alert(index: int, status: str) -> dict:
    name, labels = GROUPS[index]
    ends = "2026-11-30T12:30:00Z" if status == "resolved" else "0001-01-01T00:00:00Z"
    return notification([alert(name, Action.REBALANCE, status, "2026-11-30T12:00:00Z", ends, **labels)], f"g{index}")


def test_resolved_notifications_from_many_groups_make_at_most_one_weight_change_per_step(tmp_path):
    step = 3.0
    topo = rig_topology(tmp_path, policy={"cooldown_seconds": step})
    prometheus = PrometheusStub()
    prometheus.set(cpu={"node1": 0.9, "node2": 0.3, "node3": 0.2}, fast=FAST_BELOW_HIGH)
    write_webhook_config(topo, prometheus_url=prometheus.url)
    try:
        with Brokers(topo), running_envoy(topo), running_webhook(topo):
            for index in range(len(GROUPS)):
                post_alerts(topo, group_alert(index, "firing"))
            wait_until(lambda: eds_file_view(topo).weights["node1"] < 100, 10, "a step away from node1")
            steered = eds_file_view(topo)
            # the load evens out (spread below recover_max_spread), then every group resolves at once,
            # each notification twice (an HA pair)
            prometheus.set(cpu={"node1": 0.40, "node2": 0.39, "node3": 0.38}, fast=FAST_BELOW_HIGH)
            time.sleep(step / 2)
            seen = len(audit(topo))
            resolved_at = time.monotonic()
            with concurrent.futures.ThreadPoolExecutor(8) as pool:
                answers = list(
                    pool.map(
                        lambda i: post_alerts(topo, group_alert(i % len(GROUPS), "resolved")), range(2 * len(GROUPS))
                    )
                )
            assert sum(a["result"] == "changed" for a in answers) == len(GROUPS), "each resolve changes the set once"
            changes: list[tuple[float, int]] = []
            last = steered.version
            deadline = resolved_at + 2.5 * step
            while time.monotonic() < deadline:
                version = eds_file_view(topo).version
                if version != last:
                    changes.append((time.monotonic() - resolved_at, version))
                    last = version
                time.sleep(0.02)
            times = [t for t, _ in changes]
            assert len(changes) >= 2, f"recovery should step toward neutral: {changes}"
            assert sum(t < step - 0.3 for t in times) <= 1, f"more than one weight change in one step: {times}"
            gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
            assert all(gap >= step - 0.3 for gap in gaps), f"weight changes closer than the step interval: {gaps}"
            kinds = [e["kind"] for e in audit(topo)[seen:] if e["kind"] in ("rebalance", "recover")]
            assert kinds == ["recover"] * len(kinds) and len(kinds) == len(changes), kinds
            final = eds_file_view(topo)
            assert wait_until(lambda: envoy_view(topo).weights == final.weights or None, 5, "Envoy on the last step")
            auth = token_headers(topo.state.webhook_token)
            status = requests.get(topo.webhook.url("/status"), headers=auth, timeout=2).json()
            assert not status["firing"]["rebalance_firing"]
            print(
                f"{len(GROUPS)} groups resolved at once (each twice): weight changes at "
                f"{[round(t, 2) for t in times]} s after the resolves (step {step} s)"
            )
    finally:
        prometheus.close()
