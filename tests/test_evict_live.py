"""The evict lever on the real stack: Mosquitto nodes with the mqttlb plugin, Envoy, the webhook process.

Clients (MQTT 3.1.1 and MQTT 5, clean sessions, publishing once a second) connect through Envoy and
reconnect through Envoy when disconnected.  The operator evacuates node1 (``POST /evacuate``):

* bad requests (no token, malformed, unknown field, unknown node) are refused and change nothing,
  and a dry run names the first batch without disconnecting anyone;
* (``eviction.allow_persistent`` is set: the plugin counts every MQTT 5 client as persistent;)
* then node1 is drained and emptied batch by batch: every client that was on it is disconnected once,
  reconnects through Envoy to another node, MQTT 5 clients see reason code 0x9C "Use another server";
* each audited batch stays within its bound (``max_per_second`` x one pass), the disconnects never
  exceed ``max_per_second`` in any second (plus one for a window's edge), and the webhook's counter
  equals the clients that left; the evacuation ends by itself and node1 stays drained.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from stackutil import Fleet, free_ports_config, running_stack, wait_until, webhook_headers

from mqttlb import contract
from mqttlb.stack.ephemeral import FAST_PARAMS
from mqttlb.stack.runner import Stack

pytestmark = pytest.mark.live

MAX_PER_SECOND = 5
CLIENTS_V311 = 24
CLIENTS_V5 = 9
NODE = "node1"


@pytest.fixture()
def stack(tmp_path: Path) -> Iterator[Stack]:
    # allow_persistent: Mosquitto's plugin API does not show an MQTT 5 client's session expiry, so the plugin
    # counts MQTT 5 clients as persistent (brokers/mosquitto-plugin/README.md); the operator opts in here.
    params = {
        **FAST_PARAMS,
        "eviction": {"enabled": True, "max_per_second": MAX_PER_SECOND, "allow_persistent": True},
    }
    cfg = free_ports_config(tmp_path / "state", nodes=3, params=params, scrape_interval="2s", node_cpu_cores=0.25)
    with running_stack(cfg) as running:
        yield running


def post(stack: Stack, path: str, body: object, token: str | None) -> requests.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return requests.post(stack.topology.webhook.url(path), data=data, headers=headers, timeout=30)


def evict_entries(stack: Stack) -> list[dict]:
    path = stack.topology.state.webhook_audit
    if not path.exists():
        return []
    entries = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [e for e in entries if e.get("kind") == contract.OutcomeKind.EVICT.value]


def evicted_counter(stack: Stack, node: str) -> float:
    text = requests.get(stack.topology.webhook.url("/metrics"), headers=webhook_headers(stack), timeout=5).text
    for line in text.splitlines():
        if line.startswith(contract.WEBHOOK_EVICTED + "{") and f'node="{node}"' in line and "evacuate" in line:
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no {contract.WEBHOOK_EVICTED} for {node}")


def test_evacuate_a_node_through_the_real_plugin(stack: Stack) -> None:
    topo = stack.topology
    token = topo.state.webhook_token.read_text().strip()
    fleet = Fleet("127.0.0.1", topo.envoy_listener.port)
    stop = threading.Event()

    def publish_loop() -> None:
        deadline = time.monotonic() + 150
        while not stop.is_set() and time.monotonic() < deadline:
            fleet.publish_once()
            stop.wait(1.0)

    publisher = threading.Thread(target=publish_loop, daemon=True)
    try:
        fleet.connect_mixed("fleet", CLIENTS_V311, CLIENTS_V5)
        publisher.start()

        def preview() -> dict:
            answer = post(stack, "/evacuate", {"node": NODE, "dry_run": True}, token)
            assert answer.status_code == 200, answer.text
            batch: dict = answer.json()["batches"][0]
            return batch

        first = wait_until(lambda: (b := preview())["clients"] and b, 30, f"the plugin lists {NODE}'s clients")
        assert set(first["clients"]) <= set(fleet.clients) and len(first["clients"]) <= first["bound"]

        # Refused requests change nothing.
        refusals = [
            (post(stack, "/evacuate", {"node": NODE}, None), 401),
            (post(stack, "/evacuate", b"{not json", token), 400),
            (post(stack, "/evacuate", {"node": NODE, "bogus": 1}, token), 400),
            (post(stack, "/evacuate", {"node": NODE, "evacuate": "yes"}, token), 400),
            (post(stack, "/evacuate", {"node": "node9"}, token), 404),
            (post(stack, "/rebalance", {"dry_run": "no"}, token), 400),
        ]
        assert [r.status_code for r, _ in refusals] == [code for _, code in refusals], [r.text for r, _ in refusals]
        time.sleep(3)  # a few passes
        status = requests.get(topo.webhook.url("/status"), headers=webhook_headers(stack), timeout=5).json()
        assert status["eviction"]["evacuating"] == [] and not any(n["draining"] for n in status["nodes"])
        assert not fleet.disconnects and not evict_entries(stack), "a dry run or a refused request disconnected"

        accepted = post(stack, "/evacuate", {"node": NODE}, token)
        assert accepted.status_code == 202, accepted.text

        def evacuated() -> bool:
            state = requests.get(topo.webhook.url("/status"), headers=webhook_headers(stack), timeout=5).json()
            node = next(n for n in state["nodes"] if n["node"] == NODE)
            return node["draining"] and state["eviction"]["evacuating"] == [] and bool(evict_entries(stack))

        wait_until(evacuated, 90, f"{NODE} evacuated", interval=1)
        wait_until(lambda: len(fleet.connected) == len(fleet.clients), 30, "every evicted client back")
        assert preview()["clients"] == [], "clients left on the evacuated node"
        with fleet.lock:
            disconnects = list(fleet.disconnects)  # before our own disconnects at the end
    finally:
        stop.set()
        fleet.close()

    entries = evict_entries(stack)
    left = {client_id for client_id, _, _ in disconnects}
    evicted = [c for e in entries if e["applied"] for c in e["after"]["clients"]]
    assert sorted(evicted) == sorted(left) and len(evicted) == len(set(evicted)), (entries, disconnects)
    assert all(e["after"]["count"] <= e["after"]["bound"] for e in entries)
    assert evicted_counter(stack, NODE) == len(evicted)
    # MQTT 5 clients were told to use another server; MQTT 3 clients just lost the connection.
    v5 = [code for client_id, _, code in disconnects if client_id.startswith("fleet-v5-")]
    assert v5 and all(code == 0x9C for code in v5), disconnects
    # Paced: never more than max_per_second disconnects in any one-second window (+1 for the edge).
    times = sorted(t for _, t, _ in disconnects)
    worst = max(sum(1 for u in times if t <= u < t + 1.0) for t in times)
    assert worst <= MAX_PER_SECOND + 1, times
