"""Live: HiveMQ Community Edition nodes run by the brokers/hivemq launcher with the mqttlb extension.

Three nodes on free loopback ports (hivemq.node_command), started once for the module:
- MQTT: a QoS 1 publish reaches a subscriber;
- /metrics: promtool's verdict, the official Prometheus extension's naming rule for every metric
  kind, the committed CE fixture's names and types, and the broker exporter's HiveMQ adapter;
- the eviction interface: per-client inbound load, bounded-rate eviction with reason code 0x9C and
  the Server Reference, refusals that change nothing;
- the availability endpoint (200 accepting / 503 draining);
- figures: resident memory per node, start time, /metrics scrape time (printed; run with -s).

Marked ``hivemq``: `make test` leaves them out, `make test-hivemq` builds the jar and runs them.
"""

from __future__ import annotations

import re
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import paho.mqtt.client as mqtt
import pytest
import requests
import yaml
from hivemqnode import TOKEN, Node, auth, ensure_built, node_command, running_nodes
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from prometheus_client.parser import text_string_to_metric_families
from stackutil import free_port, process, wait_until

from mqttlb import contract
from mqttlb.brokers.eviction import EvictionError
from mqttlb.brokers.hivemq import HivemqEvictionAdapter
from mqttlb.exporters.broker_collector import SAMPLE_METRICS
from mqttlb.exporters.hivemq_mapping import CPU_KERNEL_MS, CPU_USER_MS, DIRECT, parse_values, to_sample
from mqttlb.stack.config import find_binary

pytestmark = [pytest.mark.hivemq, pytest.mark.live]

REPO = Path(__file__).resolve().parents[1]
CE_FIXTURE = REPO / "tests" / "fixtures" / "hivemq" / "ce-2025.5-metrics.txt"
SERVER_REFERENCE = "mqtt-b.example:1883"
EVICT_MAX_PER_SECOND = 20
EVICT_MAX_CLIENTS = 40
# Series of the adapter's mapping that only HiveMQ Enterprise registers (CE 2025.5 has neither).
ENTERPRISE_ONLY = {"queued", "overload_level"}
HELP = re.compile(r"^Generated from Dropwizard metric import \(metric=(?P<name>[^,]+), type=(?P<type>[^)]+)\)$")
QUANTILES = {"0.5", "0.75", "0.95", "0.98", "0.99", "0.999"}
QUANTILE = re.compile(r'quantile="([^"]+)"')
T = TypeVar("T")


@pytest.fixture(scope="module")
def nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Node]]:
    tmp = tmp_path_factory.mktemp("hivemq")
    evicting = [
        "--server-reference",
        SERVER_REFERENCE,
        "--evict-max-per-second",
        str(EVICT_MAX_PER_SECOND),
        "--evict-max-clients",
        str(EVICT_MAX_CLIENTS),
        "--load-window-seconds",
        "2",
    ]
    with running_nodes(tmp, [evicting, [], []]) as started:
        yield started


# --- MQTT clients ----------------------------------------------------------------------------
@dataclass
class Seen:
    """What one client saw: connect, disconnect (monotonic time, reason code, Server Reference), messages."""

    connected: threading.Event = field(default_factory=threading.Event)
    disconnected: threading.Event = field(default_factory=threading.Event)
    disconnect_at: float = 0.0
    reason_code: int | None = None
    server_reference: str | None = None
    messages: list[bytes] = field(default_factory=list)


def connect(
    node: Node, client_id: str, protocol: mqtt.MQTTProtocolVersion = mqtt.MQTTv5, session_expiry: int = 0
) -> tuple[mqtt.Client, Seen]:
    """A connected paho client with its loop running; it does not reconnect after a disconnect."""
    seen = Seen()
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=protocol)

    def on_disconnect(c: mqtt.Client, _u: Any, _f: Any, reason: Any, properties: Any) -> None:
        seen.disconnect_at = time.monotonic()
        seen.reason_code = reason.value
        seen.server_reference = getattr(properties, "ServerReference", None)
        seen.disconnected.set()
        c.loop_stop()  # from the loop thread: ends the loop without a reconnect

    client.on_connect = lambda *_: seen.connected.set()
    client.on_disconnect = on_disconnect
    client.on_message = lambda _c, _u, msg: seen.messages.append(bytes(msg.payload))
    if protocol == mqtt.MQTTv5:
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = session_expiry
        client.connect("127.0.0.1", node.mqtt_port, keepalive=30, clean_start=True, properties=props)
    else:
        client.connect("127.0.0.1", node.mqtt_port, keepalive=30)
    client.loop_start()
    assert seen.connected.wait(10), f"{client_id} did not connect to {node.name}"
    return client, seen


