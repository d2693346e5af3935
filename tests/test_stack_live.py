"""The real stack: started, used through Envoy, inspected and stopped."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import psutil
import pytest
import requests
import yaml
from stackutil import free_ports_config, running_stack, token_headers, web_auth, webhook_headers

from mqttlb import contract
from mqttlb.brokers.mosquitto import MosquittoEvictionAdapter
from mqttlb.stack.config import StackConfig
from mqttlb.stack.runner import Stack, port_accepts

pytestmark = pytest.mark.live


def stack_cli(stack_file: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mqttlb.cli", "stack", "--stack-file", str(stack_file), *args],
        capture_output=True,
        text=True,
        timeout=180,
    )


URL = re.compile(r"(https?|mqtt|grpcs?)://[^\s,)]+")
COMMAND = re.compile(r"`([^`]+)`")
# What a page that is of no use to a human says: a 404, the Alertmanager package's note that it has no UI.
USELESS = ("404 page not found", "does not include a web application")
TOKEN_FILE = re.compile(r"bearer token in ([^\s:;)]+)")
PASSWORD_FILE = re.compile(r"user (\S+), password in ([^\s:;)]+)")


def assert_every_printed_address_answers(text: str, ca: str | None = None) -> list[str]:
    """GET every http URL in ``text`` outside `backquotes` (redirects followed, as a browser does):
    each must answer 200 with a page that is not a dead end -- with the credential its line names
    ("bearer token in FILE", "user U, password in FILE"), and 401 without it; every mqtt:// address
    must accept a connection, and so must every grpc:// or grpcs:// one (the webhook's xDS); every `amtool ...`
    command must succeed; ``ca``: the CA of https URLs.
    Returns the URLs."""
    verify = ca or True
    found = [(m.group(0), line) for line in text.splitlines() for m in URL.finditer(COMMAND.sub("", line))]
    urls = [url for url, _ in found]
    assert urls, text
    for url, line in found:
        token, login = TOKEN_FILE.search(line), PASSWORD_FILE.search(line)
        if url.startswith(("mqtt://", "grpc://", "grpcs://")):  # MQTT, and the webhook's xDS (gRPC ADS)
            host, port = url.split("://", 1)[1].rsplit(":", 1)
            assert port_accepts(int(port), host), f"{url} printed but nothing accepts there"
            continue
        headers, auth = {}, None
        if token is not None or login is not None:
            refused = requests.get(url, timeout=10, verify=verify).status_code
            assert refused == 401, f"{url} answers {refused} without its credential"
        if token is not None:
            headers = token_headers(Path(token.group(1)))
        if login is not None:
            auth = (login.group(1), Path(login.group(2)).read_text().strip())
        answer = requests.get(url, headers=headers, auth=auth, timeout=10, verify=verify)
        assert answer.status_code == 200, f"{url} printed but answers {answer.status_code}"
        page = " ".join(answer.text.split())
        assert page and not any(u in page for u in USELESS), f"{url}: {page[:200]}"
    for command in (c for c in COMMAND.findall(text) if c.startswith("amtool ")):
        ran = subprocess.run(command.split(), capture_output=True, text=True, timeout=30)
        assert ran.returncode == 0, f"`{command}` printed but fails: {ran.stderr}"
    return urls


@dataclasses.dataclass(frozen=True)
class CliStack:
    """A stack started by `mqttlb stack --stack-file FILE up` with the shipped defaults on free ports."""

    cfg: StackConfig
    stack_file: Path
    up: subprocess.CompletedProcess[str]  # what `up` printed
    stack: Stack


@pytest.fixture(scope="module")
def cli_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CliStack]:
    """Started at its first use in this module (nothing has connected through Envoy before the first
    test below), stopped by the last test or at the end of the module."""
    tmp_path = tmp_path_factory.mktemp("cli-stack")
    cfg = free_ports_config(tmp_path / "state", nodes=3)
    stack_file = tmp_path / "stack.yaml"
    settings = {"state_dir": str(cfg.state_dir), "nodes": 3, "ports": cfg.ports.model_dump()}
    stack_file.write_text(yaml.safe_dump(settings))  # everything else: the shipped stack/stack.yaml
    stack = Stack(cfg)
    try:
        up = stack_cli(stack_file, "up")
        assert up.returncode == 0, up.stdout + up.stderr
        yield CliStack(cfg, stack_file, up, stack)
    finally:
        stack.down(quiet=True)


def connections_per_node(cfg: StackConfig, clients: int, settle_s: float, spacing_s: float) -> dict[str, list[str]]:
    """Connect ``clients`` MQTT clients through Envoy, one after another (``spacing_s`` apart, after
    ``settle_s`` seconds), each publishing once, and ask every broker which of them it holds (the
    eviction plugin's client list, read straight from the node).  Returns node -> client ids; the
    clients are disconnected again."""
    time.sleep(settle_s)
    held: list[mqtt.Client] = []
    prefix = f"rr-{uuid.uuid4().hex[:6]}-"
    try:
        for i in range(clients):
            client = _mqtt_connects(cfg.ports.envoy_listener, f"{prefix}{i:02d}", timeout=5.0)
            assert client is not None, f"connection {i} through Envoy failed"
            held.append(client)
            client.publish(f"mqttlb/test/rr/{i}", b"1", qos=1).wait_for_publish(5)
            time.sleep(spacing_s)
        where: dict[str, list[str]] = {}
        for node, port in zip(cfg.node_names, cfg.broker_ports, strict=True):
            with MosquittoEvictionAdapter("127.0.0.1", port) as node_side:
                where[node] = sorted(c.client_id for c in node_side.clients() if c.client_id.startswith(prefix))
        return where
    finally:
        for client in held:
            client.disconnect()
            client.loop_stop()


def test_least_request_gives_every_node_some_of_the_first_12_connections(cli_stack: CliStack) -> None:
    """The shipped default, LEAST_REQUEST with equal weights: Envoy takes the node with fewer active
    connections of two picked at random (power of two choices), so every node gets some of the first 12
    held connections from the first one on.  Simulated with Envoy's picks (with replacement), a node is
    left with none in 0.04 % of runs and holds at least 2 in 99.3 %."""
    assert cli_stack.cfg.lb_policy == "LEAST_REQUEST"
    where = connections_per_node(cli_stack.cfg, 12, settle_s=5.0, spacing_s=0.0)
    assert sorted(where) == cli_stack.cfg.node_names
    assert sum(len(ids) for ids in where.values()) == 12 and all(where.values()), where


@pytest.fixture(scope="module")
def round_robin_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The shipped settings but ``lb_policy: ROUND_ROBIN``; nothing connects through it before the test."""
    cfg = free_ports_config(tmp_path_factory.mktemp("rr-stack") / "state", nodes=3, lb_policy="ROUND_ROBIN")
    with running_stack(cfg) as stack:
        yield stack


def test_round_robin_spreads_the_first_12_connections_4_4_4(round_robin_stack: Stack) -> None:
    """Round robin rotates from the first connection after start-up.  With Envoy's slow start on (the
    default was 20 s) the first 12, 5 s after start-up, never spread evenly: 3/3/6 in three runs, 2/5/5 in one."""
    cfg = round_robin_stack.cfg
    where = connections_per_node(cfg, 12, settle_s=5.0, spacing_s=0.0)
    assert sorted(where) == cfg.node_names
    assert [len(ids) for ids in where.values()] == [4, 4, 4], where
    # and in turn: connection i and i + 3 land on the same node
    node_of = {cid: node for node, ids in where.items() for cid in ids}
    order = [node_of[cid] for cid in sorted(node_of)]
    assert order == order[:3] * 4 and len(set(order[:3])) == 3, order


def test_every_address_stack_up_prints_answers(cli_stack: CliStack) -> None:
    out, cfg = cli_stack.up.stdout, cli_stack.cfg
    assert f"127.0.0.1:{cfg.ports.envoy_listener}" in out
    printed = assert_every_printed_address_answers(out)
    # the pages a human looks at first are among them (Debian's Prometheus: under /classic/)
    assert any(u.endswith("/targets") for u in printed) and f":{cfg.ports.webhook}/" in out, printed
    token = next(line.split()[2] for line in out.splitlines() if "webhook token" in line)
    assert Path(token).read_text().strip(), "the printed token file is empty"


def test_cli_up_is_idempotent_status_reports_and_down_leaves_nothing(cli_stack: CliStack) -> None:
    stack, stack_file = cli_stack.stack, cli_stack.stack_file
    pids_before = {s.name: s.pid for s in stack.status()}

    second = stack_cli(stack_file, "up")
    assert second.returncode == 0 and "already running" in second.stdout and "nothing changed" in second.stdout
    assert {s.name: s.pid for s in stack.status()} == pids_before

    # a part stopped by hand: `up` starts it again, waits until it answers and says so
    stack.stop_component("mosquitto-node3")
    third = stack_cli(stack_file, "up")
    assert third.returncode == 0, third.stdout + third.stderr
    assert "starting what is not running: mosquitto-node3" in third.stdout, third.stdout
    assert "ready: mosquitto-node3" in third.stdout and "nothing changed" not in third.stdout, third.stdout
    after_restart = {s.name: s for s in stack.status()}
    assert [s.line() for s in after_restart.values() if not s.up] == []
    assert {n: s.pid for n, s in after_restart.items() if n != "mosquitto-node3"} == {
        n: pid for n, pid in pids_before.items() if n != "mosquitto-node3"
    }
    pids_before = {n: s.pid for n, s in after_restart.items()}

    status = stack_cli(stack_file, "status")
    assert status.returncode == 0, status.stdout
    lines = status.stdout.strip().splitlines()
    assert len(lines) == 3 + 6  # 3 Mosquitto nodes + Envoy, 2 exporters, webhook, Alertmanager, Prometheus
    assert all(" up " in line for line in lines), status.stdout
    assert_every_printed_address_answers(status.stdout)
    # another state dir, same ports: this stack's supervisord answers there, but it is not that stack
    elsewhere = stack_cli(stack_file, "--state-dir", str(cli_stack.cfg.state_dir.parent / "elsewhere"), "status")
    assert elsewhere.returncode == 1 and "is not running" in elsewhere.stdout, elsewhere.stdout
    assert " up " not in elsewhere.stdout and "pid -" in elsewhere.stdout, elsewhere.stdout

    pids = [pid for pid in pids_before.values() if pid]
    supervisord_pid = stack.supervisord_pid()
    down = stack_cli(stack_file, "down")
    assert down.returncode == 0, down.stdout + down.stderr
    assert not [
        pid
        for pid in [*pids, supervisord_pid]
        if pid and psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    ]
    assert stack.listening_ports() == []

    after = stack_cli(stack_file, "status")
    assert after.returncode == 1 and "not running" in after.stdout


def test_a_component_that_dies_shows_down_in_status(live_stack: Stack) -> None:
    statuses = {s.name: s for s in live_stack.status()}
    assert all(s.up for s in statuses.values()), [s.line() for s in statuses.values()]
    assert set(statuses) >= {
        "envoy",
        "prometheus",
        "alertmanager",
        "broker-exporter",
        "envoy-exporter",
        "webhook",
    }


def test_qos1_messages_published_through_envoy_each_reach_a_subscriber_once(live_stack: Stack) -> None:
    """The nodes are independent brokers, so a subscriber on every node (connected straight to it) sees
    what a publisher that Envoy put on that node sends: every QoS 1 message, whatever the base policy
    picked, arrives exactly once."""
    topic = f"mqttlb/test/{uuid.uuid4().hex}"
    received: list[bytes] = []
    subscribers = []
    for i, node_port in enumerate(live_stack.cfg.broker_ports):
        subscribed = threading.Event()
        sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"sub-{i}-{uuid.uuid4().hex[:8]}")
        sub.on_subscribe = lambda *a, done=subscribed: done.set()
        sub.on_message = lambda c, u, msg: received.append(msg.payload)
        sub.connect("127.0.0.1", node_port)
        sub.subscribe(topic, qos=1)
        sub.loop_start()
        subscribers.append(sub)
        assert subscribed.wait(10), f"no SUBACK from the node on port {node_port}"
    try:
        sent = []
        for i in range(2 * live_stack.cfg.nodes):
            pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"pub-{i}-{uuid.uuid4().hex[:6]}")
            pub.connect("127.0.0.1", live_stack.cfg.ports.envoy_listener)
            pub.loop_start()
            payload = f"msg-{i}".encode()
            info = pub.publish(topic, payload, qos=1)
            info.wait_for_publish(timeout=5)
            assert info.is_published(), "QoS 1 PUBACK not received through Envoy"
            sent.append(payload)
            pub.disconnect()
            pub.loop_stop()
        deadline = time.monotonic() + 5
        while len(received) < len(sent) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert sorted(received) == sorted(sent), (received, sent)
    finally:
        for sub in subscribers:
            sub.disconnect()
            sub.loop_stop()


