"""The generated rules in the real stack: they evaluate cleanly, and real MQTT load on one broker
makes MqttBrokerCpuHigh fire for that node and reach Alertmanager."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import requests
from stackutil import active_alerts, web_auth

from mqttlb import contract as s
from mqttlb import rulegen
from mqttlb.loadgen.hot import HotNodeDriver
from mqttlb.stack.runner import Stack

pytestmark = pytest.mark.live

# Measured on the 2-core test box: 2 publishers x 1000 msg/s (256 B) with 16 fan-out subscribers
# keep one Mosquitto at ~0.3 cores, well above cpu_high (0.75) x the 0.25 cores the test stack
# credits each node.  Raw-socket subscribers read in bulk, so the broker, not the test, does the work.
FANOUT_SUBSCRIBERS = 16
PUBLISHERS = 2
RATE_PER_PUBLISHER = 1000.0
LOAD_SECONDS = 75.0


def _wait_for(check: Callable[[], Any], timeout: float, what: str, interval: float = 1.0) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def _query(stack: Stack, promql: str) -> list[dict[str, Any]]:
    response = requests.get(
        f"http://127.0.0.1:{stack.cfg.ports.prometheus}/api/v1/query",
        params={"query": promql},
        auth=web_auth(stack),
        timeout=5,
    )
    response.raise_for_status()
    return response.json()["data"]["result"]


def _by_node(stack: Stack, promql: str) -> dict[str, float]:
    return {r["metric"]["node"]: float(r["value"][1]) for r in _query(stack, promql)}


def _mqtt_str(text: str) -> bytes:
    data = text.encode()
    return len(data).to_bytes(2, "big") + data


def _mqtt_packet(first_byte: int, body: bytes) -> bytes:
    length, encoded = len(body), bytearray()
    while True:
        digit, length = length % 128, length // 128
        encoded.append(digit | (0x80 if length else 0))
        if not length:
            return bytes([first_byte]) + bytes(encoded) + body


def _discarding_subscriber(port: int, topic: str, client_id: str, stop: threading.Event) -> None:
    """MQTT 3.1.1 subscriber (QoS 0, keepalive off) that reads and drops bytes until ``stop``."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        connect = _mqtt_str("MQTT") + bytes([4, 0x02, 0, 0]) + _mqtt_str(client_id)
        sock.sendall(_mqtt_packet(0x10, connect))
        sock.sendall(_mqtt_packet(0x82, b"\x00\x01" + _mqtt_str(topic) + b"\x00"))
        sock.settimeout(0.5)
        while not stop.is_set():
            try:
                if not sock.recv(1 << 20):
                    return
            except TimeoutError:
                continue


@contextmanager
def _fanout(port: int, topic: str, count: int) -> Iterator[None]:
    stop = threading.Event()
    threads = [
        threading.Thread(target=_discarding_subscriber, args=(port, topic, f"fanout-{i}", stop), daemon=True)
        for i in range(count)
    ]
    for thread in threads:
        thread.start()
    try:
        time.sleep(0.5)  # let the SUBSCRIBEs land before the publishers start
        yield
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=5)


def _firing_cpu_high(stack: Stack) -> list[dict[str, Any]]:
    return active_alerts(stack, s.ALERT_CPU_HIGH)


def test_generated_rules_load_and_evaluate_in_prometheus(live_stack: Stack) -> None:
    url = f"http://127.0.0.1:{live_stack.cfg.ports.prometheus}/api/v1/rules"
    expected = {r["record"] for g in rulegen.recording_groups(live_stack.cfg.params) for r in g["rules"]}
    expected |= set(s.ALERT_NAMES)

    def evaluated_rules() -> dict[str, str] | None:
        groups = requests.get(url, auth=web_auth(live_stack), timeout=5).json()["data"]["groups"]
        rules = {r["name"]: r["health"] for g in groups for r in g["rules"]}
        return rules if rules and all(h != "unknown" for h in rules.values()) else None

    rules = _wait_for(evaluated_rules, timeout=30, what="every rule evaluated once")
    assert set(rules) == expected
    assert all(health == "ok" for health in rules.values()), rules
    nodes = set(live_stack.cfg.node_names)
    _wait_for(lambda: set(_by_node(live_stack, s.NODE_CPU)) == nodes, timeout=40, what="CPU of all nodes")
    assert _query(live_stack, s.CLUSTER_NODES_UP)[0]["value"][1] == str(len(nodes))


@pytest.mark.slow
def test_hot_broker_fires_cpu_high_into_alertmanager(live_stack: Stack) -> None:
    cfg = live_stack.cfg
    hot_node, hot_port = cfg.node_names[0], cfg.broker_ports[0]
    threshold = cfg.params.cpu_high
    _wait_for(lambda: set(_by_node(live_stack, s.NODE_CPU)) == set(cfg.node_names), timeout=40,
              what="per-node CPU of all nodes")
    assert not [a for a in _firing_cpu_high(live_stack) if a["labels"].get("node") == hot_node]

    started = time.monotonic()
    with (
        _fanout(hot_port, f"mqttlb/hot/{hot_port}/#", FANOUT_SUBSCRIBERS),
        HotNodeDriver(hot_port, publishers=PUBLISHERS, rate=RATE_PER_PUBLISHER, duration=LOAD_SECONDS),
    ):
        alerts = _wait_for(
            lambda: [a for a in _firing_cpu_high(live_stack) if a["labels"].get("node") == hot_node],
            timeout=LOAD_SECONDS - 5,
            what=f"{s.ALERT_CPU_HIGH} for {hot_node} in Alertmanager",
            interval=2.0,
        )
        fired_after = time.monotonic() - started
        cpu = _by_node(live_stack, s.NODE_CPU)
        deviation = _by_node(live_stack, s.NODE_CPU_DEVIATION)

    alert = alerts[0]
    assert alert["labels"][s.CLUSTER_LABEL] == cfg.cluster
    assert alert["labels"]["action"] == rulegen.ACTION_REBALANCE
    assert alert["labels"]["severity"] == "warning"
    assert alert["annotations"]["runbook_url"].endswith(f"/{s.ALERT_CPU_HIGH}.md")
    assert alert["status"]["state"] == "active"
    # Only the driven node is hot, and it sits above the mean of the cluster.
    assert cpu[hot_node] > threshold, cpu
    assert deviation[hot_node] > 0, deviation
    others = [n for n in cfg.node_names if n != hot_node]
    assert all(cpu[n] < threshold for n in others), cpu
    print(f"{s.ALERT_CPU_HIGH} for {hot_node} in Alertmanager after {fired_after:.1f}s; cpu={cpu}")

    # Leave the shared stack calm for the next test: the hot node cools below the threshold.
    _wait_for(lambda: _by_node(live_stack, s.NODE_CPU).get(hot_node, 1.0) < threshold, timeout=60,
              what=f"{hot_node} to cool down")
