"""The rebalancer's levers on a real Envoy (issue 13): weights through the EDS file and REST EDS, shedding.

Real processes on free loopback ports: Mosquitto nodes with the stack's config, Envoy with the
product bootstrap (``stackutil.running_envoy``), ``mqttlb webhook`` with the stack's webhook config;
only Prometheus is a stub (``webhookrig.PrometheusStub``) whose per-node values the test sets.

* the weights a pass publishes in the EDS file are the weights Envoy applies (``/clusters``) under
  the same version (``version_text``), and a second Envoy polling REST EDS converges to both;
* shedding right after an Envoy restart (0 active connections) caps at the larger of the brokers'
  connections and ``policy.shed_min_connections``, never at 1; held sessions keep working through
  every level; once the alert resolves the levels lift one per step interval.
"""

from __future__ import annotations

import json
import time

import pytest
import requests
from stackutil import running_envoy, wait_until
from webhookrig import (
    NODES,
    AlertmanagerStub,
    Brokers,
    MqttSession,
    PrometheusStub,
    View,
    alert,
    api_alert,
    bounded_poll,
    connects,
    eds_file_view,
    envoy_view,
    failures,
    notification,
    post_alerts,
    rest_eds_topology,
    rest_eds_view,
    rig_topology,
    running_webhook,
    state_view,
    status,
    write_webhook_config,
)

from mqttlb.contract import ALERT_CPU_CRITICAL, ALERT_CPU_HIGH, Action
from mqttlb.envoy_admin import EnvoyAdminClient, circuit_breaker_key
from mqttlb.stack.topology import Topology
from mqttlb.webhook.shedding import OVERLOAD_OFF, OVERLOAD_ON

pytestmark = pytest.mark.live

HOT_NODE1 = {"node1": 0.9, "node2": 0.3, "node3": 0.2}
FAST_BELOW_HIGH = dict.fromkeys(NODES, 0.5)  # short-window CPU under cpu_high: no early steering


def same(views: list[View]) -> bool:
    first = views[0]
    return all((v.version, v.weights, v.draining) == (first.version, first.weights, first.draining) for v in views)


# --------------------------------------------------------------------------- weights: EDS file and REST EDS
def test_weights_published_in_the_eds_file_are_applied_by_envoy_and_rest_eds_converges(tmp_path):
    topo = rig_topology(tmp_path, policy={"cooldown_seconds": 1})
    rest = rest_eds_topology(topo, tmp_path / "rest-envoy")
    prometheus = PrometheusStub()
    prometheus.set(cpu=HOT_NODE1, fast=FAST_BELOW_HIGH)
    # the second Envoy polls REST EDS, which cannot send a header: open that route, as the compose stack does
    write_webhook_config(topo, prometheus_url=prometheus.url, open_routes=["eds"])
    try:
        with Brokers(topo), running_envoy(topo), running_webhook(topo), running_envoy(rest):
            start = eds_file_view(topo)
            wait_until(
                lambda: same([start, envoy_view(topo), envoy_view(rest)]), 10, "both Envoys on the start snapshot"
            )
            assert set(start.weights.values()) == {100}
            post_alerts(topo, notification([alert(ALERT_CPU_HIGH, Action.REBALANCE, node="node1")], ALERT_CPU_HIGH))
            # two steps away from the hot node, then the alert resolves while node1 stays hotter:
            # recovery holds the weights, so the snapshot stands still for the comparison
            wait_until(lambda: eds_file_view(topo).version >= start.version + 2, 10, "two steps published")
            resolved = alert(ALERT_CPU_HIGH, Action.REBALANCE, "resolved", node="node1", ends_at="2026-11-30T12:05:00Z")
            post_alerts(topo, notification([resolved], ALERT_CPU_HIGH))
            time.sleep(1.5)  # a pass that was running when the resolve came has finished

            def all_agree() -> View | None:
                views = [
                    eds_file_view(topo),
                    state_view(topo.state.webhook_state),
                    rest_eds_view(topo),
                    envoy_view(topo),
                    envoy_view(rest),
                ]
                return views[0] if same(views) else None

            agreed = wait_until(all_agree, 15, "EDS file, state, REST EDS and both Envoys on one snapshot")
            assert agreed.version >= start.version + 2
            assert agreed.weights["node1"] < 100 < agreed.weights["node3"], agreed
            published = status(topo)
            rows = {n["node"]: n["published"] for n in published["nodes"]}
            assert rows == agreed.weights and published["published_version"] == agreed.version
            stats = requests.get(rest.envoy_admin.url("/stats"), params={"filter": "update_success"}, timeout=2).text
            assert f"cluster.{rest.settings.envoy_cluster}.update_success" in stats
            time.sleep(2.5)  # one more REST poll (EDS_REFRESH 2 s): still the same snapshot everywhere
            assert all_agree() == agreed
            print(f"snapshot v{agreed.version} {agreed.weights}: EDS file, state, REST EDS and both Envoys agree")
    finally:
        prometheus.close()


