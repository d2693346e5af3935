"""Integration: both exporter CLIs against real Mosquitto nodes and a real Envoy, with real MQTT
clients going through Envoy.  Every process runs on 127.0.0.1 on free ports in a tmp dir and is
killed (process group) at the end.  Envoy runs with the stack's own bootstrap and command line
(`mqttlb.stack.builders` through tests/stackutil.py `running_envoy`)."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
import requests
import yaml
from prometheus_client.parser import text_string_to_metric_families
from stackutil import free_port, loopback_topology, running_envoy, wait_until
from test_exporters_unit import CLUSTERS_JSON, HIVEMQ_TEXT, STATS_JSON, TrickleServer

from mqttlb import contract
from mqttlb.contract import ENVOY_CLUSTER
from mqttlb.exporters.broker_collector import SAMPLE_METRICS
from mqttlb.exporters.scrape_errors import BROKER_REASONS, ENVOY_REASONS
from mqttlb.stack.builders import ENVOY_CLUSTER_MAX_CONNECTIONS
from mqttlb.stack.topology import Topology

pytestmark = pytest.mark.live

SYS_INTERVAL = 1
Samples = dict[str, list[tuple[dict[str, str], float]]]


def parse(text: str) -> Samples:
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, []).append((sample.labels, sample.value))
    return out


_SAMPLE_LINE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse_as_exposed(text: str) -> Samples:
    """Samples by the names a text-format target exposes, as Prometheus stores them (prometheus-client's
    parser gives a counter family's samples a ``_total`` Envoy's own counters do not have)."""
    out: Samples = {}
    for line in text.splitlines():
        match = _SAMPLE_LINE.match(line)
        if match is not None:
            labels = dict(_LABEL.findall(match.group(2) or ""))
            out.setdefault(match.group(1), []).append((labels, float(match.group(3))))
    return out


def pick(samples: Samples, name: str, **labels: str) -> float:
    found = [v for lab, v in samples.get(name, []) if all(lab.get(k) == x for k, x in labels.items())]
    assert len(found) == 1, f"{name}{labels}: {found}"
    return found[0]


def total(samples: Samples, name: str) -> float:
    return sum(v for _, v in samples.get(name, []))


@dataclass
class Rig:
    tmp: Path
    topology: Topology  # free loopback ports: the brokers' and Envoy's
    broker_ports: dict[str, int]
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)
    broker_exporter: str = ""
    envoy_exporter: str = ""
    envoy_stats: str = ""  # Envoy's own /stats/prometheus
    envoy_listener: int = 0

    def start(self, name: str, argv: list[str]) -> subprocess.Popen:
        log = open(self.tmp / f"{name}.log", "wb")  # noqa: SIM115 (closed with the process)
        process = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=self.tmp
        )
        log.close()
        self.processes[name] = process
        return process

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        process = self.processes.pop(name)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=5)

    def stop_all(self) -> None:
        for name in list(self.processes):
            self.kill(name, signal.SIGTERM)

    def scrape(self, url: str, timeout: float = 10) -> str:
        response = requests.get(url, timeout=timeout)
        response.raise_for_status()
        return response.text

    def logs(self) -> str:
        return "\n".join(
            f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}" for p in self.tmp.glob("*.log")
        )


def start_mosquitto(rig: Rig, node: str, port: int) -> None:
    directory = rig.tmp / node
    directory.mkdir(exist_ok=True)
    conf = directory / "mosquitto.conf"
    conf.write_text(
        "\n".join(
            [
                f"listener {port} 127.0.0.1",
                "allow_anonymous true",
                "persistence false",
                "user root",
                f"pid_file {directory / 'mosquitto.pid'}",
                f"sys_interval {SYS_INTERVAL}",
                "log_dest topic",
                "log_type notice",
                "",
            ]
        )
    )
    rig.start(node, [shutil.which("mosquitto") or "/usr/sbin/mosquitto", "-c", str(conf)])


def start_broker_exporter(rig: Rig, extra_nodes: list[dict] | None = None, timeout: float = 2) -> None:
    port = free_port()
    config = {
        "listen": f"127.0.0.1:{port}",
        "cluster": "test",
        "scrape_timeout_seconds": timeout,
        "sys_interval_seconds": SYS_INTERVAL,
        "nodes": [
            {
                "name": node,
                "kind": "mosquitto",
                "address": f"127.0.0.1:{p}",
                "cpu_cores": 0.5,
                "pid_file": str(rig.tmp / node / "mosquitto.pid"),
            }
            for node, p in rig.broker_ports.items()
        ]
        + (extra_nodes or []),
    }
    path = rig.tmp / "broker.yaml"
    path.write_text(yaml.safe_dump(config))
    rig.start("broker-exporter", [sys.executable, "-m", "mqttlb.exporters.broker_cli", "--config", str(path)])
    rig.broker_exporter = f"http://127.0.0.1:{port}/metrics"


def start_envoy_exporter(rig: Rig, admin_url: str, timeout: float = 2) -> None:
    port = free_port()
    rig.start(
        "envoy-exporter",
        [
            sys.executable,
            "-m",
            "mqttlb.exporters.envoy_cli",
            "--listen",
            f"127.0.0.1:{port}",
            "--envoy-admin",
            admin_url,
            "--timeout",
            str(timeout),
        ],
    )
    rig.envoy_exporter = f"http://127.0.0.1:{port}/metrics"


def nodes_up(rig: Rig, names: list[str]) -> bool:
    samples = parse(rig.scrape(rig.broker_exporter))
    return all(pick(samples, contract.BROKER_UP, node=n) == 1 for n in names)


@contextlib.contextmanager
def rig_context(tmp: Path, nodes: int = 2) -> Iterator[Rig]:
    topo = loopback_topology(tmp / "state", nodes=nodes)
    rig = Rig(tmp, topo, {node.name: node.port for node in topo.nodes})
    try:
        yield rig
    except BaseException:
        print(rig.logs())
        raise
    finally:
        rig.stop_all()


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    with rig_context(tmp_path_factory.mktemp("exporters-live")) as rig:
        for node, port in rig.broker_ports.items():
            start_mosquitto(rig, node, port)
        with running_envoy(rig.topology, log=rig.tmp / "envoy.log"):
            rig.envoy_listener = rig.topology.envoy_listener.port
            start_broker_exporter(rig)
            start_envoy_exporter(rig, rig.topology.envoy_admin.url())
            rig.envoy_stats = f"{rig.topology.envoy_admin.url()}/stats/prometheus"  # Envoy's own series
            wait_until(lambda: nodes_up(rig, list(rig.broker_ports)), 20, "both nodes up")
            wait_until(lambda: rig.scrape(rig.envoy_exporter) != "", 10, "envoy exporter serving")
            yield rig


def promtool_check(text: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["promtool", "check", "metrics"], input=text, capture_output=True, text=True, timeout=30
    )


def test_scrapes_pass_promtool(rig: Rig) -> None:
    for url in (rig.broker_exporter, rig.envoy_exporter):
        result = promtool_check(rig.scrape(url))
        assert (result.returncode, result.stdout, result.stderr) == (0, "", ""), url


def test_every_series_present_with_labels(rig: Rig) -> None:
    broker = parse(rig.scrape(rig.broker_exporter))
    not_reported_by_mosquitto = {"queued", "overload_level"}
    names = [
        contract.BROKER_UP,
        contract.BROKER_INFO,
        contract.BROKER_CPU_CAPACITY,
        contract.BROKER_SCRAPE_DURATION,
    ]
    names += [name for f, name, _, counter in SAMPLE_METRICS if f not in not_reported_by_mosquitto]
    for node in rig.broker_ports:
        for name in names:
            pick(broker, name, mqtt_cluster="test", node=node)
        for reason in BROKER_REASONS:  # every reason exported, from 0
            pick(broker, contract.BROKER_SCRAPE_ERRORS, mqtt_cluster="test", node=node, reason=reason)
    assert (
        pick(
            broker,
            contract.BROKER_INFO,
            node="node1",
            kind="mosquitto",
            address=f"127.0.0.1:{rig.broker_ports['node1']}",
        )
        == 1
    )
    assert pick(broker, contract.BROKER_RESIDENT_MEMORY, node="node1") > 1e6
    envoy = parse(rig.scrape(rig.envoy_exporter))
    native = parse_as_exposed(rig.scrape(rig.envoy_stats))  # Envoy's own /stats/prometheus (track_cluster_stats)
    for node, port in rig.broker_ports.items():
        address = f"127.0.0.1:{port}"
        labels = {contract.ENVOY_CLUSTER_LABEL: ENVOY_CLUSTER, contract.ENVOY_ENDPOINT_LABEL: address, "node": node}
        assert pick(envoy, contract.ENVOY_ENDPOINT_WEIGHT, **labels) == 100
        assert pick(envoy, contract.ENVOY_ENDPOINT_HEALTH, status="healthy", **labels) == 1
        own = {
            contract.ENVOY_CLUSTER_LABEL: ENVOY_CLUSTER,
            contract.ENVOY_ENDPOINT_LABEL: address,
            contract.ENVOY_ENDPOINT_HOSTNAME_LABEL: node,
        }
        for name in (contract.ENVOY_ENDPOINT_CX_ACTIVE, contract.ENVOY_ENDPOINT_CX_TOTAL):
            pick(native, name, **own)
        pick(native, contract.ENVOY_ENDPOINT_CX_FAIL, **own)
        assert pick(native, contract.ENVOY_ENDPOINT_HEALTHY, **own) == 1
    listener = f"127.0.0.1_{rig.envoy_listener}"
    for name in (
        contract.ENVOY_LISTENER_CX_ACTIVE,
        contract.ENVOY_LISTENER_CX_TOTAL,
        contract.ENVOY_LISTENER_CX_OVERFLOW,
        contract.ENVOY_LISTENER_CX_OVERLOAD_REJECT,
    ):
        pick(native, name, **{contract.ENVOY_LISTENER_LABEL: listener})
    for name in (
        contract.ENVOY_CLUSTER_RX_BYTES,
        contract.ENVOY_CLUSTER_TX_BYTES,
        contract.ENVOY_CLUSTER_CX_OVERFLOW,
    ):
        pick(native, name, envoy_cluster_name=ENVOY_CLUSTER)
    # The exporter repeats none of Envoy's own series.
    assert not [name for name in envoy if name.startswith("envoy_")]
    assert (
        pick(envoy, contract.ENVOY_CLUSTER_MAX_CONNECTIONS, envoy_cluster_name=ENVOY_CLUSTER, priority="default")
        == ENVOY_CLUSTER_MAX_CONNECTIONS
    )
    assert pick(envoy, contract.ENVOY_UP) == 1
    assert {lab["reason"]: v for lab, v in envoy[contract.ENVOY_SCRAPE_ERRORS]} == dict.fromkeys(ENVOY_REASONS, 0)


def connect_clients(port: int, count: int) -> list[mqtt.Client]:
    clients = []
    for i in range(count):
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"live-{i}")
        client.connect("127.0.0.1", port, keepalive=30)
        client.loop_start()
        client.subscribe("load/#", qos=0)
        clients.append(client)
    wait_until(lambda: all(c.is_connected() for c in clients), 10, "clients connected via envoy")
    return clients


def test_series_move_with_load(rig: Rig) -> None:
    clients_n, messages = 6, 1500
    broker0 = parse(rig.scrape(rig.broker_exporter))
    envoy0 = parse_as_exposed(rig.scrape(rig.envoy_stats))
    clients = connect_clients(rig.envoy_listener, clients_n)
    try:
        for i in range(messages):
            clients[i % clients_n].publish(f"load/{i % 7}", b"x" * 64, qos=0)
        clients[0].publish("load/retained", b"kept", qos=1, retain=True).wait_for_publish(timeout=10)
        for client in clients:
            client.publish("load/end", b"end", qos=1).wait_for_publish(timeout=10)

        def broker_moved() -> bool:
            now = parse(rig.scrape(rig.broker_exporter))
            return (
                total(now, contract.BROKER_CLIENTS_CONNECTED) == clients_n
                and total(now, contract.BROKER_PUBLISH_RECEIVED)
                - total(broker0, contract.BROKER_PUBLISH_RECEIVED)
                >= messages
                and total(now, contract.BROKER_RETAINED) > total(broker0, contract.BROKER_RETAINED)
            )

        wait_until(broker_moved, 6 * SYS_INTERVAL + 5, "broker series to reflect the load")
        broker1 = parse(rig.scrape(rig.broker_exporter))
        for name in (
            contract.BROKER_CONNECTS,
            contract.BROKER_PUBLISH_SENT,
            contract.BROKER_BYTES_RECEIVED,
            contract.BROKER_BYTES_SENT,
            contract.BROKER_MESSAGES_RECEIVED,
            contract.BROKER_CPU_SECONDS,
        ):
            assert total(broker1, name) > total(broker0, name), name
        assert total(broker1, contract.BROKER_CONNECTS) - total(broker0, contract.BROKER_CONNECTS) == clients_n
        assert total(broker1, contract.BROKER_SUBSCRIPTIONS) == clients_n

        envoy1 = parse_as_exposed(rig.scrape(rig.envoy_stats))
        assert total(envoy1, contract.ENVOY_ENDPOINT_CX_ACTIVE) == clients_n
        hostname = contract.ENVOY_ENDPOINT_HOSTNAME_LABEL
        for node in rig.broker_ports:  # both views agree on where each client landed
            on_node = pick(broker1, contract.BROKER_CLIENTS_CONNECTED, node=node)
            assert on_node >= 1 and on_node == pick(envoy1, contract.ENVOY_ENDPOINT_CX_ACTIVE, **{hostname: node})
        assert (
            total(envoy1, contract.ENVOY_ENDPOINT_CX_TOTAL) - total(envoy0, contract.ENVOY_ENDPOINT_CX_TOTAL)
            == clients_n
        )
        assert (
            pick(envoy1, contract.ENVOY_LISTENER_CX_ACTIVE, envoy_listener_address=f"127.0.0.1_{rig.envoy_listener}")
            == clients_n
        )
        for name in (contract.ENVOY_CLUSTER_RX_BYTES, contract.ENVOY_CLUSTER_TX_BYTES):
            assert total(envoy1, name) > total(envoy0, name), name
    finally:
        for client in clients:
            client.disconnect()
            client.loop_stop()

    def disconnects_counted() -> bool:
        now = parse(rig.scrape(rig.broker_exporter))
        return (
            total(now, contract.BROKER_DISCONNECTS) - total(broker0, contract.BROKER_DISCONNECTS) == clients_n
            and total(now, contract.BROKER_CLIENTS_CONNECTED) == 0
        )

    wait_until(disconnects_counted, 30, "disconnects counted")  # $SYS every 1 s; 11 s timed out once on a busy CI run
    wait_until(
        lambda: total(parse_as_exposed(rig.scrape(rig.envoy_stats)), contract.ENVOY_ENDPOINT_CX_ACTIVE) == 0,
        10,
        "envoy active connections back to 0",
    )


def test_killed_or_hung_node_reported_down_and_hung_targets_bounded(tmp_path: Path) -> None:
    silent = socket.socket()  # accepts TCP connections (kernel backlog) but never answers
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)
    silent_url = f"http://127.0.0.1:{silent.getsockname()[1]}"
    try:
        with rig_context(tmp_path) as rig:
            for node, port in rig.broker_ports.items():
                start_mosquitto(rig, node, port)
            hung_hivemq = {
                "name": "hq-hung",
                "kind": "hivemq",
                "address": "127.0.0.1:1",
                "cpu_cores": 1,
                "metrics_url": f"{silent_url}/metrics",
            }
            start_broker_exporter(rig, extra_nodes=[hung_hivemq], timeout=1)
            start_envoy_exporter(rig, silent_url, timeout=1)
            wait_until(lambda: nodes_up(rig, list(rig.broker_ports)), 20, "both nodes up")

            for url in (rig.broker_exporter, rig.envoy_exporter):
                start = time.monotonic()
                text = rig.scrape(url, timeout=5)
                assert time.monotonic() - start < 2.0, f"{url} scrape took too long"
            assert pick(parse(text), contract.ENVOY_UP) == 0
            broker = parse(rig.scrape(rig.broker_exporter))
            assert pick(broker, contract.BROKER_UP, node="hq-hung") == 0
            assert pick(broker, contract.BROKER_UP, node="node1") == 1

            rig.kill("node2")
            time.sleep(0.3)
            broker = parse(rig.scrape(rig.broker_exporter))  # the first scrape after the kill
            assert pick(broker, contract.BROKER_UP, node="node2") == 0
            assert pick(broker, contract.BROKER_UP, node="node1") == 1
            assert not [lab for lab, _ in broker[contract.BROKER_CLIENTS_CONNECTED] if lab["node"] == "node2"]
            pick(broker, contract.BROKER_CLIENTS_CONNECTED, node="node1")
            pick(broker, contract.BROKER_CPU_SECONDS, node="node1")
            assert pick(broker, contract.BROKER_SCRAPE_ERRORS, node="node2", reason="unreachable") >= 1

            start_mosquitto(rig, "node2", rig.broker_ports["node2"])  # comes back: reconnect with backoff
            wait_until(lambda: nodes_up(rig, ["node1", "node2"]), 20, "node2 back up")

            # A hung broker keeps its TCP connection but stops publishing $SYS: stale data = down.
            frozen = rig.processes["node1"].pid
            os.kill(frozen, signal.SIGSTOP)
            try:
                start = time.monotonic()
                wait_until(
                    lambda: pick(parse(rig.scrape(rig.broker_exporter)), contract.BROKER_UP, node="node1") == 0,
                    3 * SYS_INTERVAL + 3,
                    "a stopped (hung) node reported down",
                )
                assert time.monotonic() - start >= 3 * SYS_INTERVAL - 1.5  # not before its data went stale
                assert pick(parse(rig.scrape(rig.broker_exporter)), contract.BROKER_UP, node="node2") == 1
            finally:
                os.kill(frozen, signal.SIGCONT)
            wait_until(lambda: nodes_up(rig, ["node1", "node2"]), 30, "node1 back after SIGCONT")
    finally:
        silent.close()


# --- fault 7 (issue 13): a target trickling one byte every 0.5 s ------------------------------------
TRICKLE_TIMEOUT = 3.0  # the exporters' scrape timeout here: longer than the 2 s allowed for SIGTERM


@contextlib.contextmanager
def exporter_process(tmp: Path, command: str, args: list[str], port: int) -> Iterator[subprocess.Popen]:
    """``mqttlb <command> args`` in its own process group, serving on 127.0.0.1:port; killed at exit."""
    log = open(tmp / f"{command}.log", "wb")  # noqa: SIM115 (closed with the process)
    argv = [sys.executable, "-m", "mqttlb.cli", command, *args]
    process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    log.close()
    try:
        wait_until(lambda: requests.get(f"http://127.0.0.1:{port}/", timeout=1).ok, 20, f"{command} serving")
        yield process
    except BaseException:
        print((tmp / f"{command}.log").read_text(errors="replace")[-3000:])
        raise
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=5)


def thread_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


def timed_scrape(url: str) -> tuple[Samples, float]:
    start = time.monotonic()
    text = requests.get(url, timeout=TRICKLE_TIMEOUT + 5).text
    return parse(text), time.monotonic() - start


def sigterm_while_scraping(process: subprocess.Popen, url: str, target: TrickleServer) -> float:
    """SIGTERM the exporter while a scrape of it is reading the trickling ``target``; the seconds
    until the process has exited (at most 10, then it is killed)."""
    def scrape() -> None:
        with contextlib.suppress(requests.RequestException):  # the exporter goes away under it
            requests.get(url, timeout=15)

    scraper = threading.Thread(target=scrape, daemon=True)
    requests_before = target.requests
    scraper.start()
    wait_until(lambda: target.requests > requests_before and target.open_connections > 0, 5, "scrape reading")
    start = time.monotonic()
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        return float("inf")
    return time.monotonic() - start


def scrapes_while_trickling(
    process: subprocess.Popen, url: str, target: TrickleServer, what: str, check: Callable[[Samples], None]
) -> Samples:
    """Three scrapes of the exporter ``process`` at ``url`` while ``target`` trickles: each ends within
    the scrape timeout, passes ``check`` and leaves no connection to ``target`` open, and the
    exporter's thread count does not grow.  Returns the last scrape's samples."""
    threads = []
    for _ in range(3):
        samples, elapsed = timed_scrape(url)
        print(f"{what} scrape with a trickling target: {elapsed:.3f}s")
        assert elapsed < TRICKLE_TIMEOUT + 0.5
        check(samples)
        wait_until(lambda: target.open_connections == 0, 3, f"{what} let go of the target")
        threads.append(thread_count(process.pid))
    print(f"{what} threads after each scrape: {threads}")
    assert threads[-1] <= threads[0], threads
    return samples


def assert_sigterm_ends_a_trickling_scrape(
    process: subprocess.Popen, url: str, target: TrickleServer, what: str
) -> None:
    """With ``target`` trickling, SIGTERM during a scrape ends the exporter within 2 s, exit status 0."""
    target.trickling.set()
    exit_after = sigterm_while_scraping(process, url, target)
    print(f"{what} exit after SIGTERM during a trickling scrape: {exit_after:.3f}s")
    assert exit_after < 2.0 and process.returncode == 0


def test_broker_exporter_bounded_by_a_trickling_hivemq_and_exits_on_sigterm(tmp_path: Path) -> None:
    slow = TrickleServer({"/metrics": HIVEMQ_TEXT})
    fast = TrickleServer({"/metrics": HIVEMQ_TEXT})
    fast.trickling.clear()
    port = free_port()
    hivemq = {"kind": "hivemq", "address": "127.0.0.1:1", "cpu_cores": 1}
    config = {
        "listen": f"127.0.0.1:{port}",
        "cluster": "test",
        "scrape_timeout_seconds": TRICKLE_TIMEOUT,
        "nodes": [
            {**hivemq, "name": "hq-trickle", "metrics_url": f"{slow.url}/metrics"},
            {**hivemq, "name": "hq-ok", "metrics_url": f"{fast.url}/metrics"},
        ],
    }
    (tmp_path / "broker.yaml").write_text(yaml.safe_dump(config))
    url = f"http://127.0.0.1:{port}/metrics"
    args = ["--config", str(tmp_path / "broker.yaml")]
    try:
        def only_the_trickling_node_down(samples: Samples) -> None:
            assert pick(samples, contract.BROKER_UP, node="hq-trickle") == 0
            assert pick(samples, contract.BROKER_UP, node="hq-ok") == 1

        with exporter_process(tmp_path, "broker-exporter", args, port) as process:
            samples = scrapes_while_trickling(process, url, slow, "broker-exporter", only_the_trickling_node_down)
            assert pick(samples, contract.BROKER_SCRAPE_ERRORS, node="hq-trickle", reason="timeout") == 3
            slow.trickling.clear()  # answers normally again: up on the very next scrape
            samples, _ = timed_scrape(url)
            assert pick(samples, contract.BROKER_UP, node="hq-trickle") == 1
            assert_sigterm_ends_a_trickling_scrape(process, url, slow, "broker-exporter")
    finally:
        slow.close()
        fast.close()


def test_envoy_exporter_bounded_by_a_trickling_admin_and_exits_on_sigterm(tmp_path: Path) -> None:
    admin = TrickleServer({"/clusters": CLUSTERS_JSON, "/stats": STATS_JSON})
    port = free_port()
    url = f"http://127.0.0.1:{port}/metrics"
    args = ["--listen", f"127.0.0.1:{port}", "--envoy-admin", admin.url, "--timeout", str(TRICKLE_TIMEOUT)]
    try:
        def envoy_down(samples: Samples) -> None:
            assert pick(samples, contract.ENVOY_UP) == 0

        with exporter_process(tmp_path, "envoy-exporter", args, port) as process:
            samples = scrapes_while_trickling(process, url, admin, "envoy-exporter", envoy_down)
            assert pick(samples, contract.ENVOY_SCRAPE_ERRORS, reason="timeout") == 3
            admin.trickling.clear()
            samples, _ = timed_scrape(url)
            assert pick(samples, contract.ENVOY_UP) == 1 and contract.ENVOY_ENDPOINT_WEIGHT in samples
            assert_sigterm_ends_a_trickling_scrape(process, url, admin, "envoy-exporter")
    finally:
        admin.close()
