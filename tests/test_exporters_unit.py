"""Unit tests of the exporters on recorded fixtures and in-process fakes (no external processes
except promtool, which lints the rendered output)."""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from stackutil import StubHandler, serve_stub

from mqttlb import contract
from mqttlb.exporters import broker_cli, envoy_cli
from mqttlb.exporters.broker_collector import SAMPLE_METRICS, BrokerCollector, NodeEntry
from mqttlb.exporters.broker_config import BrokerExporterConfigError, load_config, parse_config
from mqttlb.exporters.envoy_collector import EnvoyCollector
from mqttlb.exporters.hivemq_adapter import HiveMQAdapter
from mqttlb.exporters.hivemq_mapping import HiveMQParseError, parse_values, to_sample
from mqttlb.exporters.http_fetch import FetchError, fetch_text
from mqttlb.exporters.mosquitto_sys import SysReading, SysTree, classify_log_line
from mqttlb.exporters.node_adapter import BrokerSample, NodeAdapter
from mqttlb.exporters.scrape_errors import BROKER_REASONS, ENVOY_REASONS, ScrapeErrorReason

FIXTURES = Path(__file__).parent / "fixtures"
HIVEMQ_TEXT = (FIXTURES / "hivemq" / "metrics.txt").read_text()
CLUSTERS_JSON = (FIXTURES / "envoy" / "clusters.json").read_text()
STATS_JSON = (FIXTURES / "envoy" / "stats.json").read_text()


# --- helpers --------------------------------------------------------------------------------
def scrape(collector: object) -> dict[str, list[tuple[dict[str, str], float]]]:
    registry = CollectorRegistry()
    registry.register(collector)  # type: ignore[arg-type]
    text = generate_latest(registry).decode()
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, []).append((sample.labels, sample.value))
    return out


def render(collector: object) -> str:
    registry = CollectorRegistry()
    registry.register(collector)  # type: ignore[arg-type]
    return generate_latest(registry).decode()


def value(samples: dict, name: str, **labels: str) -> float:
    matches = [v for lab, v in samples.get(name, []) if all(lab.get(k) == x for k, x in labels.items())]
    assert len(matches) == 1, f"{name}{labels}: {matches}"
    return matches[0]


def promtool_check(text: str) -> subprocess.CompletedProcess:
    promtool = shutil.which("promtool")
    assert promtool, "promtool must be installed"
    return subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30
    )


class FakeAdapter:
    """In-memory NodeAdapter fed with samples (also used by the bench)."""

    def __init__(
        self,
        name: str,
        sample: BrokerSample,
        kind: str = "fake",
        blocking: bool = False,
        delay: float = 0.0,
        raises: bool = False,
    ) -> None:
        self.name, self.kind, self.address = name, kind, f"127.0.0.1:{1000 + len(name)}"
        self.blocking, self.sample, self.delay, self.raises = blocking, sample, delay, raises

    def start(self) -> None:
        pass

    def close(self) -> None:
        pass

    def snapshot(self, timeout: float) -> BrokerSample:
        if self.raises:
            raise RuntimeError("boom")
        if self.delay:
            time.sleep(self.delay)
        return self.sample


FULL = BrokerSample(
    up=True,
    clients_connected=10,
    connects=20,
    disconnects=10,
    messages_received=300,
    messages_sent=400,
    publish_received=100,
    publish_sent=200,
    publish_dropped=1,
    bytes_received=5000,
    bytes_sent=6000,
    subscriptions=7,
    retained=3,
    queued=2,
    cpu_seconds=12.5,
    resident_memory_bytes=1e7,
    overload_level=1,
    sample_age_seconds=0.5,
)


@pytest.fixture()
def http_server() -> Iterator[callable]:
    """Serves fixed bodies on 127.0.0.1 from a real HTTP server (port chosen by the kernel)."""
    servers: list[http.server.ThreadingHTTPServer] = []

    def start(body: str, status: int = 200) -> str:
        class Handler(StubHandler):
            def do_GET(self) -> None:  # noqa: N802
                self.answer(status, body, "text/plain; version=0.0.4")

        server = serve_stub(Handler)
        servers.append(server)
        return f"http://127.0.0.1:{server.server_port}/metrics"

    try:
        yield start
    finally:
        for server in servers:
            server.shutdown()
            server.server_close()


