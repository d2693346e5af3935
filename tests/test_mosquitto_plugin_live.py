"""The Mosquitto eviction plugin (brokers/mosquitto-plugin) in a real Debian Mosquitto, driven through
the adapter (mqttlb.brokers.mosquitto) and through raw MQTT for the inputs the adapter never sends.

Every broker runs on a free loopback port with the plugin as `make install` built it; every client
and publishing loop is bounded in count and time.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from stackutil import loopback_topology, process, wait_until

from mqttlb import contract
from mqttlb.brokers.eviction import REASON_USE_ANOTHER_SERVER, EvictionError
from mqttlb.brokers.mosquitto import CONTROL_TOPIC, RESPONSE_TOPIC, MosquittoEvictionAdapter
from mqttlb.brokers.mosquitto_plugin import PLUGIN_ENV, PluginMissingError, PluginOptions, config_lines
from mqttlb.loadgen.standalone import StandaloneBroker, mosquitto_binary, port_accepts, standalone_mosquitto
from mqttlb.stack.render import mosquitto_config

pytestmark = pytest.mark.live

HOST = "127.0.0.1"
BOUNDS = PluginOptions(max_per_second=20, max_clients=5)


@contextlib.contextmanager
def broker(options: PluginOptions = BOUNDS) -> Iterator[StandaloneBroker]:
    with standalone_mosquitto(extra_config=config_lines(options)) as b:
        yield b


@dataclass
class Client:
    """A paho client on its own network thread that records its disconnects (time, reason code)."""

    client_id: str
    mqttc: mqtt.Client
    disconnects: list[tuple[float, int, Any]] = field(default_factory=list)
    answers: list[dict[str, Any]] = field(default_factory=list)

    def publish(self, count: int, rate: float, payload: bytes) -> None:
        """``count`` QoS 0 messages at ``rate``/s (paced to a schedule), stopping at a disconnect."""
        start = time.monotonic()
        for i in range(count):
            if self.disconnects:
                return
            time.sleep(max(0.0, start + i / rate - time.monotonic()))
            self.mqttc.publish(f"load/{self.client_id}", payload)

    def command(self, payload: str | bytes, timeout: float = 5.0) -> list[dict[str, Any]]:
        """Publish ``payload`` to the control topic and return the next answer's responses."""
        before = len(self.answers)
        self.mqttc.publish(CONTROL_TOPIC, payload, qos=1)
        wait_until(lambda: len(self.answers) > before, timeout, "the plugin's answer")
        return list(self.answers[before]["responses"])


@contextlib.contextmanager
def clients(port: int, *specs: tuple[str, dict[str, Any]]) -> Iterator[dict[str, Client]]:
    """Connected clients by id; spec kwargs: protocol (4 or 5), clean (bool), expiry (MQTT 5 s), username."""
    made: dict[str, Client] = {}
    try:
        for client_id, spec in specs:
            protocol = mqtt.MQTTv5 if spec.get("protocol") == 5 else mqtt.MQTTv311
            clean = spec.get("clean", True)
            extra = {} if protocol == mqtt.MQTTv5 else {"clean_session": clean}
            mqttc = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=protocol, **extra)
            if spec.get("username"):
                mqttc.username_pw_set(spec["username"])
            mqttc.reconnect_delay_set(60, 120)  # an evicted client stays away for the test
            client = Client(client_id, mqttc)

            def on_disconnect(c: Any, u: Any, flags: Any, rc: Any, props: Any, client: Client = client) -> None:
                client.disconnects.append((time.monotonic(), rc.value, props))

            def on_message(c: Any, u: Any, msg: mqtt.MQTTMessage, client: Client = client) -> None:
                if msg.topic == RESPONSE_TOPIC:
                    client.answers.append(json.loads(msg.payload))

            mqttc.on_disconnect = on_disconnect
            mqttc.on_message = on_message
            connect: dict[str, Any] = {}
            if protocol == mqtt.MQTTv5:
                props = mqtt.Properties(mqtt.PacketTypes.CONNECT)
                props.SessionExpiryInterval = spec.get("expiry", 0)
                connect = {"clean_start": clean, "properties": props}
            mqttc.connect(HOST, port, keepalive=30, **connect)
            mqttc.loop_start()
            made[client_id] = client
        wait_until(lambda: all(c.mqttc.is_connected() for c in made.values()), 5, "clients connected")
        yield made
    finally:
        for client in made.values():
            client.mqttc.disconnect()
            client.mqttc.loop_stop()


