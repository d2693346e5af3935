"""mqttlb.envoy_admin: the parser on answers recorded from Envoy 1.40, and the client against a
local stub of the admin API (real HTTP, same paths, query strings and answer shapes)."""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from stackutil import StubHandler, serve_stub

from mqttlb.envoy_admin import (
    STATS_FILTER,
    EnvoyAdminClient,
    EnvoyAdminError,
    EnvoyParseError,
    circuit_breaker_key,
    health_of,
    host_port,
    listeners,
    parse_clusters,
    parse_stats,
)
from mqttlb.exporters.http_fetch import FetchError
from mqttlb.webhook.eds import Endpoint

FIXTURES = Path(__file__).parent / "fixtures" / "envoy"
CLUSTERS_JSON = (FIXTURES / "clusters.json").read_text()
STATS_JSON = (FIXTURES / "stats.json").read_text()


# --- parsing ------------------------------------------------------------------------------------
def test_envoy_recorded_clusters_fixture() -> None:
    (cluster,) = parse_clusters(CLUSTERS_JSON)
    assert cluster.name == "mqtt_brokers" and cluster.max_connections == {"default": 10, "high": 1024}
    by_node = cluster.by_node()
    assert by_node["node1"].endpoint == "127.0.0.1:28831"
    assert (by_node["node1"].host, by_node["node1"].port) == ("127.0.0.1", 28831)
    assert (by_node["node1"].cx_active, by_node["node1"].cx_total, by_node["node1"].weight) == (3, 5, 100)
    assert by_node["node2"].health == "draining" and by_node["node2"].weight == 50
    assert by_node["node2"].cx_total == 0  # zero stats have no "value" key
    assert by_node["node3"].cx_connect_fail == 5
    assert parse_clusters(CLUSTERS_JSON, only=frozenset({"other"})) == []


def test_ipv6_endpoints_are_labelled_in_brackets() -> None:
    # Recorded from Envoy 1.40 with a static IPv6 endpoint; Envoy's own text /clusters names that
    # host "mqtt_brokers::[2001:db8::2]:18832::...".  Without brackets the label would read as the
    # single address 2001:db8::2:18832.
    (cluster,) = parse_clusters((FIXTURES / "clusters_ipv6.json").read_text())
    by_node = cluster.by_node()
    assert by_node["node2"].endpoint == "[2001:db8::2]:18832"
    assert (by_node["node2"].host, by_node["node2"].port) == ("2001:db8::2", 18832)
    assert by_node["node1"].endpoint == "127.0.0.1:18831"
    assert host_port("::1", 1883) == "[::1]:1883" and host_port("broker-1", 1883) == "broker-1:1883"
    assert Endpoint("node2", "2001:db8::2", 18832, 100).address == "[2001:db8::2]:18832"


def test_envoy_stats_and_listeners() -> None:
    stats = parse_stats(STATS_JSON)
    assert stats["cluster.mqtt_brokers.upstream_cx_rx_bytes_total"] == 20
    found = {item.listener: item for item in listeners(stats)}
    assert set(found) == {"127.0.0.1_21883", "admin"}  # per-worker stats are folded away
    assert (found["127.0.0.1_21883"].cx_active, found["127.0.0.1_21883"].cx_total) == (3, 10)


def test_envoy_listener_overflow_counts_the_global_connection_cap_too() -> None:
    stats = {
        "listener.127.0.0.1_1883.downstream_cx_overflow": 2,
        "listener.127.0.0.1_1883.downstream_global_cx_overflow": 5,
        "listener.127.0.0.1_1883.downstream_cx_active": 9872,
    }
    (item,) = listeners(stats)
    assert (item.cx_active, item.cx_overflow) == (9872, 7)
    assert re.fullmatch(STATS_FILTER, "listener.127.0.0.1_1883.downstream_global_cx_overflow")