def test_every_http_part_refuses_a_request_without_its_credential(live_stack: Stack) -> None:
    """Issue 18: nothing of the stack answers an anonymous local user but the webhook's probes; an alert
    posted to Alertmanager without the login is refused (it would reach the webhook with the real token),
    Prometheus's lifecycle API is off, and supervisord has no TCP port, only a socket for this user."""
    topo, paths = live_stack.topology, live_stack.paths
    alert = [{"labels": {"alertname": "Forged", "action": "rebalance", "cluster": live_stack.cfg.cluster}}]
    refused = {
        "Prometheus query": requests.get(topo.prometheus.url("/api/v1/query"), params={"query": "up"}, timeout=5),
        "Prometheus reload": requests.post(topo.prometheus.url("/-/reload"), timeout=5),
        "Alertmanager alert": requests.post(topo.alertmanager.url("/api/v2/alerts"), json=alert, timeout=5),
        "Alertmanager status": requests.get(topo.alertmanager.url("/api/v2/status"), timeout=5),
        "webhook status": requests.get(topo.webhook.url("/status"), timeout=5),
        "webhook metrics": requests.get(topo.webhook.url("/metrics"), timeout=5),
        "webhook drain": requests.post(topo.webhook.url("/drain"), json={"node": "node1", "draining": True}, timeout=5),
        "broker exporter": requests.get(topo.broker_exporter.url("/metrics"), timeout=5),
        "Envoy exporter": requests.get(topo.envoy_exporter.url("/metrics"), timeout=5),
    }
    assert {name: r.status_code for name, r in refused.items()} == dict.fromkeys(refused, 401)
    assert requests.get(topo.webhook.url("/readyz"), timeout=5).status_code == 200  # probes stay open
    login = web_auth(live_stack)
    assert requests.get(topo.prometheus.url("/api/v1/query"), params={"query": "up"}, auth=login, timeout=5).ok
    assert requests.post(topo.prometheus.url("/-/reload"), auth=login, timeout=5).status_code == 403  # lifecycle off
    assert requests.get(topo.alertmanager.url("/api/v2/status"), auth=login, timeout=5).ok
    mode = paths.supervisor_socket.stat().st_mode
    assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) & 0o077 == 0, oct(mode)  # this user only
    supervisord = psutil.Process(live_stack.supervisord_pid())
    assert [c for c in supervisord.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN] == []
    if os.getuid() == 0:  # another local user (nobody) cannot reach the control socket
        probe = (
            "import socket, sys\n"
            "s = socket.socket(socket.AF_UNIX)\n"
            "try:\n    s.connect(sys.argv[1])\nexcept PermissionError:\n    sys.exit(13)\n"
        )
        other = subprocess.run(
            # the system's python3: nobody may not read the venv
            [shutil.which("python3", path="/usr/bin:/bin") or "python3", "-c", probe, str(paths.supervisor_socket)],
            user=65534,
            capture_output=True,
            timeout=30,
        )
        assert other.returncode == 13, other
    assert "supervisor" not in live_stack.cfg.listening_ports()
    assert {s.name for s in live_stack.status() if s.up} >= {"envoy", "prometheus", "alertmanager"}  # over the socket