def publish_all(group: dict[str, Client], count: int = 6, rate: float = 20.0, payload: bytes = b"x" * 10) -> None:
    """Every client of ``group`` publishes ``count`` messages at ``rate``/s, in parallel; bounded."""
    threads = [threading.Thread(target=c.publish, args=(count, rate, payload)) for c in group.values()]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)


def tracked(adapter: MosquittoEvictionAdapter, ids: set[str]) -> bool:
    return ids <= {c.client_id for c in adapter.clients()}


# ------------------------------------------------------------------------------------------ load
def test_list_clients_shows_each_publishers_rate_and_bytes_and_counters_start_at_zero() -> None:
    targets = {"slow": (5.0, 200), "medium": (20.0, 50), "fast": (40.0, 1000)}  # msg/s, payload bytes
    with broker() as b, clients(b.port, *[(cid, {}) for cid in targets]) as group, \
            MosquittoEvictionAdapter(HOST, b.port) as adapter:
        threads = [
            threading.Thread(target=group[cid].publish, args=(int(rate * 5), rate, b"p" * size))
            for cid, (rate, size) in targets.items()
        ]
        for t in threads:
            t.start()
        time.sleep(4.0)
        listing = adapter.list_clients()
        for t in threads:
            t.join(timeout=10)

    loads = {c.client_id: c for c in listing.clients}
    assert set(loads) == set(targets)
    for cid, (rate, size) in targets.items():
        load = loads[cid]
        assert load.messages_in_per_s == pytest.approx(rate, rel=0.2), cid
        assert load.bytes_in_per_s == pytest.approx(rate * size, rel=0.2), cid
        assert (load.persistent, load.protocol) == (False, 4)
        assert 2.5 < load.connected_seconds < 6
    counters = listing.counters
    assert (counters.evicted_total, counters.refused_total, counters.unknown_total) == (0, 0, 0)
    assert (counters.unauthorised_total, counters.errors_total, counters.evictions_pending) == (0, 0, 0)
    assert (listing.limits.max_per_second, listing.limits.max_clients) == (20, 5)


def test_a_client_that_disconnects_is_dropped() -> None:
    with broker() as b, MosquittoEvictionAdapter(HOST, b.port) as adapter, \
            clients(b.port, ("leaves", {}), ("stays", {})) as group:
        publish_all(group, count=3)
        wait_until(lambda: tracked(adapter, {"leaves", "stays"}), 5, "both tracked")
        group["leaves"].mqttc.disconnect()
        wait_until(lambda: {c.client_id for c in adapter.clients()} == {"stays"}, 5, "'leaves' dropped")


# ------------------------------------------------------------------------------------------ evict
def test_evict_is_spread_at_max_per_second_and_mqtt5_clients_see_use_another_server() -> None:
    rate = 4.0
    specs: list[tuple[str, dict[str, Any]]] = [(f"v3-{i}", {}) for i in range(3)]
    specs += [(f"v5-{i}", {"protocol": 5}) for i in range(2)]
    options = replace(BOUNDS, mqtt5_clean_start_transient=True)
    with broker(options) as b, clients(b.port, *specs, ("bystander", {})) as group, \
            MosquittoEvictionAdapter(HOST, b.port, timeout=5) as adapter:
        publish_all(group, count=3)
        victims = [cid for cid, _ in specs]
        wait_until(lambda: tracked(adapter, set(victims)), 5, "victims tracked")
        started = time.monotonic()
        result = adapter.evict(victims, max_per_second=rate, server_reference="127.0.0.1:1884")
        took = time.monotonic() - started
        wait_until(lambda: all(group[v].disconnects for v in victims), 5, "every victim disconnected")
        listing = adapter.list_clients()
        bystander_stayed = not group["bystander"].disconnects

    assert (set(result.evicted), result.unknown, result.refused) == (set(victims), (), ())
    assert "0x9C" in result.reason
    assert took >= (len(victims) - 1) / rate
    times = sorted(group[v].disconnects[0][0] for v in victims)
    assert times[-1] - times[0] >= (len(victims) - 1) / rate - 0.15  # client-side jitter only
    assert all(times[i + 1] - times[i] >= 1 / rate - 0.15 for i in range(len(times) - 1))
    for v in ("v5-0", "v5-1"):
        (_, code, props) = group[v].disconnects[0]
        assert code == REASON_USE_ANOTHER_SERVER
        assert props.ServerReference == "127.0.0.1:1884"
    assert bystander_stayed and {c.client_id for c in listing.clients} == {"bystander"}
    assert (listing.counters.evicted_total, listing.counters.evictions_pending) == (len(victims), 0)