def close(clients: list[mqtt.Client]) -> None:
    for client in clients:
        client.disconnect()
        client.loop_stop()


def listed(node: Node) -> dict[str, dict[str, Any]]:
    answer = requests.get(node.api("clients"), headers=auth(), timeout=5)
    assert answer.status_code == 200, answer.text
    return {row["clientId"]: row for row in answer.json()["clients"]}


def wait_for(get: Callable[[], T], accept: Callable[[T], bool], timeout: float, what: str) -> T:
    """The first value of ``get()`` that ``accept`` takes, polled until ``timeout`` s (AssertionError then)."""
    last: list[T] = []

    def check() -> bool:
        last[:] = [get()]
        return accept(last[0])

    wait_until(check, timeout, what)
    return last[0]


def wait_listed(node: Node, ids: set[str]) -> dict[str, dict[str, Any]]:
    """The client list once every id in ``ids`` is in it (lifecycle events arrive asynchronously)."""
    return wait_for(lambda: listed(node), lambda rows: ids <= rows.keys(), 10, f"clients {sorted(ids)}")


def evict(node: Node, body: dict[str, Any], token: str = TOKEN) -> requests.Response:
    return requests.post(node.api("evict"), json=body, headers=auth(token), timeout=60)


def scrape(node: Node) -> str:
    answer = requests.get(node.metrics_url, timeout=5)
    assert answer.status_code == 200
    return answer.text


def sample(text: str, name: str) -> float:
    return next(s.value for f in text_string_to_metric_families(text) for s in f.samples if s.name == name)


# --- MQTT --------------------------------------------------------------------------------------
def test_qos1_publish_reaches_a_subscriber(nodes: list[Node]) -> None:
    node = nodes[1]
    subscriber, seen = connect(node, "sub-1")
    publisher, _ = connect(node, "pub-1", protocol=mqtt.MQTTv311)
    try:
        subscriber.subscribe("mqttlb/test/qos1", qos=1)
        wait_until(lambda: sample(scrape(node), "com_hivemq_subscriptions_overall_current") >= 1, 10, "subscription")
        for i in range(20):
            publisher.publish("mqttlb/test/qos1", f"m{i}".encode(), qos=1).wait_for_publish(5)
        wait_until(lambda: len(seen.messages) == 20, 10, "20 messages at the subscriber")
        assert sorted(seen.messages) == sorted(f"m{i}".encode() for i in range(20))
    finally:
        close([subscriber, publisher])


# --- /metrics ----------------------------------------------------------------------------------
def expected_by_rule(dropwizard_name: str, dropwizard_type: str) -> tuple[str, str, str]:
    """(kind, Prometheus type, family name) by hivemq-prometheus-extension's rule (simpleclient_dropwizard)."""
    name = re.sub(r"[^a-zA-Z0-9:_]", "_", dropwizard_name)
    kinds = {
        "com.codahale.metrics.Counter": ("counter", "gauge", name),
        "com.codahale.metrics.Meter": ("meter", "counter", name + "_total"),
        "com.codahale.metrics.Histogram": ("histogram", "summary", name),
        "com.codahale.metrics.Timer": ("timer", "summary", name),
    }
    return kinds.get(dropwizard_type, ("gauge", "gauge", name))


def families(text: str) -> dict[str, dict[str, Any]]:
    """Per family in the text: its HELP, TYPE and sample lines (name, labels text)."""
    found: dict[str, dict[str, Any]] = {}
    current = ""
    for line in text.splitlines():
        if line.startswith("# HELP ") or line.startswith("# TYPE "):
            _, key, current, rest = line.split(" ", 3)
            found.setdefault(current, {"samples": []})[key] = rest
        elif line:
            found[current]["samples"].append(line.split(" ")[0])  # samples follow their family's lines
    return found