# --------------------------------------------------------------------------- shedding after an Envoy restart
def runtime_cap(topo: Topology) -> int | None:
    value = EnvoyAdminClient(topo.envoy_admin.url()).runtime_value(circuit_breaker_key(topo.settings.envoy_cluster))
    return None if value is None else int(value)


def shed_levels_over(
    topo: Topology, seconds: float, start: tuple[float, int] | None = None
) -> list[tuple[float, int]]:
    """(monotonic time, level) each time /status showed a new shed level, polled for ``seconds``, after
    ``start`` (the level known before, e.g. when the alert was posted: the loop may act before the first poll)."""
    changes: list[tuple[float, int]] = [start] if start is not None else []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        level = int(status(topo)["shed_level"])
        if not changes or changes[-1][1] != level:
            changes.append((time.monotonic(), level))
        time.sleep(0.05)
    return changes


def caps_until_hard_stop(topo: Topology, held: list[MqttSession], timeout: float) -> list[int]:
    """Every cap Envoy's runtime shows until the controller reaches the hard stop (level 5); each new
    cap is checked against the held sessions, which must still carry messages."""
    caps = [cap for cap in [runtime_cap(topo)] if cap is not None]
    deadline = time.monotonic() + timeout
    while status(topo)["shed_level"] < 5 and time.monotonic() < deadline:
        value = runtime_cap(topo)
        if value is not None and (not caps or value != caps[-1]):
            caps.append(value)
            assert all(s.roundtrip() for s in held), f"held sessions must survive the cap {value}"
        time.sleep(0.05)
    assert status(topo)["shed_level"] == 5, "escalates to the hard stop while the alert fires"
    return caps


def test_shedding_after_an_envoy_restart_keeps_a_sane_cap_and_lifts_one_level_per_step(tmp_path):
    step, floor = 2.0, 20
    topo = rig_topology(tmp_path, policy={"cooldown_seconds": step, "shed_min_connections": floor})
    listener = topo.envoy_listener.port
    prometheus = PrometheusStub()
    prometheus.set(cpu=dict.fromkeys(NODES, 0.9), fast=FAST_BELOW_HIGH, connections=dict.fromkeys(NODES, 0))
    write_webhook_config(topo, prometheus_url=prometheus.url)
    held: list[MqttSession] = []
    try:
        with Brokers(topo), running_webhook(topo):
            with running_envoy(topo, log=topo.state.logs / "envoy-before-restart.log"):
                wait_until(lambda: connects(listener, "before-restart"), 10, "a session through the first Envoy")
            # the restarted Envoy holds 0 connections; the brokers report 0 as well
            with running_envoy(topo):
                assert EnvoyAdminClient(topo.envoy_admin.url()).active_connections(topo.settings.envoy_cluster) == 0
                shed = alert(ALERT_CPU_CRITICAL, Action.SHED, starts_at="2026-11-30T12:10:00Z")
                post_alerts(topo, notification([shed], ALERT_CPU_CRITICAL))
                cap = wait_until(lambda: runtime_cap(topo), 5, "the circuit-breaker cap in Envoy's runtime")
                assert cap == floor, f"cap {cap}: with 0 active and 0 reported the basis is shed_min_connections"
                # level 1 holds at the basis: new sessions still get in (the old cap was 1)
                held = [MqttSession(listener, f"held-{i}") for i in range(5)]
                caps = caps_until_hard_stop(topo, held, timeout=6 * step)
                assert caps == [20, 16, 12, 8], caps  # floor, then ceil(20 * 0.8, 0.6, 0.4)
                assert topo.state.pressure_file.read_text().strip() == OVERLOAD_ON
                time.sleep(0.6)  # the overload manager reads the pressure file every 0.25 s
                assert not connects(listener, "during-hard-stop", timeout=2), "the hard stop refuses new sessions"
                assert all(s.roundtrip() for s in held), "held sessions survive the hard stop"
                # the alert resolves: one level per step interval, back to no override at all
                resolved_at = time.monotonic()
                resolved = alert(
                    ALERT_CPU_CRITICAL, Action.SHED, "resolved", "2026-11-30T12:10:00Z", "2026-11-30T12:11:00Z"
                )
                post_alerts(topo, notification([resolved], ALERT_CPU_CRITICAL))
                changes = shed_levels_over(topo, 6 * step, start=(resolved_at, 5))
                assert [level for _, level in changes] == [5, 4, 3, 2, 1, 0], changes
                times = [t for t, _ in changes[1:]]
                gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
                assert all(gap >= step - 0.3 for gap in gaps), f"lifted faster than one level per {step}s: {gaps}"
                assert all(gap <= step + 1.5 for gap in gaps), f"lifting stalled: {gaps}"
                assert times[0] - resolved_at <= step + 1.5
                assert runtime_cap(topo) is None and topo.state.pressure_file.read_text().strip() == OVERLOAD_OFF
                assert all(s.roundtrip() for s in held), "held sessions survive the whole episode"
                time.sleep(0.6)
                assert connects(listener, "after-shedding"), "new sessions get in again"
                # a new episode while the brokers report more connections than Envoy holds: their count is the basis
                prometheus.set(connections={"node1": 15, "node2": 15, "node3": 10})
                again = alert(ALERT_CPU_CRITICAL, Action.SHED, starts_at="2026-11-30T12:20:00Z")
                post_alerts(topo, notification([again], ALERT_CPU_CRITICAL))
                assert wait_until(lambda: runtime_cap(topo), 5, "the second episode's cap") == 40
                print(
                    f"shed caps after an Envoy restart: {caps}, then hard stop; lifted at gaps "
                    f"{[round(g, 2) for g in gaps]} s (step {step} s); broker-reported basis: 40"
                )
    finally:
        for session in held:
            session.close()
        prometheus.close()