@pytest.mark.parametrize(
    ("specs", "says", "never"),
    [
        ([("v3-a", {}), ("v3-b", {})], "MQTT 3 clients only: connections closed, no reason code", "0x"),
        ([("v5-a", {"protocol": 5})], "MQTT 5 reason code 0x9C", "MQTT 3"),
        ([("v3", {}), ("v5", {"protocol": 5})], "1 MQTT 5 client sent reason code 0x9C, 1 MQTT 3 client closed", ""),
    ],
    ids=["mqtt3-only", "mqtt5-only", "mixed"],
)
def test_the_answer_names_the_reason_code_only_for_the_mqtt5_clients(
    specs: list[tuple[str, dict[str, Any]]], says: str, never: str
) -> None:
    """Trial: a batch of MQTT 3 clients was answered "MQTT 5 reason code 0x9C", which none of them got."""
    options = replace(BOUNDS, mqtt5_clean_start_transient=True)
    with broker(options) as b, clients(b.port, *specs) as group, \
            MosquittoEvictionAdapter(HOST, b.port, timeout=5) as adapter:
        publish_all(group, count=2)
        victims = [cid for cid, _ in specs]
        wait_until(lambda: tracked(adapter, set(victims)), 5, "victims tracked")
        result = adapter.evict(victims, max_per_second=20)
    assert set(result.evicted) == set(victims)
    assert says in result.reason, result.reason
    assert not never or never not in result.reason, result.reason


def test_persistent_sessions_move_only_with_the_opt_in() -> None:
    specs: list[tuple[str, dict[str, Any]]] = [("sticky-v3", {"clean": False}), ("v5-clean-start", {"protocol": 5}),
             ("v5-resume", {"protocol": 5, "clean": False, "expiry": 300})]
    with broker() as b, clients(b.port, *specs) as group, MosquittoEvictionAdapter(HOST, b.port) as adapter:
        publish_all(group, count=3)
        ids = [cid for cid, _ in specs]
        wait_until(lambda: tracked(adapter, set(ids)), 5, "tracked")
        persistent = {c.client_id: c.persistent for c in adapter.clients()}
        refused = adapter.evict(ids, max_per_second=10)
        time.sleep(0.3)
        untouched = not any(c.disconnects for c in group.values())
        moved = adapter.evict(ids, max_per_second=10, allow_persistent=True)

    # MQTT 5 session expiry is invisible to 2.0 plugins: every MQTT 5 client counts as persistent by default.
    assert persistent == {"sticky-v3": True, "v5-clean-start": True, "v5-resume": True}
    assert (refused.evicted, set(refused.refused), refused.unknown) == ((), set(ids), ())
    assert "nothing done" in refused.reason and untouched
    assert set(moved.evicted) == set(ids)


def test_mqtt5_clean_start_counts_as_transient_when_the_operator_says_so() -> None:
    options = replace(BOUNDS, mqtt5_clean_start_transient=True)
    with broker(options) as b, clients(b.port, ("fresh", {"protocol": 5}),
                                       ("resume", {"protocol": 5, "clean": False, "expiry": 60})) as group, \
            MosquittoEvictionAdapter(HOST, b.port) as adapter:
        publish_all(group, count=3)
        wait_until(lambda: tracked(adapter, {"fresh", "resume"}), 5, "tracked")
        assert {c.client_id: c.persistent for c in adapter.clients()} == {"fresh": False, "resume": True}