def test_envoy_health_precedence() -> None:
    assert health_of({"eds_health_status": "HEALTHY"}) == "healthy"
    assert health_of({"eds_health_status": "DRAINING"}) == "draining"
    assert health_of({"eds_health_status": "DRAINING", "failed_active_health_check": True}) == "unhealthy"
    assert health_of({"eds_health_status": "TIMEOUT"}) == "unhealthy"
    assert health_of({"eds_health_status": "DEGRADED"}) == "degraded"
    assert health_of({}) == "healthy"


@pytest.mark.parametrize(
    "text",
    [
        "{",
        "[]",
        '{"cluster_statuses": [{"host_statuses": []}]}',
        '{"cluster_statuses": [{"name": "c", "host_statuses": [{"address": '
        '{"socket_address": {"address": "a", "port_value": "x"}}}]}]}',
    ],
)
def test_envoy_malformed_clusters(text: str) -> None:
    with pytest.raises(EnvoyParseError):
        parse_clusters(text)


def test_envoy_synthetic_1000_endpoints() -> None:
    (cluster,) = parse_clusters((FIXTURES / "clusters_1000.json").read_text())
    assert len(cluster.endpoints) == 1000 and len({e.endpoint for e in cluster.endpoints}) == 1000
    counts = {s: sum(e.health == s for e in cluster.endpoints) for s in ("healthy", "draining", "unhealthy")}
    assert counts["draining"] > 0 and counts["unhealthy"] > 0 and counts["healthy"] > 800