def test_every_metric_kind_follows_the_official_naming_rule(nodes: list[Node]) -> None:
    kinds_seen = set()
    for family, parts in families(scrape(nodes[0])).items():
        match = HELP.match(parts["HELP"])
        assert match, f"{family}: HELP is not the DropwizardExports text: {parts['HELP']}"
        kind, prom_type, name = expected_by_rule(match["name"], match["type"])
        kinds_seen.add(kind)
        assert (family, parts["TYPE"]) == (name, prom_type), f"{match['name']} ({match['type']})"
        if prom_type == "summary":
            quantiles = {q for s in parts["samples"] for q in QUANTILE.findall(s)}
            assert quantiles == QUANTILES and f"{name}_count" in parts["samples"], family
        else:
            assert parts["samples"] == [name], family
    assert kinds_seen == {"gauge", "counter", "meter", "histogram", "timer"}


def test_promtool_finds_nothing_but_the_suffixes_of_hivemq_s_own_names(nodes: list[Node]) -> None:
    """promtool parses the text without error; its lint notes are exactly the `_count`/`_total`
    suffixes that HiveMQ's own Dropwizard names give gauges under the official rule."""
    promtool = find_binary("promtool")
    assert promtool, "promtool is not installed (Debian package prometheus)"
    text = scrape(nodes[0])
    result = subprocess.run([promtool, "check", "metrics"], input=text.encode(), capture_output=True, timeout=30)
    assert result.returncode in (0, 3), result.stderr.decode()  # 1 would be a parse error
    notes = set((result.stdout + result.stderr).decode().strip().splitlines())
    predicted = set()
    for name, parts in families(text).items():
        if parts["TYPE"] != "counter" and name.endswith("_total"):
            predicted.add(f'{name} non-counter metrics should not have "_total" suffix')
        if parts["TYPE"] not in ("summary", "histogram") and name.endswith("_count"):
            predicted.add(f'{name} non-histogram and non-summary metrics should not have "_count" suffix')
    assert notes == predicted
    assert all(n.startswith("com_hivemq_") for n in notes), "the extension's own metrics are lint-clean"


def names_and_types(text: str) -> set[tuple[str, str]]:
    return {(name, parts["TYPE"]) for name, parts in families(text).items()}


def test_the_committed_ce_fixture_has_the_live_names_and_types(nodes: list[Node]) -> None:
    assert names_and_types(CE_FIXTURE.read_text()) == names_and_types(scrape(nodes[0]))


def test_the_adapter_maps_every_series_of_a_live_ce_node_but_the_enterprise_only_ones(nodes: list[Node]) -> None:
    values = parse_values(scrape(nodes[2]))
    missing = {f for f, series in DIRECT.items() if series not in values}
    assert missing == ENTERPRISE_ONLY
    assert {CPU_USER_MS, CPU_KERNEL_MS} <= values.keys()
    mapped = to_sample(values)
    assert mapped.cpu_seconds is not None and mapped.cpu_seconds > 0
    assert mapped.resident_memory_bytes is not None and mapped.resident_memory_bytes > 50e6


def broker_exporter_config(tmp: Path, nodes: list[Node], port: int) -> Path:
    config = {
        "listen": f"127.0.0.1:{port}",
        "cluster": "hivemq-live",
        "nodes": [
            {
                "name": n.name,
                "kind": "hivemq",
                "address": f"127.0.0.1:{n.mqtt_port}",
                "cpu_cores": 1,
                "metrics_url": n.metrics_url,
            }
            for n in nodes
        ],
    }
    path = tmp / "broker-exporter.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def exported(url: str) -> dict[str, dict[str, tuple[str, float]]]:
    """series name -> node -> (family type, value), from the broker exporter's /metrics."""
    out: dict[str, dict[str, tuple[str, float]]] = {}
    for family in text_string_to_metric_families(requests.get(url, timeout=5).text):
        for s in family.samples:
            if "node" in s.labels:
                out.setdefault(s.name, {})[s.labels["node"]] = (family.type, s.value)
    return out