# ------------------------------------------------------------------------------------------ bad input
BAD_COMMANDS: list[tuple[str, str | bytes, str]] = [
    ("not JSON", b"{nope", "not valid JSON"),
    ("binary", b"\xff\xfe\x00", "not valid JSON"),
    ("no commands", '{"command": "listClients"}', "commands"),
    ("empty commands", '{"commands": []}', "commands"),
    ("too many commands", json.dumps({"commands": [{"command": "listClients"}] * 9}), "more than 8"),
    ("command not an object", '{"commands": [42]}', "must be an object"),
    ("no command name", '{"commands": [{"clients": ["a"]}]}', "must be an object"),
    ("unknown command", '{"commands": [{"command": "kickAll"}]}', "unknown command"),
    ("correlation not a string", '{"commands": [{"command": "listClients", "correlationData": 7}]}', "string"),
]


def _evict(**fields: Any) -> str:
    return json.dumps({"commands": [{"command": "evict", "correlationData": "c1", **fields}]})


BAD_EVICTS: list[tuple[str, str | bytes, str]] = [
    ("clients missing", _evict(maxPerSecond=1), "clients must be an array"),
    ("clients empty", _evict(clients=[], maxPerSecond=1), "must not be empty"),
    ("client id not a string", _evict(clients=["p0", 3], maxPerSecond=1), "non-empty string"),
    ("client id empty", _evict(clients=[""], maxPerSecond=1), "non-empty string"),
    ("client twice", _evict(clients=["p0", "p0"], maxPerSecond=1), "twice"),
    ("above max clients", _evict(clients=[f"p{i}" for i in range(6)], maxPerSecond=1), "above the bound of 5"),
    ("rate missing", _evict(clients=["p0"]), "maxPerSecond"),
    ("rate zero", _evict(clients=["p0"], maxPerSecond=0), "maxPerSecond"),
    ("rate negative", _evict(clients=["p0"], maxPerSecond=-3), "maxPerSecond"),
    ("rate a string", _evict(clients=["p0"], maxPerSecond="5"), "maxPerSecond"),
    ("rate above bound", _evict(clients=["p0"], maxPerSecond=21), "above the bound of 20"),
    ("reason code", _evict(clients=["p0"], maxPerSecond=1, reasonCode=0), "reasonCode"),
    ("server reference", _evict(clients=["p0"], maxPerSecond=1, serverReference="x" * 256), "serverReference"),
    ("allowPersistent", _evict(clients=["p0"], maxPerSecond=1, allowPersistent="yes"), "allowPersistent"),
    ("unknown client", _evict(clients=["p0", "ghost"], maxPerSecond=1), "1 unknown"),
    ("the control client", _evict(clients=["p0", "ops-ctl"], maxPerSecond=1), "1 refused"),
]
CONTROL = PluginOptions(control_client_id="ops-ctl", control_username="ops", max_per_second=20, max_clients=5)


@pytest.fixture(scope="module")
def node() -> Iterator[tuple[StandaloneBroker, dict[str, Client]]]:
    """One broker (control client ops-ctl / user ops), three tracked publishers and the control client."""
    with broker(CONTROL) as b, clients(b.port, *[(f"p{i}", {}) for i in range(3)]) as group:
        publish_all(group, count=3)
        with clients(b.port, ("ops-ctl", {"username": "ops"})) as ctl:
            ctl["ops-ctl"].mqttc.publish("load/ctl", b"x")  # tracked, so "refused" (not "unknown") below
            yield b, {**group, **ctl}


def _list(ctl: Client) -> dict[str, Any]:
    return ctl.command(json.dumps({"commands": [{"command": "listClients"}]}))[0]


def _assert_unchanged(group: dict[str, Client], ctl: Client, publishers: set[str]) -> dict[str, Any]:
    """No publisher was disconnected, all are still tracked, nothing was ever evicted; the listing."""
    time.sleep(0.3)  # a wrongly accepted batch would start on the next tick (<= 0.1 s)
    assert not any(c.disconnects for c in group.values())
    listing = _list(ctl)
    assert {c["clientId"] for c in listing["clients"]} >= publishers
    assert listing["counters"]["evictedTotal"] == 0
    return listing


@pytest.mark.parametrize(("case", "payload", "error"), BAD_COMMANDS + BAD_EVICTS,
                         ids=[c[0] for c in BAD_COMMANDS + BAD_EVICTS])
