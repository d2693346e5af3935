"""Live: the native stack with ``broker: hivemq`` -- three HiveMQ CE nodes run by the brokers/hivemq
launcher behind Envoy, with the broker exporter, Prometheus, Alertmanager and the webhook as always.

One stack for the module (on free ports), used in this order:
- a fleet of MQTT 3.1.1 and MQTT 5 clients connects through Envoy and lands on every node; a QoS 1
  message published through Envoy reaches the subscribers on the publisher's node (CE nodes are
  independent brokers); every Prometheus target is up, the HiveMQ nodes' own included, and
  ``mqtt_broker_clients_connected`` is non-zero for every node;
- the operator evacuates node1 (``POST /evacuate``): the webhook drains it and evicts its clients through
  the mqttlb extension's API (``eviction: {kind: hivemq}`` in its config) at <= ``max_per_second``; every
  client that was on node1 reconnects through Envoy to another node, MQTT 5 clients see reason code 0x9C;
- the operator drains node2 (``POST /drain``): Envoy shows it draining (EDS) and its extension's availability
  endpoint, the load balancers' health check, answers 503; undrained, 200 again.

Marked ``hivemq`` (and ``live``): `make test-hivemq` runs it (about a minute), `make test` leaves it out.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
import requests
import yaml
from hivemqnode import ensure_built
from paho.mqtt.enums import CallbackAPIVersion
from stackutil import Fleet, free_ports_config, running_stack, wait_until, web_auth, webhook_headers
from test_stack_live import assert_every_printed_address_answers

from mqttlb import contract
from mqttlb.brokers.hivemq import HivemqEvictionAdapter
from mqttlb.stack.ephemeral import FAST_PARAMS
from mqttlb.stack.runner import Stack

pytestmark = [pytest.mark.hivemq, pytest.mark.live]

MAX_PER_SECOND = 4
CLIENTS_V311 = 9
CLIENTS_V5 = 9
NODE = "node1"
TOPIC = f"mqttlb/hq/{uuid.uuid4().hex[:8]}"


@dataclass
class HiveStack:
    stack: Stack
    fleet: Fleet
    webhook_token: str
    adapters: dict[str, HivemqEvictionAdapter]  # node name -> its extension, as the webhook reaches it

    def placement(self) -> dict[str, set[str]]:
        """node -> the fleet's clients each node's extension lists."""
        return {n: {c.client_id for c in a.clients()} & set(self.fleet.clients) for n, a in self.adapters.items()}

    def full_placement(self) -> dict[str, set[str]] | None:
        """`placement` once every client of the fleet is listed by some node, else None."""
        placed = self.placement()
        return placed if sum(map(len, placed.values())) == len(self.fleet.clients) else None

    def home_of(self, client_id: str) -> str | None:
        """The node whose extension lists ``client_id``, if any."""
        return next((n for n, a in self.adapters.items() if client_id in {c.client_id for c in a.clients()}), None)


def warm_up(port: int, connects: int = 20) -> None:
    """``connects`` MQTT sessions one after another straight to the broker on ``port`` (each waits for its CONNACK)."""
    for i in range(connects):
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"hq-warm-{port}-{i}")
        client.connect("127.0.0.1", port, keepalive=10)
        client.loop(timeout=1.0)
        client.disconnect()


@pytest.fixture(scope="module")
def hive(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HiveStack]:
    ensure_built()
    params = {**FAST_PARAMS, "eviction": {"enabled": True, "max_per_second": MAX_PER_SECOND}}
    state = tmp_path_factory.mktemp("hivemq-stack") / "state"
    cfg = free_ports_config(state, nodes=3, broker="hivemq", params=params, scrape_interval="2s")
    with running_stack(cfg) as stack:
        topo = stack.topology
        webhook_nodes = yaml.safe_load(topo.files.webhook_config.read_text())["nodes"]
        controls = {n["name"]: n["eviction"] for n in webhook_nodes}
        assert {c["kind"] for c in controls.values()} == {"hivemq"}
        adapters = {
            name: HivemqEvictionAdapter(c["url"], token=Path(c["token_file"]).read_text().strip(), timeout=5)
            for name, c in controls.items()
        }
        # Freshly started JVMs on 2 busy cores can answer Envoy's health probe (CONNECT, 1 s timeout) late, and
        # Envoy then skips the node for a moment: warm each node's connect path up, then wait until Envoy has
        # seen every node healthy for 3 s in a row before the fleet connects.
        for port in stack.cfg.broker_ports:
            warm_up(port)
        healthy_since: list[float] = []

        def steadily_healthy() -> bool:
            if [h.health for h in stack.envoy_hosts()] != ["healthy"] * len(stack.cfg.node_names):
                healthy_since.clear()
                return False
            healthy_since[:] = healthy_since or [time.monotonic()]
            return time.monotonic() - healthy_since[0] >= 3.0

        wait_until(steadily_healthy, 60, "every node healthy in Envoy for 3 s", interval=0.25)
        fleet = Fleet("127.0.0.1", topo.envoy_listener.port, TOPIC)
        try:
            fleet.connect_mixed("hq", CLIENTS_V311, CLIENTS_V5)
            yield HiveStack(stack, fleet, topo.state.webhook_token.read_text().strip(), adapters)
        finally:
            fleet.close()
            for adapter in adapters.values():
                adapter.close()


def prometheus(stack: Stack, query: str) -> list[dict]:
    url = stack.topology.prometheus.url("/api/v1/query")
    answer = requests.get(url, params={"query": query}, auth=web_auth(stack), timeout=5)
    result: list[dict] = answer.json()["data"]["result"]
    return result


def test_the_printed_addresses_list_every_nodes_extension_and_each_answers(hive: HiveStack) -> None:
    """Trial: with BROKER=hivemq the address block had no extension URL.  Runs first: later tests drain nodes
    (a drained node's availability answers 503)."""
    printed: list[str] = []
    stack = hive.stack
    stack.out = printed.append
    stack.print_addresses()
    text = "\n".join(printed)
    for what, path in (("HiveMQ metrics", "/metrics"), ("HiveMQ availability", "/mqttlb/v1/availability"),
                       ("HiveMQ clients", "/mqttlb/v1/clients")):
        [line] = [line for line in printed if line.strip().startswith(what)]
        assert all(f"127.0.0.1:{node.http_port}{path}" in line for node in stack.topology.nodes), line
    assert f"bearer token in {stack.paths.hivemq_token}" in text
    assert_every_printed_address_answers(text)


def test_qos1_through_envoy_every_target_up_and_clients_on_every_node(hive: HiveStack) -> None:
    stack, fleet = hive.stack, hive.fleet
    placed = wait_until(hive.full_placement, 15, "every client listed by a node's extension")
    assert placed is not None
    assert all(placed.values()), f"Envoy left a node without clients: {placed}; Envoy: {stack.envoy_hosts()}"

    publisher = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="hq-publisher", protocol=mqtt.MQTTv5)
    publisher.connect("127.0.0.1", stack.topology.envoy_listener.port, keepalive=30)
    publisher.loop_start()
    try:
        home = wait_until(lambda: hive.home_of("hq-publisher"), 10, "the publisher listed")
        assert home is not None
        info = publisher.publish(TOPIC, b"through-envoy", qos=1)
        info.wait_for_publish(timeout=5)
        assert info.is_published(), "no PUBACK through Envoy"
        wait_until(lambda: set(fleet.received) == placed[home], 10, f"the message at {home}'s subscribers")
        assert all(messages == [b"through-envoy"] for messages in fleet.received.values())
    finally:
        publisher.disconnect()
        publisher.loop_stop()

    def all_up() -> list[dict] | None:
        url = stack.topology.prometheus.url("/api/v1/targets")
        targets: list[dict] = requests.get(url, auth=web_auth(stack), timeout=5).json()["data"]["activeTargets"]
        return targets if targets and all(t["health"] == "up" for t in targets) else None

    targets = wait_until(all_up, 30, "every Prometheus target up", interval=1)
    assert targets is not None
    jobs = {(t["labels"]["job"], t["labels"]["instance"]) for t in targets}
    hivemq_targets = {instance for job, instance in jobs if job == "hivemq"}
    assert hivemq_targets == {f"127.0.0.1:{n.http_port}" for n in stack.topology.nodes}
    assert {job for job, _ in jobs} == {
        contract.JOB_PROMETHEUS,
        contract.JOB_BROKERS,
        contract.JOB_ENVOY_EXPORTER,
        contract.JOB_ENVOY,
        contract.JOB_ALERTMANAGER,
        contract.JOB_WEBHOOK,
        "hivemq",
    }

    def non_zero_everywhere() -> list[dict] | None:
        result = prometheus(stack, f"{contract.BROKER_CLIENTS_CONNECTED} > 0")
        return result if len(result) == stack.cfg.nodes else None

    connected = wait_until(non_zero_everywhere, 30, "mqtt_broker_clients_connected > 0 for every node", interval=1)
    assert connected is not None
    assert {r["metric"]["node"] for r in connected} == set(stack.cfg.node_names)
    kinds = prometheus(stack, contract.BROKER_INFO)
    assert {r["metric"]["kind"] for r in kinds} == {"hivemq"}