def test_broker_exporter_reads_every_live_node(nodes: list[Node], tmp_path: Path) -> None:
    clients = [connect(n, f"exp-{n.name}-{i}")[0] for n in nodes for i in range(2)]
    port = free_port()
    argv = [
        sys.executable,
        "-m",
        "mqttlb.exporters.broker_cli",
        "--config",
        str(broker_exporter_config(tmp_path, nodes, port)),
    ]
    try:
        with process(argv, tmp_path / "broker-exporter.log"):
            url = f"http://127.0.0.1:{port}/metrics"
            series = wait_for(
                lambda: exported(url),
                lambda s: all(s.get(contract.BROKER_CLIENTS_CONNECTED, {}).get(n.name, ("", 0))[1] >= 2 for n in nodes),
                20,
                "clients_connected >= 2 on every node",
            )
    finally:
        close(clients)
    assert {n: v for n, (_, v) in series[contract.BROKER_UP].items()} == {n.name: 1.0 for n in nodes}
    for field_name, name, _help, is_counter in SAMPLE_METRICS:
        if field_name in DIRECT and field_name not in ENTERPRISE_ONLY or field_name == "cpu_seconds":
            family = name.removesuffix("_total") if is_counter else name
            per_node = series.get(name, {})
            assert per_node.keys() == {n.name for n in nodes}, f"{name}: {per_node}"
            assert {t for t, _ in per_node.values()} == {"counter" if is_counter else "gauge"}, family


# --- eviction ----------------------------------------------------------------------------------
def test_clients_reports_protocol_persistence_and_inbound_load(nodes: list[Node]) -> None:
    node = nodes[0]
    pub5, _ = connect(node, "load-5")
    pub3, _ = connect(node, "load-3", protocol=mqtt.MQTTv311)
    keeper, _ = connect(node, "load-keep", session_expiry=300)
    try:
        for i in range(50):
            pub5.publish("mqttlb/load", b"x" * 100, qos=1).wait_for_publish(5)
            if i < 10:
                pub3.publish("mqttlb/load", b"y" * 7, qos=1).wait_for_publish(5)
        rows = wait_for(lambda: listed(node), lambda r: r.get("load-5", {}).get("messagesIn") == 50, 10, "50 counted")
        assert (rows["load-5"]["bytesIn"], rows["load-3"]["messagesIn"], rows["load-3"]["bytesIn"]) == (5000, 10, 70)
        assert [rows[c]["protocol"] for c in ("load-5", "load-3", "load-keep")] == [5, 4, 5]
        assert [rows[c]["persistent"] for c in ("load-5", "load-3", "load-keep")] == [False, False, True]
        assert rows["load-keep"]["messagesIn"] == 0 and rows["load-keep"]["connectedSeconds"] > 0
        wait_until(lambda: listed(node)["load-5"]["messagesInPerSecond"] > 0, 5, "a rate after a tick")
        assert requests.get(node.api("clients"), timeout=5).status_code == 401
        limits = requests.get(node.api("clients"), headers=auth(), timeout=5).json()["limits"]
        assert limits == {
            "maxPerSecond": EVICT_MAX_PER_SECOND,
            "maxClients": EVICT_MAX_CLIENTS,
            "maxSeconds": 60,
            "loadWindowSeconds": 2,
        }
    finally:
        close([pub5, pub3, keeper])


def test_eviction_moves_clients_at_the_bounded_rate_with_use_another_server(nodes: list[Node]) -> None:
    node, rate, count = nodes[0], 10, 12
    moving = [connect(node, f"mv-{i}") for i in range(count)]
    keeper, keeper_seen = connect(node, "mv-keep", session_expiry=300)
    try:
        ids = [f"mv-{i}" for i in range(count)]
        wait_listed(node, {*ids, "mv-keep"})
        before = sample(scrape(node), "mqttlb_hivemq_evict_clients_total")
        answer = evict(node, {"clients": [*ids, ids[0]], "maxPerSecond": rate})  # a duplicate counts once
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert (body["evicted"], body["unknown"], body["refused"]) == (ids, [], [])
        for _, seen in moving:
            assert seen.disconnected.wait(5)
            assert (seen.reason_code, seen.server_reference) == (0x9C, SERVER_REFERENCE)
        times = sorted(seen.disconnect_at for _, seen in moving)
        for k in range(1, count):  # any k+1 disconnects span at least k / rate (100 ms of receive jitter)
            assert min(b - a for a, b in zip(times, times[k:], strict=False)) >= k / rate - 0.1
        assert not keeper_seen.disconnected.is_set()
        assert sample(scrape(node), "mqttlb_hivemq_evict_clients_total") == before + count
        assert set(listed(node)) & set(ids) == set()
    finally:
        close([c for c, _ in moving] + [keeper])