def test_bad_input_gets_an_error_answer_and_changes_nothing(
    node: tuple[StandaloneBroker, dict[str, Client]], case: str, payload: str | bytes, error: str
) -> None:
    _, group = node
    ctl = group["ops-ctl"]
    errors_before = _list(ctl)["counters"]["errorsTotal"]
    responses = ctl.command(payload)
    assert len(responses) >= 1 and all(error in r["error"] for r in responses), responses
    if case in ("unknown client", "the control client"):
        (answer,) = responses
        assert answer["correlationData"] == "c1" and answer["evicted"] == []
        assert (answer["unknown"], answer["refused"]) == ((["ghost"], []) if case == "unknown client"
                                                          else ([], ["ops-ctl"]))
    listing = _assert_unchanged(group, ctl, {"p0", "p1", "p2"})
    assert listing["counters"]["errorsTotal"] == errors_before + len(responses)


def test_a_second_batch_while_one_runs_is_refused_as_busy() -> None:
    ctl_id = contract.EVICTION_CONTROL_CLIENT_ID
    with broker() as b, clients(b.port, ("slow-a", {}), ("slow-b", {}), ("p0", {}), (ctl_id, {})) as group:
        publish_all({k: v for k, v in group.items() if k != ctl_id}, count=3)
        ctl = group[ctl_id]
        wait_until(lambda: {"slow-a", "slow-b", "p0"} <= {c["clientId"] for c in _list(ctl)["clients"]}, 5, "tracked")
        before = len(ctl.answers)
        ctl.mqttc.publish(CONTROL_TOPIC, _evict(clients=["slow-a", "slow-b"], maxPerSecond=1), qos=1)
        time.sleep(0.3)
        (busy,) = ctl.command(_evict(clients=["p0"], maxPerSecond=5))
        assert busy["error"].startswith("busy: a batch is in progress") and busy["correlationData"] == "c1"
        assert _list(ctl)["counters"]["evictionsPending"] == 1
        wait_until(lambda: any(a["responses"][0].get("evicted") for a in ctl.answers[before:]), 5, "batch done")
        assert all(group[v].disconnects for v in ("slow-a", "slow-b"))
        time.sleep(0.3)
        assert not group["p0"].disconnects and not ctl.disconnects
        assert _list(ctl)["counters"]["evictedTotal"] == 2


def test_a_client_with_another_id_is_not_authorised(node: tuple[StandaloneBroker, dict[str, Client]]) -> None:
    b, group = node
    with clients(b.port, ("intruder", {"username": "ops"})) as other:
        responses = other["intruder"].command(_evict(clients=["p0", "p1"], maxPerSecond=5))
        listing_attempt = other["intruder"].command(json.dumps({"commands": [{"command": "listClients"}]}))
    refusal = {"command": "", "error": "not authorised: commands are accepted from the control client only"}
    assert responses == listing_attempt == [refusal]
    assert _assert_unchanged(group, group["ops-ctl"], {"p0", "p1", "p2"})["counters"]["unauthorisedTotal"] >= 2


@pytest.mark.parametrize("username", [None, "someone"])
def test_the_control_client_id_without_the_username_is_not_authorised(username: str | None) -> None:
    with broker(CONTROL) as b, clients(b.port, ("p0", {}), ("ops-ctl", {"username": username})) as group:
        publish_all({"p0": group["p0"]}, count=3)
        responses = group["ops-ctl"].command(_evict(clients=["p0"], maxPerSecond=5))
        assert responses[0]["error"].startswith("not authorised")
        time.sleep(0.3)
        assert not group["p0"].disconnects
        with MosquittoEvictionAdapter(HOST, b.port, client_id="intruder") as intruder, \
                pytest.raises(EvictionError, match="not authorised"):
            intruder.clients()


# ------------------------------------------------------------------------------------------ adapter
def test_the_adapter_reports_unknown_ids_bounds_and_an_empty_request() -> None:
    with broker() as b, clients(b.port, ("p0", {})) as group, MosquittoEvictionAdapter(HOST, b.port) as adapter:
        publish_all(group, count=3)
        wait_until(lambda: tracked(adapter, {"p0"}), 5, "tracked")
        unknown = adapter.evict(["p0", "ghost"], max_per_second=5)
        with pytest.raises(EvictionError, match="above the bound of 20"):
            adapter.evict(["p0"], max_per_second=50)
        with pytest.raises(EvictionError, match="above the bound of 5"):
            adapter.evict([f"c{i}" for i in range(6)], max_per_second=5)
        empty = adapter.evict([], max_per_second=5)
        time.sleep(0.3)
        assert not group["p0"].disconnects
    assert (unknown.evicted, unknown.unknown, unknown.refused) == ((), ("ghost",), ())
    assert "nothing done" in unknown.reason
    assert (empty.evicted, empty.unknown, empty.refused) == ((), (), ())