# --- client -------------------------------------------------------------------------------------
class StubAdmin:
    """The admin paths mqttlb uses, answering as Envoy 1.40 does (recorded /clusters and /stats;
    /stats honours ``filter``; /runtime_modify changes what /runtime reports)."""

    def __init__(self) -> None:
        self.clusters = CLUSTERS_JSON
        self.stats = json.loads(STATS_JSON)["stats"] + [
            {"name": "cluster.mqtt_brokers.upstream_cx_active", "value": 3}
        ]
        self.runtime: dict[str, str] = {}
        self.fail_with: int | None = None
        stub = self

        class Handler(StubHandler):
            def do_GET(self) -> None:  # noqa: N802
                url = urlsplit(self.path)
                query = parse_qs(url.query)
                if stub.fail_with is not None:
                    self.answer(stub.fail_with, "envoy overloaded")
                elif url.path == "/clusters" and query.get("format") == ["json"]:
                    self.answer(200, stub.clusters)
                elif url.path == "/stats" and query.get("format") == ["json"]:
                    pattern = re.compile(query.get("filter", [""])[0])
                    self.answer(200, json.dumps({"stats": [s for s in stub.stats if pattern.search(s["name"])]}))
                elif url.path == "/runtime":
                    entries = {k: {"final_value": v, "layer_values": ["", v]} for k, v in stub.runtime.items()}
                    self.answer(200, json.dumps({"layers": ["static", "admin"], "entries": entries}))
                else:
                    self.answer(404, "invalid path")

            def do_POST(self) -> None:  # noqa: N802
                url = urlsplit(self.path)
                if url.path != "/runtime_modify":
                    self.answer(404, "invalid path")
                    return
                for key, values in parse_qs(url.query, keep_blank_values=True).items():
                    if values[0]:
                        stub.runtime[key] = values[0]
                    else:
                        stub.runtime.pop(key, None)
                self.answer(200, "OK\n")

        self.server = serve_stub(Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"


@pytest.fixture
def stub() -> Iterator[StubAdmin]:
    admin = StubAdmin()
    try:
        yield admin
    finally:
        admin.server.shutdown()
        admin.server.server_close()


def test_client_reads_clusters_and_stats(stub: StubAdmin) -> None:
    client = EnvoyAdminClient(stub.url, timeout=2)
    assert [c.name for c in client.clusters()] == ["mqtt_brokers"]
    assert client.cluster("mqtt_brokers").by_node()["node2"].weight == 50
    with pytest.raises(EnvoyAdminError, match="no cluster 'other'"):
        client.cluster("other")
    stats = client.stats(STATS_FILTER)
    assert stats["cluster.mqtt_brokers.upstream_cx_tx_bytes_total"] == 219
    assert "cluster.mqtt_brokers.upstream_cx_active" not in stats  # the filter reached Envoy
    assert client.active_connections("mqtt_brokers") == 3
    with pytest.raises(EnvoyAdminError, match="unknown cluster 'other'"):
        client.active_connections("other")


def test_client_runtime_circuit_breaker_round_trip(stub: StubAdmin) -> None:
    client = EnvoyAdminClient(stub.url, timeout=2)
    key = circuit_breaker_key("mqtt_brokers")
    assert key == "circuit_breakers.mqtt_brokers.default.max_connections"
    assert client.runtime_value(key) is None
    client.set_max_connections("mqtt_brokers", 6)
    assert client.runtime_value(key) == "6" and stub.runtime == {key: "6"}
    client.set_max_connections("mqtt_brokers", None)  # empty value: the override is removed
    assert client.runtime_value(key) is None and stub.runtime == {}


def test_client_waits_for_published_weights(stub: StubAdmin) -> None:
    client = EnvoyAdminClient(stub.url, timeout=2)
    hosts, verified = client.wait_for_weights("mqtt_brokers", {"node1": 100, "node2": 50}, timeout=0.5)
    assert verified and hosts["node1"].weight == 100
    start = time.monotonic()
    hosts, verified = client.wait_for_weights("mqtt_brokers", {"node1": 7}, timeout=0.3, interval=0.05)
    assert not verified and hosts["node1"].weight == 100 and 0.3 <= time.monotonic() - start < 1.5
    reweighted = CLUSTERS_JSON.replace('"weight": 100', '"weight": 7')
    threading.Timer(0.2, lambda: setattr(stub, "clusters", reweighted)).start()
    hosts, verified = client.wait_for_weights("mqtt_brokers", {"node1": 7}, timeout=3, interval=0.05)
    assert verified and hosts["node1"].weight == 7


def test_client_errors_are_one_type(stub: StubAdmin) -> None:
    client = EnvoyAdminClient(stub.url, timeout=2)
    stub.fail_with = 503
    with pytest.raises(EnvoyAdminError, match="HTTP 503"):
        client.clusters()
    stub.fail_with = None
    stub.clusters = '{"cluster_statuses": {}}'
    with pytest.raises(EnvoyParseError, match="no cluster_statuses list"):
        client.clusters()
    with pytest.raises(EnvoyAdminError, match="HTTP 404"):
        EnvoyAdminClient(stub.url + "/nope", timeout=2).set_max_connections("mqtt_brokers", 1)
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()  # nothing listens there now
    with pytest.raises(EnvoyAdminError, match="ConnectionError"):
        EnvoyAdminClient(f"http://127.0.0.1:{port}", timeout=1).clusters()


def test_client_is_bounded_by_its_timeout_on_a_silent_admin() -> None:
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(4)  # completes TCP handshakes, never answers
    try:
        client = EnvoyAdminClient(f"http://127.0.0.1:{silent.getsockname()[1]}", timeout=0.4)
        for call in (client.clusters, lambda: client.set_max_connections("c", 1)):
            start = time.monotonic()
            with pytest.raises(EnvoyAdminError, match="timed out|no answer within"):
                call()
            assert time.monotonic() - start < 1.5
    finally:
        silent.close()


def test_client_fetch_can_be_replaced() -> None:
    seen: list[tuple[str, float]] = []

    def fetch(url: str, timeout: float) -> str:
        seen.append((url, timeout))
        if "/stats" in url:
            raise FetchError(f"GET {url}: HTTP 500")
        return CLUSTERS_JSON

    client = EnvoyAdminClient("http://envoy:9901/", timeout=1.5, fetch=fetch)
    assert len(client.cluster("mqtt_brokers").endpoints) == 3
    with pytest.raises(EnvoyAdminError, match="HTTP 500"):
        client.stats("^x$")
    assert seen == [
        ("http://envoy:9901/clusters?format=json", 1.5),
        ("http://envoy:9901/stats?format=json&filter=%5Ex%24", 1.5),
    ]