def test_prometheus_scrapes_every_target_and_envoy_lists_every_node(live_stack: Stack) -> None:
    cfg = live_stack.cfg
    deadline = time.monotonic() + 30
    targets: list[dict] = []
    while time.monotonic() < deadline:
        url = f"http://127.0.0.1:{cfg.ports.prometheus}/api/v1/targets"
        targets = requests.get(url, auth=web_auth(live_stack), timeout=5).json()["data"]["activeTargets"]
        if targets and all(t["health"] == "up" for t in targets):
            break
        time.sleep(1)
    jobs = {t["labels"]["job"]: t["health"] for t in targets}
    assert jobs == {
        job: "up"
        for job in ("prometheus", "mqtt-brokers", "mqttlb-envoy", "envoy", "alertmanager", "mqttlb-webhook")
    }
    hosts = live_stack.envoy_hosts()
    assert sorted(h.node for h in hosts) == cfg.node_names
    ports = sorted(h.port for h in hosts)
    assert ports == cfg.broker_ports
    assert all(port_accepts(p) for p in cfg.broker_ports)


def _mqtt_connects(port: int, client_id: str, timeout: float = 3.0) -> mqtt.Client | None:
    """A connected client (loop running) if a CONNACK arrives within ``timeout``, else None."""
    connected = threading.Event()
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id)
    client.on_connect = lambda c, u, f, rc, p: connected.set() if not rc.is_failure else None
    try:
        client.connect("127.0.0.1", port, keepalive=30)
    except OSError:
        return None
    client.loop_start()
    if connected.wait(timeout):
        return client
    client.loop_stop()
    client.disconnect()
    return None