def test_a_command_naming_an_unknown_or_persistent_client_disconnects_nobody(nodes: list[Node]) -> None:
    node = nodes[0]
    plain, plain_seen = connect(node, "wo-plain")
    keeper, keeper_seen = connect(node, "wo-keep", session_expiry=300)
    try:
        wait_listed(node, {"wo-plain", "wo-keep"})
        answer = evict(node, {"clients": ["wo-plain", "wo-keep", "ghost"], "maxPerSecond": 5})
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert (body["evicted"], body["unknown"], body["refused"]) == ([], ["ghost"], ["wo-keep"])
        assert body["reason"].startswith("nothing done")
        time.sleep(0.5)
        assert not plain_seen.disconnected.is_set() and not keeper_seen.disconnected.is_set()
        assert {"wo-plain", "wo-keep"} <= listed(node).keys()
    finally:
        close([plain, keeper])


def test_persistent_and_mqtt3_clients_are_evicted_on_request(nodes: list[Node]) -> None:
    node = nodes[0]
    keeper, keeper_seen = connect(node, "pm-keep", session_expiry=300)
    old, old_seen = connect(node, "pm-311", protocol=mqtt.MQTTv311)
    try:
        wait_listed(node, {"pm-keep", "pm-311"})
        body = {
            "clients": ["pm-keep", "pm-311"],
            "maxPerSecond": 5,
            "allowPersistent": True,
            "reasonCode": 0x9D,
            "serverReference": "mqtt-c.example:1883",
        }
        answer = evict(node, body)
        assert answer.json()["evicted"] == ["pm-keep", "pm-311"], answer.text
        assert keeper_seen.disconnected.wait(5) and old_seen.disconnected.wait(5)
        assert (keeper_seen.reason_code, keeper_seen.server_reference) == (0x9D, "mqtt-c.example:1883")
    finally:
        close([keeper, old])


REFUSED: list[tuple[dict[str, Any], int, str]] = [
    ({"clients": ["bad-0"], "maxPerSecond": EVICT_MAX_PER_SECOND + 1}, 422, "over the bound"),
    ({"clients": [f"bad-{i}" for i in range(EVICT_MAX_CLIENTS + 1)], "maxPerSecond": 5}, 422, "over the bound"),
    ({"clients": [f"bad-{i}" for i in range(EVICT_MAX_CLIENTS)], "maxPerSecond": 0.5}, 422, "clients / maxPerSecond"),
    ({"clients": ["bad-0"], "maxPerSecond": 5, "reasonCode": 0x8B}, 400, "reasonCode"),
    ({"clients": ["bad-0"], "maxPerSecond": "5"}, 400, "maxPerSecond"),
    ({"clients": "bad-0", "maxPerSecond": 5}, 400, "clients"),
    ({"clients": ["bad-0", ""], "maxPerSecond": 5}, 400, "non-empty"),
    ({"clients": [], "maxPerSecond": 5}, 400, "non-empty list"),
    ({"clients": ["bad-0"], "maxPerSecond": 5, "extra": 1}, 400, "unknown field: extra"),
    ({"clients": ["bad-0"]}, 400, "maxPerSecond"),
]


def test_refused_commands_change_nothing(nodes: list[Node]) -> None:
    node = nodes[0]
    client, seen = connect(node, "bad-0")
    try:
        wait_listed(node, {"bad-0"})
        refused_before = sample(scrape(node), "mqttlb_hivemq_http_refused_total")
        for body, status, text in REFUSED:
            answer = evict(node, body)
            assert (answer.status_code, answer.headers["Content-Type"]) == (status, "application/json"), body
            assert text in answer.json()["error"], answer.text
        assert evict(node, {"clients": ["bad-0"], "maxPerSecond": 5}, token="wrong").status_code == 401
        raw = requests.post(node.api("evict"), data=b"{not json", headers=auth(), timeout=5)
        assert raw.status_code == 400 and "malformed JSON" in raw.json()["error"]
        assert requests.get(node.api("evict"), headers=auth(), timeout=5).status_code == 405
        time.sleep(0.5)
        assert not seen.disconnected.is_set() and "bad-0" in listed(node)
        assert sample(scrape(node), "mqttlb_hivemq_http_refused_total") == refused_before + len(REFUSED) + 3
    finally:
        close([client])