@pytest.fixture()
def silent_socket() -> Iterator[str]:
    """A listening socket that completes TCP handshakes but never answers."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        sock.close()


# --- config ---------------------------------------------------------------------------------
VALID = {
    "listen": "127.0.0.1:9641",
    "cluster": "local",
    "scrape_timeout_seconds": 2,
    "nodes": [
        {
            "name": "node1",
            "kind": "mosquitto",
            "address": "127.0.0.1:18831",
            "pid_file": "/tmp/x.pid",
            "cpu_cores": 0.5,
        },
        {
            "name": "hq",
            "kind": "hivemq",
            "address": "10.0.0.5:1883",
            "cpu_cores": 4,
            "metrics_url": "http://10.0.0.5:9399/metrics",
        },
    ],
}


def test_config_accepts_the_documented_shape() -> None:
    config = parse_config(VALID)
    assert [n.name for n in config.nodes] == ["node1", "hq"]
    assert config.sys_interval_for(config.nodes[0]) == 10.0


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda c: c["nodes"][1].pop("metrics_url"), "needs metrics_url"),
        (lambda c: c["nodes"].append(dict(c["nodes"][0])), "appears twice"),
        (lambda c: c["nodes"][0].update(address="localhost"), "expected host:port"),
        (lambda c: c["nodes"][0].update(kind="emqx"), "nodes.0.kind"),
        (lambda c: c["nodes"][0].update(cpu_cores=0), "nodes.0.cpu_cores"),
        (lambda c: c.update(bogus=1), "bogus"),
        (lambda c: c.update(nodes=[]), "nodes"),
        (lambda c: c.update(listen="9641"), "expected host:port"),
        (lambda c: c["nodes"][1].update(metrics_url="ftp://x/metrics"), "http(s) URL"),
    ],
)
def test_config_errors_are_one_clear_line(mutate, expected: str) -> None:
    data = json.loads(json.dumps(VALID))
    mutate(data)
    with pytest.raises(BrokerExporterConfigError) as info:
        parse_config(data, "broker.yaml")
    message = str(info.value)
    assert "\n" not in message and message.startswith("broker.yaml: ") and expected in message


def test_config_file_errors(tmp_path: Path) -> None:
    with pytest.raises(BrokerExporterConfigError, match="cannot read"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("nodes: [unclosed\n")
    with pytest.raises(BrokerExporterConfigError, match="not valid YAML at line 2"):
        load_config(bad)
    bad.write_text("- just a list\n")
    with pytest.raises(BrokerExporterConfigError, match="must be a mapping"):
        load_config(bad)


def test_broker_cli_check_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = tmp_path / "broker.yaml"
    good.write_text(json.dumps(VALID))
    assert broker_cli.main(["--config", str(good), "--check-config"]) == 0
    assert "2 nodes" in capsys.readouterr().out
    bad = tmp_path / "bad.yaml"
    bad.write_text(json.dumps({**VALID, "cluster": "has space"}))
    assert broker_cli.main(["--config", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("broker-exporter: ") and "cluster" in err and "\n" not in err


def test_help_documents_every_flag_and_metric(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        broker_cli.main(["--help"])
    text = capsys.readouterr().out
    for flag in ("--config", "--listen", "--check-config", "--log-level"):
        assert flag in text
    for name in [
        contract.BROKER_UP,
        contract.BROKER_INFO,
        contract.BROKER_CPU_CAPACITY,
        contract.BROKER_SCRAPE_DURATION,
        contract.BROKER_SCRAPE_ERRORS,
        *(m[1] for m in SAMPLE_METRICS),
    ]:
        assert name in text
    with pytest.raises(SystemExit):
        envoy_cli.main(["--help"])
    text = capsys.readouterr().out
    for flag in ("--listen", "--envoy-admin", "--timeout", "--cluster", "--log-level"):
        assert flag in text
    for attr in dir(contract):
        if attr.startswith("ENVOY_") and getattr(contract, attr).startswith("mqttlb_envoy_"):
            assert getattr(contract, attr) in text, attr


def test_envoy_cli_rejects_bad_flags(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (
        ["--timeout", "0"],
        ["--timeout", "x"],
        ["--envoy-admin", "127.0.0.1:9901"],
        ["--listen", "x"],
    ):
        with pytest.raises(SystemExit) as info:
            envoy_cli.main(argv)
        assert info.value.code == 2
    assert "error:" in capsys.readouterr().err


# --- Mosquitto $SYS -------------------------------------------------------------------------
def test_log_lines_seen_on_mosquitto_2_0() -> None:
    assert classify_log_line(
        "1795694014: New client connected from 127.0.0.1:42156 as pub1 (p2, c1, k60)."
    ) == ("connect", "pub1")
    assert classify_log_line(
        "1795694014: New client connected from 127.0.0.1:1 as a b (p2, c1, k60, u'x')."
    ) == ("connect", "a b")
    assert classify_log_line("1795694014: Client pub1 disconnected.") == ("disconnect", "pub1")
    assert classify_log_line("1795694015: Client rawc closed its connection.") == ("disconnect", "rawc")
    assert classify_log_line("1795694017: Client kac has exceeded timeout, disconnecting.") == (
        "disconnect",
        "kac",
    )
    assert classify_log_line("Socket error on client x1, disconnecting.") == ("disconnect", "x1")
    assert classify_log_line("1795694014: New connection from 127.0.0.1:42156 on port 28831.") is None
    assert classify_log_line("1: Client <unknown> disconnected due to protocol error.") is None
    assert classify_log_line("1: mosquitto version 2.0.11 running") is None


def read_log(lines: list[bytes], own_client: str = "me") -> SysReading:
    """What a connected ``SysTree`` reads after the broker logged ``lines`` on ``$SYS/broker/log/N``."""
    tree = SysTree(own_client)
    tree.on_connected()
    for line in lines:
        tree.on_message("$SYS/broker/log/N", line, False, 1.0)
    return tree.read()


def test_bridge_connects_count_like_their_disconnects() -> None:
    # A bridge from another broker connecting in, as logged by Mosquitto 2.x (line from the
    # Mosquitto bridge tests' log in eclipse-mosquitto/mosquitto#3493); its session ends with the
    # same "Client X ..." notice as a client's, which was counted while the connect was not.
    log = [
        b"1770827457: New connection from 127.0.0.1:45806 on port 1889.",
        b"1770827457: New bridge connected from 127.0.0.1:45806 as id_remote (p4, c1, k5).",
        b"1770827457: Sending CONNACK to id_remote (0, 0)",
        b"1770827469: Client id_remote closed its connection.",
        b"1770827470: New bridge connected from 127.0.0.1:45812 as id_remote (p4, c1, k5, u'edge').",
        b"1770827490: Client id_remote has exceeded timeout, disconnecting.",
    ]
    reading = read_log(log)
    assert (reading.connects, reading.disconnects) == (2, 2)
    assert classify_log_line(log[1].decode()) == ("connect", "id_remote")


def test_envoy_health_probes_are_not_counted_as_client_churn() -> None:
    probe = contract.HEALTH_CHECK_CLIENT_ID
    log = [
        f"1770827457: New client connected from 127.0.0.1:45806 as {probe} (p2, c1, k60).".encode(),
        f"1770827457: Client {probe} closed its connection.".encode(),
        b"1770827458: New client connected from 127.0.0.1:45810 as real (p2, c1, k60).",
    ]
    reading = read_log(log)
    assert (reading.connects, reading.disconnects) == (1, 0)


@pytest.mark.parametrize(
    ("line", "client"),
    [
        # Mosquitto 1.4.12 (public log excerpt): no port after the address, no p<protocol> field
        ("1515309375: New client connected from 172.17.0.1 as mqtt-client-NWq09wrg (c0, k60).",
         "mqtt-client-NWq09wrg"),
        ("1515309375: New client connected from 127.0.0.1 as c1 (c1, k60, u'user').", "c1"),
        # Mosquitto 1.3 wrote the username without quotes
        ("1403334375: New client connected from 121.201.8.163 as zhoujing (c0, k60, ujoyo).", "zhoujing"),
        ("1403334375: New bridge connected from 10.1.2.3 as gw1.br (c0, k60).", "gw1.br"),
        # Mosquitto 1.6: the p<protocol> field, still no port
        ("1600000000: New client connected from ::1 as sensor 7 (p2, c1, k30).", "sensor 7"),
        # a client id with parentheses still ends where the fields start
        ("1: New client connected from 10.0.0.1:5 as a (c1, k1) (p5, c1, k60).", "a (c1, k1)"),
    ],
)
def test_connect_lines_of_mosquitto_1_x_are_counted(line: str, client: str) -> None:
    assert classify_log_line(line) == ("connect", client)


def test_disconnect_notices_of_mosquitto_2_0_sources() -> None:
    # src/loop.c of Mosquitto 2.0.11: every way a counted session can end
    for text in (
        "Client c9 disconnected due to malformed packet.",
        "Client c9 disconnected, not authorised.",
        "Client c9 disconnected: Connection reset by peer.",
        "Client c9 been disconnected by administrative action.",
        "Bad socket read/write on client c9: The connection was lost.",
    ):
        assert classify_log_line(f"1795694020: {text}") == ("disconnect", "c9"), text
    assert classify_log_line("1795694020: Bad socket read/write on client <unknown>: Unknown error.") is None


def test_sys_tree_counts_and_excludes_own_client() -> None:
    tree = SysTree("me")
    tree.on_connected()
    assert tree.read().last_update is None
    tree.on_message("$SYS/broker/clients/connected", b"0", True, 1.0)  # retained: from before we came
    tree.on_message("$SYS/broker/subscriptions/count", b"4", True, 1.0)
    reading = tree.read()
    assert reading.values["clients_connected"] == 0 and reading.values["subscriptions"] == 4
    assert reading.values["publish_received"] == 0  # never published while 0
    tree.on_message("$SYS/broker/clients/connected", b"3", False, 2.0)  # live: includes us
    tree.on_message("$SYS/broker/subscriptions/count", b"5", False, 2.0)
    tree.on_message(
        "$SYS/broker/log/N", b"5: New client connected from 1.2.3.4:5 as me (p2, c1, k10).", False, 2
    )
    tree.on_message(
        "$SYS/broker/log/N", b"5: New client connected from 1.2.3.4:6 as c1 (p2, c1, k60).", False, 2
    )
    tree.on_message("$SYS/broker/log/N", b"6: Client c1 closed its connection.", False, 2.5)
    tree.on_message("$SYS/broker/bytes/received", b"not-a-number", False, 3.0)
    reading = tree.read()
    assert reading.values["clients_connected"] == 2 and reading.values["subscriptions"] == 4
    assert (reading.connects, reading.disconnects) == (1, 1)
    assert reading.values["bytes_received"] == 0 and reading.last_update == 3.0
    tree.on_disconnected()
    assert not tree.read().connected
    tree.on_connected()  # a restarted broker: old values are gone, counters are ours and stay
    reading = tree.read()
    assert reading.values == {} and (reading.connects, reading.disconnects) == (1, 1)


# --- HiveMQ ---------------------------------------------------------------------------------
def test_hivemq_fixture_maps_into_the_schema() -> None:
    sample = to_sample(parse_values(HIVEMQ_TEXT))
    assert sample.up and sample.error is None
    assert sample.clients_connected == 1204
    assert sample.connects == 5321 and sample.disconnects == 4117
    assert (sample.messages_received, sample.messages_sent) == (80123456, 99876543)
    assert (sample.publish_received, sample.publish_sent, sample.publish_dropped) == (73456789, 91234567, 45)
    assert (sample.bytes_received, sample.bytes_sent) == (18734566123, 20123998877)
    assert (sample.subscriptions, sample.retained, sample.queued) == (2466, 87, 1532)
    assert sample.cpu_seconds == pytest.approx((9876543 + 1234567) / 1000)  # ms -> s
    assert sample.resident_memory_bytes == 2147483648
    assert sample.overload_level == 2


def test_hivemq_cpu_falls_back_to_jvm_nanoseconds() -> None:
    text = "\n".join(line for line in HIVEMQ_TEXT.splitlines() if "time_spent" not in line) + "\n"
    assert to_sample(parse_values(text)).cpu_seconds == pytest.approx(11111.11)


def test_hivemq_community_edition_has_no_overload_level() -> None:
    text = "\n".join(line for line in HIVEMQ_TEXT.splitlines() if "overload_protection" not in line) + "\n"
    assert to_sample(parse_values(text)).overload_level is None


def test_hivemq_malformed_text_is_an_error() -> None:
    with pytest.raises(HiveMQParseError, match="malformed"):
        parse_values((FIXTURES / "hivemq" / "malformed.txt").read_text())
    with pytest.raises(HiveMQParseError, match="no com_hivemq"):
        to_sample(parse_values("# TYPE up gauge\nup 1\n"))


def test_hivemq_adapter_over_http(http_server, silent_socket: str) -> None:
    assert HiveMQAdapter("hq", "h:1883", http_server(HIVEMQ_TEXT)).snapshot(2).clients_connected == 1204
    down = HiveMQAdapter("hq", "h:1883", http_server("oops", status=500)).snapshot(2)
    assert not down.up and "HTTP 500" in (down.error or "")
    down = HiveMQAdapter("hq", "h:1883", http_server("<html>not metrics</html>")).snapshot(2)
    assert not down.up
    start = time.monotonic()
    down = HiveMQAdapter("hq", "h:1883", silent_socket + "/metrics").snapshot(0.5)
    assert not down.up and "timed out" in (down.error or "") and time.monotonic() - start < 2


# --- broker collector -----------------------------------------------------------------------
def test_broker_collector_names_the_cluster_label_as_configured() -> None:
    # The parameter mqtt_cluster_label reaches the exporter as cluster_label; `cluster` (kube-prometheus'
    # Kubernetes cluster) is refused.
    config = parse_config({**VALID, "cluster_label": "broker_fleet"})
    collector = BrokerCollector(config.cluster, [NodeEntry(FakeAdapter("n1", FULL), 1)], 1, config.cluster_label)
    samples = scrape(collector)
    for name in (contract.BROKER_UP, contract.BROKER_INFO, contract.BROKER_CPU_SECONDS, contract.BROKER_SCRAPE_ERRORS):
        labels = [lab for lab, _ in samples[name]]
        assert labels and all(lab.get("broker_fleet") == "local" and "cluster" not in lab for lab in labels)
    assert parse_config(VALID).cluster_label == contract.CLUSTER_LABEL
    with pytest.raises(BrokerExporterConfigError, match="cluster_label: 'cluster' is taken"):
        parse_config({**VALID, "cluster_label": "cluster"})


def test_broker_collector_exports_every_series_with_labels() -> None:
    nodes = [
        NodeEntry(FakeAdapter("n1", FULL), 0.5),
        NodeEntry(FakeAdapter("n2", BrokerSample.down("gone", ScrapeErrorReason.UNREACHABLE)), 2),
    ]
    assert isinstance(nodes[0].adapter, NodeAdapter)
    collector = BrokerCollector("local", nodes, timeout=1)
    samples = scrape(collector)
    for _field, name, _help, _counter in SAMPLE_METRICS:
        assert value(samples, name, mqtt_cluster="local", node="n1") == getattr(FULL, _field)
        assert not [lab for lab, _ in samples[name] if lab["node"] == "n2"]  # down: no stale values
    assert (
        value(samples, contract.BROKER_UP, node="n1") == 1 and value(samples, contract.BROKER_UP, node="n2") == 0
    )
    assert value(samples, contract.BROKER_CPU_CAPACITY, node="n2") == 2
    assert value(samples, contract.BROKER_INFO, node="n1", kind="fake") == 1
    assert value(samples, contract.BROKER_SCRAPE_ERRORS, node="n2", reason="unreachable") == 1
    assert value(samples, contract.BROKER_SCRAPE_ERRORS, node="n1", reason="unreachable") == 0
    samples = scrape(collector)
    assert value(samples, contract.BROKER_SCRAPE_ERRORS, node="n2", reason="unreachable") == 2


def test_broker_collector_bounds_slow_and_broken_adapters() -> None:
    nodes = [
        NodeEntry(FakeAdapter("ok", FULL), 1),
        NodeEntry(FakeAdapter("slow", FULL, blocking=True, delay=3), 1),
        NodeEntry(FakeAdapter("fast-remote", FULL, blocking=True), 1),
        NodeEntry(FakeAdapter("broken", FULL, raises=True), 1),
    ]
    collector = BrokerCollector("local", nodes, timeout=0.5)
    start = time.monotonic()
    samples = scrape(collector)
    assert time.monotonic() - start < 1.5
    ups = {lab["node"]: v for lab, v in samples[contract.BROKER_UP]}
    assert ups == {"ok": 1, "slow": 0, "fast-remote": 1, "broken": 0}
    collector.close()


def test_broker_output_passes_promtool(http_server) -> None:
    nodes = [
        NodeEntry(HiveMQAdapter("hq", "h:1883", http_server(HIVEMQ_TEXT)), 4),
        NodeEntry(FakeAdapter("n1", FULL), 0.5),
    ]
    result = promtool_check(render(BrokerCollector("local", nodes, timeout=2)))
    assert result.returncode == 0 and result.stdout == "" and result.stderr == "", result


# --- Envoy collector (parsing: tests/test_envoy_admin.py) --------------------------------------
def fake_fetch(clusters: str | Exception, stats: str | Exception, delay: float = 0.0):
    def fetch(url: str, timeout: float) -> str:
        if delay:
            time.sleep(delay)
        body = clusters if "/clusters" in url else stats
        if isinstance(body, Exception):
            raise body
        return body

    return fetch


def test_envoy_collector_series() -> None:
    urls: list[str] = []
    fetch = fake_fetch(CLUSTERS_JSON, STATS_JSON)

    def recording(url: str, timeout: float) -> str:
        urls.append(url)
        return fetch(url, timeout)

    collector = EnvoyCollector("http://envoy:9901", 1, fetch=recording)
    samples = scrape(collector)
    ep = {"envoy_cluster_name": "mqtt_brokers", "envoy_endpoint_address": "127.0.0.1:28831", "node": "node1"}
    assert value(samples, contract.ENVOY_ENDPOINT_WEIGHT, **ep) == 100
    assert value(samples, contract.ENVOY_ENDPOINT_WEIGHT, node="node2") == 50
    assert value(samples, contract.ENVOY_ENDPOINT_HEALTH, node="node2", status="draining") == 1
    assert value(samples, contract.ENVOY_ENDPOINT_HEALTH, node="node2", status="healthy") == 0
    assert value(samples, contract.ENVOY_CLUSTER_MAX_CONNECTIONS, priority="default") == 10
    assert value(samples, contract.ENVOY_UP) == 1
    # Only what Envoy does not export (its own series, envoy_*, Prometheus scrapes from Envoy): weight,
    # detailed health, the cap, overload state and the exporter's own health.
    assert not [name for name in samples if name.startswith("envoy_")]
    assert set(samples) <= {
        contract.ENVOY_ENDPOINT_WEIGHT, contract.ENVOY_ENDPOINT_HEALTH, contract.ENVOY_CLUSTER_MAX_CONNECTIONS,
        contract.ENVOY_UP, contract.ENVOY_SCRAPE_ERRORS, contract.ENVOY_SCRAPE_DURATION,
        contract.ENVOY_OVERLOAD_ACTION_ACTIVE, contract.ENVOY_OVERLOAD_PRESSURE,
    }
    stats_urls = [u for u in urls if "/stats" in u]
    assert stats_urls and all("filter=%5Eoverload" in u for u in stats_urls)  # /stats is read for overload only
    assert all(v == 0 for _, v in samples[contract.ENVOY_SCRAPE_ERRORS])
    result = promtool_check(render(collector))
    assert result.returncode == 0 and result.stdout == "" and result.stderr == "", result


def test_envoy_collector_labels_ipv6_endpoints_in_brackets() -> None:
    clusters = (FIXTURES / "envoy" / "clusters_ipv6.json").read_text()  # recorded from Envoy 1.40
    collector = EnvoyCollector("http://[::1]:9901", 1, fetch=fake_fetch(clusters, STATS_JSON))
    samples = scrape(collector)
    assert {lab["envoy_endpoint_address"] for lab, _ in samples[contract.ENVOY_ENDPOINT_WEIGHT]} == {
        "[2001:db8::2]:18832",
        "127.0.0.1:18831",
    }
    collector.close()


def test_envoy_collector_failures() -> None:
    down = EnvoyCollector("http://e:1", 1, fetch=fake_fetch(FetchError("refused"), FetchError("refused")))
    samples = scrape(down)
    assert value(samples, contract.ENVOY_UP) == 0
    assert value(samples, contract.ENVOY_SCRAPE_ERRORS, reason="unreachable") == 1  # one scrape, one reason
    assert contract.ENVOY_ENDPOINT_WEIGHT not in samples
    partial = EnvoyCollector("http://e:1", 1, fetch=fake_fetch(CLUSTERS_JSON, "not json"))
    samples = scrape(partial)
    assert value(samples, contract.ENVOY_UP) == 1
    assert value(samples, contract.ENVOY_SCRAPE_ERRORS, reason="bad_answer") == 1
    assert contract.ENVOY_ENDPOINT_WEIGHT in samples
    slow = EnvoyCollector("http://e:1", 0.3, fetch=fake_fetch(CLUSTERS_JSON, STATS_JSON, delay=2))
    start = time.monotonic()
    assert value(scrape(slow), contract.ENVOY_UP) == 0
    assert time.monotonic() - start < 1.0
    for collector in (down, partial, slow):
        collector.close()


def test_envoy_collector_against_a_silent_admin(silent_socket: str) -> None:
    collector = EnvoyCollector(silent_socket, 0.5)
    start = time.monotonic()
    samples = scrape(collector)
    assert time.monotonic() - start < 1.5 and value(samples, contract.ENVOY_UP) == 0
    collector.close()


# --- exposition (prometheus-client's) ----------------------------------------------------------
OPENMETRICS_ACCEPT = "application/openmetrics-text;version=1.0.0;q=0.5,text/plain;version=0.0.4;q=0.3,*/*;q=0.2"


def test_exposition_negotiates_openmetrics_and_gzip() -> None:
    import gzip

    from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics

    from mqttlb.exporters.exposition import render

    registry = CollectorRegistry()
    registry.register(BrokerCollector("local", [NodeEntry(FakeAdapter("n1", FULL), 1)], timeout=1))
    text = render(registry)
    assert text.content_type.startswith("text/plain; version=0.0.4") and text.content_encoding is None
    assert promtool_check(text.body.decode()).returncode == 0
    openmetrics = render(registry, OPENMETRICS_ACCEPT)
    assert openmetrics.content_type.startswith("application/openmetrics-text")
    assert openmetrics.body.endswith(b"# EOF\n")
    families = {f.name: f for f in parse_openmetrics(openmetrics.body.decode())}
    assert families[contract.BROKER_CONNECTS.removesuffix("_total")].type == "counter"
    compressed = render(registry, OPENMETRICS_ACCEPT, "gzip, deflate")
    assert compressed.content_encoding == "gzip" and compressed.content_type == openmetrics.content_type
    body = gzip.decompress(compressed.body)
    # the same exposition (the scrape duration differs from one scrape to the next)
    assert [line.split(b" ")[0] for line in body.splitlines()] == [
        line.split(b" ")[0] for line in openmetrics.body.splitlines()
    ]
    assert render(registry, None, "identity").content_encoding is None


def test_exporter_http_server_speaks_openmetrics_gzip_to_prometheus() -> None:
    from mqttlb.exporters.exposition import make_server

    registry = CollectorRegistry()
    registry.register(BrokerCollector("local", [NodeEntry(FakeAdapter("n1", FULL), 1)], timeout=1))
    server = make_server(registry, "127.0.0.1", 0, "test")
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        answer = requests.get(
            f"http://127.0.0.1:{server.server_address[1]}/metrics",
            headers={"Accept": OPENMETRICS_ACCEPT, "Accept-Encoding": "gzip"},
            timeout=5,
            stream=True,
        )
        raw = answer.raw.read()  # as sent, before requests would decompress it
        assert answer.headers["Content-Encoding"] == "gzip"
        assert answer.headers["Content-Type"].startswith("application/openmetrics-text")
        assert int(answer.headers["Content-Length"]) == len(raw)
        import gzip

        assert gzip.decompress(raw).endswith(b"# EOF\n")
    finally:
        server.shutdown()
        server.server_close()


def test_exporter_http_server_paths() -> None:
    from mqttlb.exporters.exposition import make_server

    registry = CollectorRegistry()
    registry.register(BrokerCollector("local", [NodeEntry(FakeAdapter("n1", FULL), 1)], timeout=1))
    server = make_server(registry, "127.0.0.1", 0, "test")
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        import requests

        metrics = requests.get(f"{base}/metrics", timeout=5)
        assert metrics.status_code == 200 and metrics.headers["Content-Type"].startswith(
            "text/plain; version=0.0.4"
        )
        assert f'{contract.BROKER_UP}{{mqtt_cluster="local",node="n1"}} 1.0' in metrics.text
        assert requests.get(f"{base}/", timeout=5).status_code == 200
        assert requests.get(f"{base}/nope", timeout=5).status_code == 404
    finally:
        server.shutdown()
        server.server_close()


def test_clis_report_a_busy_listen_address(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    address = f"127.0.0.1:{busy.getsockname()[1]}"
    config = tmp_path / "broker.yaml"
    config.write_text(json.dumps(VALID))
    try:
        assert broker_cli.main(["--config", str(config), "--listen", address]) == 1
        assert envoy_cli.main(["--listen", address]) == 1
    finally:
        busy.close()
    err = capsys.readouterr().err
    assert f"broker-exporter: cannot listen on {address}" in err
    assert f"envoy-exporter: cannot listen on {address}" in err


def test_envoy_collector_follows_endpoint_changes_between_scrapes() -> None:
    bodies = {"clusters": (FIXTURES / "envoy" / "clusters_1000.json").read_text()}
    collector = EnvoyCollector(
        "http://e:1", 2, fetch=lambda url, t: bodies["clusters"] if "/clusters" in url else STATS_JSON
    )
    assert len(scrape(collector)[contract.ENVOY_ENDPOINT_WEIGHT]) == 1000
    bodies["clusters"] = CLUSTERS_JSON.replace('"weight": 100', '"weight": 7')
    samples = scrape(collector)
    assert {lab["node"]: v for lab, v in samples[contract.ENVOY_ENDPOINT_WEIGHT]} == {
        "node1": 7,
        "node2": 50,
        "node3": 7,
    }
    assert len(samples[contract.ENVOY_ENDPOINT_HEALTH]) == 3 * 4
    collector.close()


def test_envoy_overload_manager_series() -> None:
    stats = (FIXTURES / "envoy" / "stats_overload.json").read_text()  # recorded at injected pressure 0.95
    collector = EnvoyCollector("http://e:1", 1, fetch=fake_fetch(CLUSTERS_JSON, stats))
    samples = scrape(collector)
    action = "envoy.overload_actions.reject_incoming_connections"
    assert value(samples, contract.ENVOY_OVERLOAD_ACTION_ACTIVE, action=action) == 1
    resource = "envoy.resource_monitors.injected_resource"
    assert value(samples, contract.ENVOY_OVERLOAD_PRESSURE, resource=resource) == pytest.approx(0.95)
    plain = EnvoyCollector("http://e:1", 1, fetch=fake_fetch(CLUSTERS_JSON, STATS_JSON))
    assert contract.ENVOY_OVERLOAD_ACTION_ACTIVE not in scrape(plain)  # no overload manager configured
    assert f"# TYPE {contract.ENVOY_OVERLOAD_ACTION_ACTIVE}" not in render(plain)
    collector.close()
    plain.close()


def test_process_port_lookup_after_a_miss_waits_instead_of_scanning_every_scrape(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mqttlb.exporters import process_stats

    lookups: list[int] = []

    def missing(port: int) -> int:
        lookups.append(port)
        raise process_stats.ProcessNotFound(f"no process found listening on port {port}")

    monkeypatch.setattr(process_stats, "pid_listening_on", missing)
    now = [100.0]
    locator = process_stats.ProcessLocator(tmp_path / "absent.pid", 18831, clock=lambda: now[0])
    for _ in range(5):  # five scrapes within the retry interval: one scan
        with pytest.raises(process_stats.ProcessNotFound, match="18831"):
            locator.sample()
        now[0] += 1.0
    assert lookups == [18831]
    now[0] += process_stats.PORT_LOOKUP_RETRY_S
    monkeypatch.setattr(process_stats, "pid_listening_on", lambda port: os.getpid())
    sample = locator.sample()  # the retry interval passed: looked up again, and found
    assert sample.pid == os.getpid() and sample.cpu_seconds > 0


# --- fault 7: a target trickling its answer (issue 13) -------------------------------------------
class TrickleServer:
    """A loopback HTTP server that answers every GET with a fixed body per path prefix, either at
    once or (while ``trickling`` is set, for paths starting with one of ``slow``) one byte every
    ``interval`` seconds, from the status line on (``phase="all"``) or after the headers
    (``phase="body"``; with ``length=False`` the body ends only when the connection closes).
    ``open_connections`` counts answers still being sent: a client that gave up is noticed at the
    next byte, so it drops within ``interval``.  Every sending loop is bounded by the answer's
    length and by ``close()``."""

    def __init__(
        self,
        bodies: dict[str, str],
        interval: float = 0.5,
        phase: str = "all",
        length: bool = True,
        slow: tuple[str, ...] = ("/",),
    ) -> None:
        self.bodies, self.interval, self.phase, self.length, self.slow = bodies, interval, phase, length, slow
        self.trickling = threading.Event()
        self.trickling.set()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.open_connections = 0
        self.requests = 0
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:  # noqa: N802
                outer._answer(self)

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_port}"

    def _answer(self, handler: http.server.BaseHTTPRequestHandler) -> None:
        path = handler.path.split("?", 1)[0]
        body = next((b for prefix, b in self.bodies.items() if path.startswith(prefix)), "").encode()
        head = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n"
        if self.length:
            head += f"Content-Length: {len(body)}\r\n"
        wire = head.encode() + b"\r\n" + body
        handler.close_connection = True
        with self._lock:
            self.requests += 1
            self.open_connections += 1
        try:
            if not self.trickling.is_set() or not path.startswith(self.slow):
                handler.wfile.write(wire)
                return
            start = 0 if self.phase == "all" else len(head) + 2
            handler.wfile.write(wire[:start])
            for i in range(start, len(wire)):  # bounded: one byte per interval, at most len(wire)
                if self._stop.wait(self.interval):
                    return
                handler.wfile.write(wire[i : i + 1])
                handler.wfile.flush()
        except OSError:
            return  # the client closed the connection: what a bounded scraper does
        finally:
            with self._lock:
                self.open_connections -= 1

    def close(self) -> None:
        self._stop.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture()
def trickle() -> Iterator[callable]:
    servers: list[TrickleServer] = []

    def start(bodies: dict[str, str], **kwargs: object) -> TrickleServer:
        server = TrickleServer(bodies, **kwargs)  # type: ignore[arg-type]
        servers.append(server)
        return server

    try:
        yield start
    finally:
        for server in servers:
            server.close()


def settle(check: callable, timeout: float = 3.0) -> bool:
    """Poll ``check`` every 50 ms for at most ``timeout`` s; its last value."""
    deadline = time.monotonic() + timeout
    while not check() and time.monotonic() < deadline:
        time.sleep(0.05)
    return bool(check())


@pytest.mark.parametrize(
    ("phase", "length"), [("all", True), ("body", True), ("body", False)], ids=["headers", "body", "until-close"]
)
def test_fetch_has_a_total_deadline_against_a_trickling_target(trickle, phase: str, length: bool) -> None:
    server = trickle({"/": HIVEMQ_TEXT}, phase=phase, length=length)
    start = time.monotonic()
    with pytest.raises(FetchError, match="not complete after 1s") as info:
        fetch_text(server.url + "/metrics", 1.0)
    elapsed = time.monotonic() - start
    print(f"fetch of a trickling target ({phase}, length={length}): {elapsed:.3f}s")
    assert 0.9 <= elapsed < 1.2
    assert info.value.reason is ScrapeErrorReason.TIMEOUT
    assert settle(lambda: server.open_connections == 0), "the fetch did not close its connection"
    server.trickling.clear()
    assert fetch_text(server.url + "/metrics", 1.0) == HIVEMQ_TEXT


def bounded_scrape(collector: object, what: str, bound: float = 1.2) -> dict[str, list[tuple[dict[str, str], float]]]:
    """``scrape(collector)``, asserting that it took less than ``bound`` seconds (printed, as ``what``)."""
    start = time.monotonic()
    samples = scrape(collector)
    elapsed = time.monotonic() - start
    print(f"{what}: {elapsed:.3f}s")
    assert elapsed < bound
    return samples


def broker_threads() -> int:
    return sum(1 for t in threading.enumerate() if t.name.startswith(("node-scrape", "fetch-deadline")))


def test_broker_scrape_is_bounded_by_a_trickling_hivemq_and_recovers_at_once(trickle, http_server) -> None:
    server = trickle({"/metrics": HIVEMQ_TEXT})
    nodes = [
        NodeEntry(HiveMQAdapter("hq-trickle", "h:1883", server.url + "/metrics"), 4),
        NodeEntry(HiveMQAdapter("hq-ok", "h:1884", http_server(HIVEMQ_TEXT)), 4),
        NodeEntry(FakeAdapter("n1", FULL), 0.5),
    ]
    collector = BrokerCollector("local", nodes, timeout=1.0)
    threads_after: list[int] = []
    try:
        for _ in range(4):
            samples = bounded_scrape(collector, "broker scrape with a trickling HiveMQ")
            assert value(samples, contract.BROKER_UP, node="hq-trickle") == 0
            assert value(samples, contract.BROKER_UP, node="hq-ok") == 1
            assert value(samples, contract.BROKER_UP, node="n1") == 1
            assert settle(lambda: server.open_connections == 0), "a worker is still reading the target"
            threads_after.append(broker_threads())
        assert max(threads_after) <= 2, threads_after  # one pool thread per HiveMQ node, none piling up
        assert value(samples, contract.BROKER_SCRAPE_ERRORS, node="hq-trickle", reason="timeout") == 4
        assert value(samples, contract.BROKER_SCRAPE_ERRORS, node="hq-ok", reason="timeout") == 0
        server.trickling.clear()  # the target answers normally again: up on the very next scrape
        samples = scrape(collector)
        assert value(samples, contract.BROKER_UP, node="hq-trickle") == 1
        assert value(samples, contract.BROKER_CLIENTS_CONNECTED, node="hq-trickle") == 1204
    finally:
        collector.close()
    assert settle(lambda: broker_threads() == 0), "pool threads left after close"


def test_closing_a_hivemq_adapter_aborts_its_fetch_at_once(trickle) -> None:
    server = trickle({"/metrics": HIVEMQ_TEXT})
    adapter = HiveMQAdapter("hq", "h:1883", server.url + "/metrics")
    result: list[BrokerSample] = []
    worker = threading.Thread(target=lambda: result.append(adapter.snapshot(30)))
    worker.start()
    assert settle(lambda: server.open_connections == 1)
    start = time.monotonic()
    adapter.close()
    worker.join(timeout=5)
    print(f"adapter close -> fetch ended: {time.monotonic() - start:.3f}s")
    assert not worker.is_alive() and time.monotonic() - start < 0.5
    assert not result[0].up and "aborted" in (result[0].error or "")
    assert adapter.snapshot(5).error is not None  # closed: no new fetch starts


def envoy_threads() -> int:
    return sum(1 for t in threading.enumerate() if t.name.startswith(("envoy-admin", "fetch-deadline")))


@pytest.mark.parametrize("trickled", ["/clusters", "/stats"])
def test_envoy_scrape_is_bounded_by_a_trickling_admin_and_recovers_at_once(trickle, trickled: str) -> None:
    overload_stats = (FIXTURES / "envoy" / "stats_overload.json").read_text()
    server = trickle({"/clusters": CLUSTERS_JSON, "/stats": overload_stats}, slow=(trickled,))
    collector = EnvoyCollector(server.url, 1.0)
    try:
        threads_after = []
        for _ in range(3):
            samples = bounded_scrape(collector, f"envoy scrape with {trickled} trickling")
            assert value(samples, contract.ENVOY_UP) == (0 if trickled == "/clusters" else 1)
            assert (contract.ENVOY_ENDPOINT_WEIGHT in samples) == (trickled == "/stats")  # the other is served
            assert settle(lambda: server.open_connections == 0), "a worker is still reading the admin"
            assert settle(lambda: envoy_threads() <= 2), "admin workers piling up"
            threads_after.append(envoy_threads())
        assert value(samples, contract.ENVOY_SCRAPE_ERRORS, reason="timeout") == 3
        assert value(samples, contract.ENVOY_SCRAPE_ERRORS, reason="unreachable") == 0
        server.trickling.clear()  # the admin answers normally again: up on the very next scrape
        samples = scrape(collector)
        assert value(samples, contract.ENVOY_UP) == 1
        assert contract.ENVOY_OVERLOAD_ACTION_ACTIVE in samples and contract.ENVOY_ENDPOINT_WEIGHT in samples
        assert value(samples, contract.ENVOY_SCRAPE_ERRORS, reason="timeout") == 3
    finally:
        collector.close()


# --- counters start at 0 (issue 13, Deliver 5) -----------------------------------------------------
def test_broker_scrape_errors_start_at_0_for_every_node_and_reason() -> None:
    nodes = [
        NodeEntry(FakeAdapter("n1", FULL), 1),
        NodeEntry(FakeAdapter("n2", FULL, blocking=True), 1),
    ]
    collector = BrokerCollector("local", nodes, timeout=1)
    samples = scrape(collector)  # the first exposition: no error yet, every series already there
    assert sorted((lab["node"], lab["reason"], v) for lab, v in samples[contract.BROKER_SCRAPE_ERRORS]) == sorted(
        (node, reason.value, 0.0) for node in ("n1", "n2") for reason in BROKER_REASONS
    )
    partial = BrokerSample(up=True, clients_connected=1, error="no pid", reason=ScrapeErrorReason.PARTIAL)
    nodes[1].adapter.sample = partial  # type: ignore[attr-defined]
    samples = scrape(collector)  # the first partial scrape of n2 moves a series that was at 0
    assert value(samples, contract.BROKER_SCRAPE_ERRORS, node="n2", reason="partial") == 1
    assert value(samples, contract.BROKER_SCRAPE_ERRORS, node="n2", reason="timeout") == 0
    assert len(samples[contract.BROKER_SCRAPE_ERRORS]) == 2 * len(BROKER_REASONS)
    collector.close()


def test_envoy_scrape_errors_start_at_0_for_every_reason() -> None:
    bodies: dict[str, str | Exception] = {"clusters": CLUSTERS_JSON}

    def fetch(url: str, timeout: float) -> str:
        body = bodies["clusters"] if "/clusters" in url else STATS_JSON
        if isinstance(body, Exception):
            raise body
        return body

    collector = EnvoyCollector("http://e:1", 1, fetch=fetch)
    samples = scrape(collector)
    assert sorted((lab["reason"], v) for lab, v in samples[contract.ENVOY_SCRAPE_ERRORS]) == sorted(
        (reason.value, 0.0) for reason in ENVOY_REASONS
    )
    bodies["clusters"] = FetchError("GET /clusters: timed out", ScrapeErrorReason.TIMEOUT)
    samples = scrape(collector)
    assert value(samples, contract.ENVOY_SCRAPE_ERRORS, reason="timeout") == 1
    assert value(samples, contract.ENVOY_SCRAPE_ERRORS, reason="bad_answer") == 0
    bodies["clusters"] = "{not json"
    samples = scrape(collector)
    assert value(samples, contract.ENVOY_SCRAPE_ERRORS, reason="bad_answer") == 1
    assert value(samples, contract.ENVOY_SCRAPE_ERRORS, reason="timeout") == 1
    result = promtool_check(render(collector))
    assert result.returncode == 0 and result.stdout == "" and result.stderr == "", result
    collector.close()


def test_every_error_names_its_reason() -> None:
    with pytest.raises(ValueError, match="go together"):
        BrokerSample(up=True, error="process not found")
    with pytest.raises(ValueError, match="go together"):
        BrokerSample(up=False, reason=ScrapeErrorReason.STALE)
    assert BrokerSample.down("gone", ScrapeErrorReason.UNREACHABLE).reason is ScrapeErrorReason.UNREACHABLE


def test_fetch_errors_are_classified(http_server, silent_socket: str) -> None:
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()  # nothing listens there now: connection refused
    cases = [
        (f"http://127.0.0.1:{port}/metrics", ScrapeErrorReason.UNREACHABLE),
        (http_server("oops", status=503), ScrapeErrorReason.BAD_ANSWER),
        (silent_socket + "/metrics", ScrapeErrorReason.TIMEOUT),
    ]
    for url, reason in cases:
        with pytest.raises(FetchError) as info:
            fetch_text(url, 0.5)
        assert info.value.reason is reason, (url, info.value)
    with pytest.raises(FetchError, match="larger than 10 bytes") as info:
        fetch_text(http_server(HIVEMQ_TEXT), 2, max_bytes=10)
    assert info.value.reason is ScrapeErrorReason.BAD_ANSWER
    down = HiveMQAdapter("hq", "h:1883", http_server("<html>not metrics</html>")).snapshot(2)
    assert not down.up and down.reason is ScrapeErrorReason.BAD_ANSWER


def test_a_deadline_passing_after_its_fetch_never_cuts_the_kept_alive_connection() -> None:
    from mqttlb.exporters import http_fetch

    connections: list[int] = []

    class KeepAlive(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # with Content-Length: the connection stays open

        def setup(self) -> None:
            connections.append(1)
            super().setup()

        def do_GET(self) -> None:  # noqa: N802
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), KeepAlive)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_port}/"
    session = http_fetch.new_session()
    try:
        # A fetch reads its whole answer and its connection goes back to the pool; only then does
        # its deadline pass (the timer fired in that window).  The pooled connection is not cut:
        late = http_fetch._Deadline()
        http_fetch._current.deadline = late
        try:
            assert session.get(url, timeout=2).text == "ok"
        finally:
            http_fetch._current.deadline = None
        late.end("timeout")
        for _ in range(3):  # the next fetches reuse that same connection
            assert fetch_text(url, 2, session=session) == "ok"
        assert len(connections) == 1
        cut = http_fetch._Deadline()  # a deadline that passes while it holds the socket ...
        http_fetch._current.deadline = cut
        try:
            response = session.get(url, timeout=2, stream=True)
            cut.end("timeout")  # ... shuts it: read or not, the connection is closed, never pooled
            with contextlib.suppress(requests.RequestException):  # the body may be buffered already
                response.content  # noqa: B018
            response.close()
        finally:
            http_fetch._current.deadline = None
        assert fetch_text(url, 2, session=session) == "ok" and len(connections) == 2
    finally:
        session.close()
        server.shutdown()
        server.server_close()