def test_envoy_refuses_clients_above_its_connection_cap_and_stays_up(tmp_path: Path) -> None:
    """Above the cap Envoy refuses new clients instead of running out of descriptors and crashing."""
    cap = 4
    cfg = free_ports_config(tmp_path / "state", nodes=1, envoy_max_connections=cap)
    with running_stack(cfg) as stack:
        envoy_pid = {s.name: s.pid for s in stack.status()}["envoy"]
        port = cfg.ports.envoy_listener
        held = [c for i in range(cap) if (c := _mqtt_connects(port, f"cap-{i}")) is not None]
        try:
            assert len(held) == cap, "clients below the cap must connect"
            extra = [_mqtt_connects(port, f"over-{i}", timeout=2.0) for i in range(3)]
            assert extra == [None, None, None], "clients above the cap must be refused"
            stats = requests.get(f"http://127.0.0.1:{cfg.ports.envoy_admin}/stats", timeout=5).text
            overflow = [line for line in stats.splitlines() if "global_cx_overflow" in line]
            assert overflow and int(overflow[0].rsplit(":", 1)[1]) >= 3, overflow
            exported = requests.get(f"http://127.0.0.1:{cfg.ports.envoy_admin}/stats/prometheus", timeout=10).text
            refused = [
                float(line.rsplit(" ", 1)[1])
                for line in exported.splitlines()
                if line.startswith(f"{contract.ENVOY_LISTENER_GLOBAL_CX_OVERFLOW}{{") and f"_{port}" in line
            ]
            assert refused and refused[0] >= 3, "Envoy's own /stats/prometheus must count the refused clients"
            assert {s.name: s.pid for s in stack.status()}["envoy"] == envoy_pid

            held.pop().disconnect()  # a freed slot is usable again
            deadline = time.monotonic() + 10
            again = None
            while again is None and time.monotonic() < deadline:
                again = _mqtt_connects(port, "cap-again", timeout=1.0)
            assert again is not None, "a slot freed below the cap was not reusable"
            held.append(again)
        finally:
            for client in held:
                client.disconnect()
                client.loop_stop()