def test_a_second_command_while_one_runs_is_refused(nodes: list[Node]) -> None:
    node = nodes[0]
    slow = [connect(node, f"slow-{i}") for i in range(4)]
    try:
        wait_listed(node, {f"slow-{i}" for i in range(4)})
        first: list[requests.Response] = []
        runner = threading.Thread(
            target=lambda: first.append(evict(node, {"clients": [f"slow-{i}" for i in range(3)], "maxPerSecond": 2}))
        )
        runner.start()
        wait_until(lambda: slow[0][1].disconnected.is_set(), 5, "first command under way")
        second = evict(node, {"clients": ["slow-3"], "maxPerSecond": 2})
        runner.join(10)
        assert second.status_code == 409 and "another eviction" in second.json()["error"]
        assert first[0].json()["evicted"] == ["slow-0", "slow-1", "slow-2"]
        assert not slow[3][1].disconnected.is_set()
    finally:
        close([c for c, _ in slow])


# --- the webhook's adapter (mqttlb.brokers.hivemq) ------------------------------------------------
def test_adapter_lists_the_clients_and_says_sessions_are_not_shared(nodes: list[Node]) -> None:
    node = nodes[0]
    plain, _ = connect(node, "ad-plain")
    keeper, _ = connect(node, "ad-keep", session_expiry=300)
    old, _ = connect(node, "ad-311", protocol=mqtt.MQTTv311)
    try:
        wait_listed(node, {"ad-plain", "ad-keep", "ad-311"})
        with HivemqEvictionAdapter(node.base, token=TOKEN, timeout=5) as adapter:
            listing = adapter.list_clients()
            assert listing.shared_sessions is False and adapter.shared_sessions is False
            assert listing.limits.max_per_second == EVICT_MAX_PER_SECOND
            assert listing.limits.max_clients == EVICT_MAX_CLIENTS
            rows = {c.client_id: c for c in adapter.clients()}
        assert [(rows[c].protocol, rows[c].persistent) for c in ("ad-plain", "ad-keep", "ad-311")] == [
            (5, False),
            (5, True),
            (4, False),
        ]
        assert all(rows[c].connected_seconds >= 0 and rows[c].messages_in_per_s >= 0 for c in rows)
    finally:
        close([plain, keeper, old])


def test_adapter_evicts_at_the_rate_with_the_reason_code_and_reports_the_rest(nodes: list[Node]) -> None:
    node, rate = nodes[0], 5
    moving = [connect(node, f"ad-mv-{i}") for i in range(4)]
    keeper, keeper_seen = connect(node, "ad-mv-keep", session_expiry=300)
    ids = [f"ad-mv-{i}" for i in range(4)]
    try:
        wait_listed(node, {*ids, "ad-mv-keep"})
        with HivemqEvictionAdapter(node.base, token=TOKEN, timeout=5) as adapter:
            nothing = adapter.evict([*ids, "ad-mv-keep", "ghost"], max_per_second=rate)
            assert (nothing.evicted, nothing.unknown, nothing.refused) == ((), ("ghost",), ("ad-mv-keep",))
            assert nothing.reason.startswith("nothing done")
            started = time.monotonic()
            done = adapter.evict(ids, max_per_second=rate, reason_code=0x9D, server_reference="mqtt-z.example:1883")
            took = time.monotonic() - started
        assert (done.evicted, done.unknown, done.refused) == (tuple(ids), (), ())
        assert took >= (len(ids) - 1) / rate - 0.1
        for _, seen in moving:
            assert seen.disconnected.wait(5)
            assert (seen.reason_code, seen.server_reference) == (0x9D, "mqtt-z.example:1883")
        assert not keeper_seen.disconnected.is_set()
    finally:
        close([c for c, _ in moving] + [keeper])


def test_adapter_failures_are_one_line_eviction_errors(nodes: list[Node]) -> None:
    node = nodes[0]
    cases: list[tuple[HivemqEvictionAdapter, Callable[[HivemqEvictionAdapter], object], str]] = [
        (HivemqEvictionAdapter(node.base, token="wrong", timeout=5), lambda a: a.clients(), "refused with 401"),
        (
            HivemqEvictionAdapter(node.base, token=TOKEN, timeout=5),
            lambda a: a.evict(["x"], max_per_second=EVICT_MAX_PER_SECOND + 1),
            "refused with 422: maxPerSecond",
        ),
        (
            HivemqEvictionAdapter(node.base, token=TOKEN, timeout=5),
            lambda a: a.evict(["x"], max_per_second=5, reason_code=0x8B),
            "refused with 400",
        ),
        (
            HivemqEvictionAdapter(f"http://127.0.0.1:{free_port()}", token=TOKEN, timeout=2),
            lambda a: a.clients(),
            "cannot reach the mqttlb extension",
        ),
    ]
    for adapter, call, text in cases:
        with adapter, pytest.raises(EvictionError) as caught:
            call(adapter)
        message = str(caught.value)
        assert text in message and "\n" not in message and message.startswith(f"HiveMQ at {adapter.base_url}: ")