def test_an_envoy_restarted_while_shedding_gets_the_cap_back(tmp_path):
    """Envoy's runtime overrides die with it: the next passes find the cap missing and set it again."""
    floor = 20
    topo = rig_topology(tmp_path, policy={"cooldown_seconds": 60, "shed_min_connections": floor})
    prometheus = PrometheusStub()
    prometheus.set(cpu=dict.fromkeys(NODES, 0.9), fast=FAST_BELOW_HIGH, connections=dict.fromkeys(NODES, 0))
    write_webhook_config(topo, prometheus_url=prometheus.url)
    try:
        with Brokers(topo), running_webhook(topo):
            with running_envoy(topo, log=topo.state.logs / "envoy-before-restart.log"):
                shed = alert(ALERT_CPU_CRITICAL, Action.SHED, starts_at="2026-11-30T12:10:00Z")
                post_alerts(topo, notification([shed], ALERT_CPU_CRITICAL))
                assert wait_until(lambda: runtime_cap(topo), 5, "the cap in the first Envoy") == floor
            with running_envoy(topo):
                restored = bounded_poll(lambda: runtime_cap(topo) == floor, 5)
                assert restored is not None, "the restarted Envoy runs without the shed cap"
                assert status(topo)["shed_level"] == 1, "repairing the cap is not a new shed step"
                print(f"shed cap back in the restarted Envoy after {restored:.2f} s")
    finally:
        prometheus.close()


def test_a_webhook_restarted_while_shedding_starts_without_envoy_and_applies_the_cap_once_it_answers(tmp_path):
    """A persisted shed level whose cap cannot be set at start (Envoy not up yet) is counted, the webhook
    serves anyway (it used to die with a traceback), and the passes set the cap once Envoy answers.
    The shed alert still fires: the firing set is rebuilt from Alertmanager's API at start."""
    topo = rig_topology(tmp_path, policy={"cooldown_seconds": 60})
    prometheus = PrometheusStub()
    prometheus.set(cpu=dict.fromkeys(NODES, 0.9), fast=FAST_BELOW_HIGH)
    alertmanager = AlertmanagerStub()
    alertmanager.alerts = [api_alert(alert(ALERT_CPU_CRITICAL, Action.SHED, starts_at="2026-11-30T12:10:00Z"))]
    write_webhook_config(topo, prometheus_url=prometheus.url, alertmanager_urls=[alertmanager.url])
    persisted = {
        "version": 7,
        "nodes": list(NODES),
        "weights": dict.fromkeys(NODES, 100),
        "shed_level": 2,
        "shed_anchor": 50,
        "last_shed_change": time.time(),  # the next level is a step interval (60 s) away
    }
    topo.state.webhook_state.write_text(json.dumps(persisted))
    try:
        with Brokers(topo), running_webhook(topo):
            assert failures(topo, "shed", "envoy") >= 1, "the cap that could not be set at start is counted"
            assert status(topo)["shed_level"] == 2 and status(topo)["version"] == 8
            with running_envoy(topo):
                applied = bounded_poll(lambda: runtime_cap(topo) == 40, 5)  # ceil(50 * 0.8)
                assert applied is not None, f"the cap never reached Envoy (runtime shows {runtime_cap(topo)})"
                assert status(topo)["shed_level"] == 2
                print(f"shed level 2 from the state file applied {applied:.2f} s after Envoy came up")
    finally:
        alertmanager.close()
        prometheus.close()