def post(stack: Stack, path: str, body: object, token: str) -> requests.Response:
    headers = {"Authorization": f"Bearer {token}"}
    return requests.post(stack.topology.webhook.url(path), data=json.dumps(body), headers=headers, timeout=30)


def evict_entries(stack: Stack) -> list[dict]:
    path = stack.topology.state.webhook_audit
    entries = [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []
    return [e for e in entries if e.get("kind") == contract.OutcomeKind.EVICT.value]


def test_evacuating_a_node_moves_its_clients_through_the_extension_at_the_bounded_rate(hive: HiveStack) -> None:
    stack, fleet = hive.stack, hive.fleet
    leaving = hive.placement()[NODE]
    assert leaving, f"no client on {NODE}"
    with fleet.lock:
        fleet.disconnects.clear()
    dry = post(stack, "/evacuate", {"node": NODE, "dry_run": True}, hive.webhook_token)
    assert dry.status_code == 200 and set(dry.json()["batches"][0]["clients"]) <= leaving, dry.text

    accepted = post(stack, "/evacuate", {"node": NODE}, hive.webhook_token)
    assert accepted.status_code == 202, accepted.text

    def evacuated() -> bool:
        state = requests.get(stack.topology.webhook.url("/status"), headers=webhook_headers(stack), timeout=5).json()
        node = next(n for n in state["nodes"] if n["node"] == NODE)
        return bool(node["draining"] and state["eviction"]["evacuating"] == [] and evict_entries(stack))

    wait_until(evacuated, 60, f"{NODE} evacuated", interval=1)
    wait_until(lambda: len(fleet.connected) == len(fleet.clients), 30, "every evicted client back")
    placed = wait_until(hive.full_placement, 15, "every client listed again")
    assert placed is not None
    assert placed[NODE] == set(), f"clients still on the evacuated {NODE}: {placed[NODE]}"
    with fleet.lock:
        disconnects = list(fleet.disconnects)
    assert {c for c, _, _ in disconnects} == leaving and len(disconnects) == len(leaving), disconnects
    # MQTT 5 clients were told to use another server; MQTT 3.1.1 has no server DISCONNECT.
    v5 = [code for client_id, _, code in disconnects if client_id.startswith("hq-v5-")]
    assert v5 and all(code == 0x9C for code in v5), disconnects
    # Paced: never more than max_per_second disconnects in any one-second window (+1 for the edge).
    times = sorted(t for _, t, _ in disconnects)
    worst = max(sum(1 for u in times if t <= u < t + 1.0) for t in times)
    print(f"\n[figures] {len(times)} clients left {NODE} in {times[-1] - times[0]:.2f} s, at most {worst} in 1 s")
    assert worst <= MAX_PER_SECOND + 1, times
    evicted = [c for e in evict_entries(stack) if e["applied"] for c in e["after"]["clients"]]
    assert sorted(evicted) == sorted(leaving), evict_entries(stack)


def test_a_drain_switches_the_nodes_availability_endpoint(hive: HiveStack) -> None:
    stack, node = hive.stack, "node2"
    by_name = {n.name: n for n in stack.topology.nodes}

    def availability(name: str) -> int:
        url = f"http://127.0.0.1:{by_name[name].http_port}/mqttlb/v1/availability"
        return requests.get(url, timeout=5).status_code

    def envoy_health(name: str) -> str:
        return next(h.health for h in stack.envoy_hosts() if h.node == name)

    assert availability(node) == 200 and availability("node3") == 200
    started = time.monotonic()
    drained = post(stack, "/drain", {"node": node, "draining": True}, hive.webhook_token)
    assert drained.status_code == 202, drained.text
    wait_until(lambda: availability(node) == 503, 10, f"{node}'s availability 503")
    print(f"\n[figures] POST /drain -> availability 503: {time.monotonic() - started:.2f} s")
    wait_until(lambda: envoy_health(node) == "draining", 10, f"{node} draining in Envoy")
    assert availability("node3") == 200
    undrained = post(stack, "/drain", {"node": node, "draining": False}, hive.webhook_token)
    assert undrained.status_code == 202, undrained.text
    wait_until(lambda: availability(node) == 200, 10, f"{node}'s availability 200 again")
    wait_until(lambda: envoy_health(node) == "healthy", 10, f"{node} healthy in Envoy")
    failures = prometheus(stack, f'{contract.WEBHOOK_FAILURES}{{kind="drain",reason="availability"}}')
    assert failures and all(float(r["value"][1]) == 0 for r in failures), failures