# --- availability ------------------------------------------------------------------------------
def drain(node: Node, body: Any, token: str = TOKEN) -> requests.Response:
    return requests.post(node.api("availability"), json=body, headers=auth(token), timeout=5)


def availability(node: Node) -> tuple[int, bool]:
    answer = requests.get(node.api("availability"), timeout=5)
    return answer.status_code, answer.json()["draining"]


def test_availability_is_200_accepting_and_503_draining(nodes: list[Node]) -> None:
    node = nodes[1]
    assert availability(node) == (200, False)
    assert drain(node, {"draining": True}, token="wrong").status_code == 401
    assert drain(node, {"draining": "yes"}).status_code == 400
    assert drain(node, {}).status_code == 400
    assert availability(node) == (200, False)
    assert drain(node, {"draining": True}).json() == {"draining": True, "changed": True}
    assert availability(node) == (503, True)
    assert sample(scrape(node), "mqttlb_hivemq_draining") == 1
    assert drain(node, {"draining": True}).json() == {"draining": True, "changed": False}
    assert drain(node, {"draining": False}).json() == {"draining": False, "changed": True}
    assert availability(node) == (200, False) and sample(scrape(node), "mqttlb_hivemq_draining") == 0


# --- the launcher -------------------------------------------------------------------------------
def test_launcher_refuses_bad_arguments_with_status_2_and_starts_nothing(tmp_path: Path) -> None:
    ensure_built()
    token, empty, node = tmp_path / "token", tmp_path / "empty-token", tmp_path / "n"
    token.write_text(TOKEN)
    empty.write_text("  \n")
    cases = [
        (node_command(1883, 0, node, tmp_path / "missing"), f"error: {tmp_path / 'missing'}"),
        (node_command(1883, 0, node, empty), "error: token file"),
        (node_command(0, 0, node, token), "error: mqtt port must be 1..65535"),
        (node_command(1883, 0, node, token, "--persistence", "disk"), "error: persistence must be in-memory or file"),
        (node_command(1883, 0, node, token, "--bind", "<x/>"), "error: bind must be an address"),
        (node_command(1883, 0, node, token, "--evict-max-per-second", "0"), "error: evict max per second"),
        (node_command(1883, 0, node, token, "--metric-path", "/mqttlb/v1/m"), "error: metric path"),
        (node_command(1883, 0, node, token, "--mqtt-port", "x"), "Invalid value for option '--mqtt-port'"),
    ]
    for argv, text in cases:
        result = subprocess.run(argv, capture_output=True, timeout=60)
        assert result.returncode == 2 and text in result.stderr.decode(), (argv, result.stderr.decode())
    assert not node.exists()


@pytest.mark.parametrize("taken", ["mqtt", "http"])
def test_launcher_exits_1_when_a_port_is_taken(nodes: list[Node], tmp_path: Path, taken: str) -> None:
    token = tmp_path / "token"
    token.write_text(TOKEN)
    mqtt_port = nodes[0].mqtt_port if taken == "mqtt" else free_port()
    http_port = nodes[0].http_port if taken == "http" else free_port()
    result = subprocess.run(
        node_command(mqtt_port, http_port, tmp_path / "clash", token), capture_output=True, timeout=120
    )
    assert result.returncode == 1, result.stdout.decode()[-2000:]
    assert "start failed" in result.stderr.decode()


# --- figures -----------------------------------------------------------------------------------
def test_figures_memory_start_and_scrape_time(nodes: list[Node]) -> None:
    """Prints the figures the README quotes; bounds catch a regression, not a slow machine."""
    for node in nodes:
        timings = []
        for _ in range(20):
            started = time.perf_counter()
            scrape(node)
            timings.append(time.perf_counter() - started)
        rss = node.rss_bytes()
        print(
            f"\n[figures] {node.name}: RSS {rss / 2**20:.0f} MiB, start {node.start_seconds:.1f} s "
            f"(launcher {node.launcher_start_ms} ms), /metrics median {statistics.median(timings) * 1000:.1f} ms "
            f"max {max(timings) * 1000:.1f} ms"
        )
        assert rss < 600 * 2**20 and node.start_seconds < 60 and statistics.median(timings) < 0.5