def test_the_adapter_fails_fast_without_a_broker_and_times_out_without_the_plugin() -> None:
    with standalone_mosquitto() as plain:
        port = plain.port
        with MosquittoEvictionAdapter(HOST, port, timeout=1.0) as adapter:
            started = time.monotonic()
            with pytest.raises(EvictionError, match="no answer to listClients within 1 s"):
                adapter.clients()
            assert time.monotonic() - started < 3
    wait_until(lambda: not port_accepts(port), 5, "broker gone")
    with pytest.raises(EvictionError, match="cannot connect"):
        MosquittoEvictionAdapter(HOST, port, timeout=1.0).connect()


def test_a_broker_lost_during_a_batch_fails_the_wait() -> None:
    with broker() as b, clients(b.port, ("a", {}), ("b", {}), ("c", {})) as group, \
            MosquittoEvictionAdapter(HOST, b.port, timeout=2.0) as adapter:
        publish_all(group, count=3)
        wait_until(lambda: tracked(adapter, {"a", "b", "c"}), 5, "tracked")
        threading.Timer(0.5, os.kill, (b.pid, signal.SIGTERM)).start()
        started = time.monotonic()
        with pytest.raises(EvictionError, match="lost"):
            adapter.evict(["a", "b", "c"], max_per_second=0.5)  # would take 4 s
        assert time.monotonic() - started < 3


# ------------------------------------------------------------------------------------------ stack
def test_the_stacks_node_config_loads_the_plugin_for_the_stacks_control_client(tmp_path: Path) -> None:
    topo = loopback_topology(tmp_path / "state", nodes=1)
    (node,) = topo.nodes
    conf = topo.state.mosquitto_conf(node.name)
    conf.parent.mkdir(parents=True, exist_ok=True)
    (topo.state.mosquitto_dir(node.name) / "data").mkdir(parents=True, exist_ok=True)
    text = mosquitto_config(topo, node)
    assert f"plugin_opt_control_client_id {contract.EVICTION_CONTROL_CLIENT_ID}" in text
    conf.write_text(text)
    with process([mosquitto_binary(), "-c", str(conf)], tmp_path / "mosquitto.log"):
        wait_until(lambda: port_accepts(node.port), 10, "the node")
        with MosquittoEvictionAdapter(node.host, node.port) as adapter:
            listing = adapter.list_clients()
    assert listing.clients == () and listing.counters.evicted_total == 0


def test_a_missing_plugin_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(PLUGIN_ENV, str(tmp_path / "absent.so"))
    with pytest.raises(PluginMissingError, match=f"absent.so \\(environment variable {PLUGIN_ENV}\\) is not a file"):
        config_lines()


@pytest.mark.parametrize(("change", "message"), [
    (lambda lines: [ln for ln in lines if "control_client_id" not in ln], "control_client_id is required"),
    (lambda lines: [*lines, "plugin_opt_max_per_second fast"], "plugin_opt_max_per_second must be a number"),
    (lambda lines: [*lines, "plugin_opt_max_clients 0"], "plugin_opt_max_clients must be a number"),
    (lambda lines: [*lines, "plugin_opt_evict_everyone true"], "unknown or invalid option plugin_opt_evict_everyone"),
], ids=["no control client", "rate not a number", "max clients 0", "unknown option"])
def test_a_misconfigured_plugin_stops_the_broker(change: Any, message: str, tmp_path: Path) -> None:
    conf = tmp_path / "mosquitto.conf"
    # "user root": as root Mosquitto would drop to its own user, which cannot read the plugin in a 0700 checkout.
    conf.write_text("\n".join(["listener 0 127.0.0.1", "log_dest stdout", "user root", *change(config_lines())]) + "\n")
    result = subprocess.run([mosquitto_binary(), "-c", str(conf)], capture_output=True, text=True, timeout=20)
    assert result.returncode != 0
    assert message in result.stdout + result.stderr