def test_test_alert_goes_through_alertmanager_and_the_webhook_records_it_without_acting(live_stack: Stack) -> None:
    """`mqttlb test-alert` against the running stack: Alertmanager routes it to the webhook, which
    records it (its reply, the audit log, /status) and never puts it in the firing set."""
    ran = subprocess.run(
        [sys.executable, "-m", "mqttlb.cli", "test-alert", "--state-dir", str(live_stack.cfg.state_dir), "--wait=40"],
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert ran.returncode == 0 and "the webhook recorded it" in ran.stdout, ran.stdout + ran.stderr
    test_id = re.search(r"test_id=(\w+)", ran.stdout).group(1)  # type: ignore[union-attr]
    amtool = next(line.split(": ", 1)[1] for line in ran.stdout.splitlines() if "amtool" in line)
    listed = subprocess.run(amtool.split(), capture_output=True, text=True, timeout=30)
    assert listed.returncode == 0 and "MqttlbTestAlert" in listed.stdout, listed.stdout + listed.stderr
    audit = [json.loads(line) for line in live_stack.paths.webhook_audit.read_text().splitlines()]
    assert [e["test_ids"] for e in audit if e["kind"] == "test" and test_id in e["test_ids"]], audit[-5:]
    status = requests.get(live_stack.topology.webhook.url("/status"), headers=webhook_headers(live_stack), timeout=5)
    status = status.json()
    assert all(a["alertname"] != "MqttlbTestAlert" for a in status["firing"]["alerts"]), status["firing"]


def test_the_webhooks_observation_reads_connects_per_second_and_envoys_opened_connections(live_stack: Stack) -> None:
    """What the connection-count target and the evict lever's early trigger read on a real stack: the cluster's
    connects/s (recording rule ``CLUSTER_CONNECTS_RATE``, part of the one observation query) and Envoy's
    connections opened per host (``cx_total``, summed)."""
    from stackutil import prometheus_api, wait_until

    from mqttlb.envoy_admin import EnvoyAdminClient
    from mqttlb.rulegen import cpu_rate_window
    from mqttlb.webhook.observe import ClusterObserver

    cfg = live_stack.cfg
    observer = ClusterObserver(cfg.cluster, contract.ENVOY_CLUSTER, cfg.node_names, prometheus_api(live_stack),
                               EnvoyAdminClient(f"http://127.0.0.1:{cfg.ports.envoy_admin}"),
                               cpu_window=cpu_rate_window(cfg.params))
    # the brokers' connects counters must have been scraped once before the connects, or rate() sees no increase
    wait_until(lambda: observer.observe(time.time()).connects_per_second is not None, 60, "the connects/s series")
    before = observer.observe(time.time()).connects_total
    assert before is not None
    tag = uuid.uuid4().hex[:8]
    clients = [c for i in range(6) if (c := _mqtt_connects(cfg.ports.envoy_listener, f"obs-{tag}-{i}"))]
    try:
        assert len(clients) == 6
        seen = wait_until(lambda: (o := observer.observe(time.time())).connects_per_second and o, 60,
                          "connects/s in the observation")
        assert seen.connects_per_second is not None and seen.connects_per_second > 0
        assert seen.connects_total is not None and seen.connects_total >= before + 6
        # the connections averaged over the CPU's rate window, which the count target's predictor reads
        assert all(s.window_connections is not None for s in seen.samples.values()), seen.samples
    finally:
        for client in clients:
            client.loop_stop()
            client.disconnect()
