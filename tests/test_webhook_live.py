"""Live tests against the real Envoy and Prometheus binaries (127.0.0.1, free ports, tmp dirs).

Envoy and the webhook run with the stack's own configs (`mqttlb.stack.builders`, through
tests/stackutil.py) on a loopback topology with free ports; only Prometheus's data is faked.

* a decision's weights appear in Envoy's /clusters (read back and recorded in the audit entry);
* the circuit-breaker override and the overload hard stop take effect: new connections get EOF,
  held ones stay;
* resolved alerts lift shedding and weights stepwise (recovery tick);
* a second Envoy polling the webhook's REST-JSON EDS endpoint gets the same weights.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests
import waitress
import yaml
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Gauge, generate_latest
from stackutil import free_port, loopback_topology, process, running_envoy, wait_until

from mqttlb import contract
from mqttlb.envoy_admin import EnvoyAdminClient, circuit_breaker_key
from mqttlb.stack import builders
from mqttlb.stack.topology import EdsSource, Topology
from mqttlb.webhook.app import create_app
from mqttlb.webhook.config import WebhookConfig
from mqttlb.webhook.rebalancer import Rebalancer
from mqttlb.webhook.shedding import OVERLOAD_OFF, OVERLOAD_ON

pytestmark = pytest.mark.live

TOKEN = "live-test-token-0123456789"
CLUSTER = contract.ENVOY_CLUSTER
NODES = ["node1", "node2", "node3"]


class Upstreams:
    """Plain TCP servers standing in for brokers on ``ports``: accept, hold the connection, echo."""

    def __init__(self, ports: list[int]) -> None:
        self.sockets = []
        self.stop = threading.Event()
        self.threads = []
        for port in ports:
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("127.0.0.1", port))
            s.listen(256)
            s.settimeout(0.1)
            self.sockets.append(s)
            t = threading.Thread(target=self._serve, args=(s,), daemon=True)
            t.start()
            self.threads.append(t)
        self.held: list[socket.socket] = []

    def _serve(self, server: socket.socket) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = server.accept()
            except (TimeoutError, OSError):
                continue
            self.held.append(conn)
            threading.Thread(target=self._echo, args=(conn,), daemon=True).start()

    def _echo(self, conn: socket.socket) -> None:
        conn.settimeout(0.2)
        while not self.stop.is_set():
            try:
                data = conn.recv(1024)
            except TimeoutError:
                continue
            except OSError:
                return
            if not data:
                return
            with contextlib.suppress(OSError):
                conn.sendall(data)

    def close(self) -> None:
        self.stop.set()
        for s in self.sockets + self.held:
            with contextlib.suppress(OSError):
                s.close()
        for t in self.threads:
            t.join(timeout=2)


class FakeBrokerMetrics:
    """A real prometheus-client HTTP server exposing the recording-rule series for Prometheus to scrape."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.cpu = Gauge(contract.NODE_CPU, "node CPU", ["cluster", "node"], registry=self.registry)
        self.conns = Gauge(
            contract.NODE_CONNECTIONS, "node connections", ["cluster", "node"], registry=self.registry
        )
        registry = self.registry

        class Handler(BaseHTTPRequestHandler):
            # Always the text format: prometheus-client 0.26 rewrites ':' to '_' in OpenMetrics
            # sample names, which would rename the recording-rule series.
            def do_GET(self) -> None:  # noqa: N802
                body = generate_latest(registry)
                self.send_response(200)
                self.send_header("Content-Type", CONTENT_TYPE_LATEST)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def set(self, cpu: dict[str, float], conns: dict[str, float]) -> None:
        for node, value in cpu.items():
            self.cpu.labels("local", node).set(value)
        for node, value in conns.items():
            self.conns.labels("local", node).set(value)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture()
def prometheus(tmp_path) -> Iterator[tuple[str, FakeBrokerMetrics]]:
    metrics = FakeBrokerMetrics()
    port = free_port()
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [
            {
                "job_name": "fake",
                "static_configs": [{"targets": [f"127.0.0.1:{metrics.port}"]}],
                "honor_labels": True,
            }
        ],
    }
    root = tmp_path / "prometheus"
    root.mkdir()
    (root / "prometheus.yml").write_text(yaml.safe_dump(config))
    cmd = [
        "prometheus",
        f"--config.file={root / 'prometheus.yml'}",
        f"--storage.tsdb.path={root / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--log.level=warn",
    ]
    try:
        with process(cmd, root / "prometheus.log"):
            url = f"http://127.0.0.1:{port}"
            wait_until(
                lambda: requests.get(f"{url}/-/ready", timeout=1).status_code == 200,
                30,
                what="Prometheus ready",
            )
            yield url, metrics
    finally:
        metrics.close()


def wait_for_series(url: str, expected: dict[str, float], timeout: float = 15) -> None:
    def matches() -> bool:
        result = requests.get(f"{url}/api/v1/query", params={"query": contract.NODE_CPU}, timeout=1).json()
        got = {r["metric"]["node"]: float(r["value"][1]) for r in result["data"]["result"]}
        return all(abs(got.get(n, -1) - v) < 1e-9 for n, v in expected.items())

    wait_until(matches, timeout, interval=0.2, what=f"Prometheus to scrape {expected}")


def webhook_stack(
    tmp_path: Path, eds: EdsSource = "file", prometheus_url: str = "http://127.0.0.1:1"
) -> tuple[Topology, WebhookConfig]:
    """A loopback topology on free ports and the webhook config the stack would give it.

    Only the Prometheus URL is replaced (a fake Prometheus, or a closed port); the bearer token
    file holds TOKEN.
    """
    topo = loopback_topology(tmp_path / "state", nodes=len(NODES), eds=eds)
    assert [n.name for n in topo.nodes] == NODES
    topo.state.webhook_dir.mkdir(parents=True, exist_ok=True)
    topo.state.webhook_token.write_text(TOKEN)
    config = WebhookConfig.model_validate({**builders.webhook_config(topo), "prometheus_url": prometheus_url})
    return topo, config


def payload(action: str, status: str = "firing", starts: str = "2026-11-26T12:00:00Z") -> dict:
    labels = {"alertname": f"Test{action.title()}", "action": action, "cluster": "local"}
    return {
        "version": "4",
        "groupKey": f'{{}}:{{alertname="{labels["alertname"]}"}}',
        "status": status,
        "receiver": "mqttlb-webhook",
        "groupLabels": {},
        "commonLabels": labels,
        "commonAnnotations": {},
        "externalURL": "",
        "truncatedAlerts": 0,
        "alerts": [
            {
                "status": status,
                "labels": labels,
                "annotations": {},
                "startsAt": starts,
                "endsAt": "0001-01-01T00:00:00Z",
                "generatorURL": "",
                "fingerprint": f"fp-{action}",
            }
        ],
    }


def connect(port: int) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=2)
    s.settimeout(2)
    return s


def echoes(s: socket.socket) -> bool:
    """True if the connection still carries data end to end; False on EOF/reset."""
    try:
        s.sendall(b"ping")
        return s.recv(16) == b"ping"
    except OSError:
        return False


def test_rebalance_weights_reach_envoy_and_are_read_back(tmp_path, prometheus):
    prom_url, broker_metrics = prometheus
    broker_metrics.set({"node1": 0.9, "node2": 0.3, "node3": 0.2}, {"node1": 600, "node2": 200, "node3": 200})
    topo, config = webhook_stack(tmp_path, prometheus_url=prom_url)
    upstreams = Upstreams(topo.settings.broker_ports)
    clock = [10_000.0]
    try:
        rb_holder: dict[str, Rebalancer] = {}
        create_app(config, token=TOKEN)  # first start: neutral snapshot in the EDS file Envoy watches
        with running_envoy(topo):
            rb_holder["rb"] = Rebalancer(config, clock=lambda: clock[0])
            app = create_app(config, rebalancer=rb_holder["rb"], token=TOKEN)
            client = app.test_client()
            envoy = EnvoyAdminClient(config.envoy_admin)
            wait_until(
                lambda: {h.weight for h in envoy.cluster(CLUSTER).by_node().values()} == {100},
                5,
                what="neutral weights in Envoy",
            )
            wait_for_series(prom_url, {"node1": 0.9, "node2": 0.3, "node3": 0.2})
            started = time.perf_counter()
            response = client.post(
                "/alerts", json=payload("rebalance"), headers={"Authorization": f"Bearer {TOKEN}"}
            )
            latency = time.perf_counter() - started
            assert response.status_code == 200, response.json
            assert response.json["result"] == "rebalance"
            after = response.json["after"]
            assert after["node1"] < 100 < after["node3"] and after["node2"] > 100
            hosts = envoy.cluster(CLUSTER).by_node()
            assert {n: h.weight for n, h in hosts.items()} == after
            entry = rb_holder["rb"].audit.read()[-1]
            assert entry["applied"]["verified"] is True and entry["applied"]["envoy"] == after
            assert entry["before"] == dict.fromkeys(NODES, 100)
            assert entry["donors"] == ["node1"]
            by_node = {n["node"]: n for n in entry["nodes"]}
            assert by_node["node1"]["connections"] == 600 and by_node["node1"]["connection_surplus"] > 0
            print(
                "decision latency (Prometheus query + decide + EDS publish + Envoy read-back): "
                f"{latency * 1000:.1f} ms"
            )
            # a repeat of the same notification inside the cooldown is a duplicate, not a second step
            dup = client.post(
                "/alerts", json=payload("rebalance"), headers={"Authorization": f"Bearer {TOKEN}"}
            )
            assert dup.json["result"] == "duplicate"
            # after the cooldown the repeat_interval re-send steps again, further from the hot node
            clock[0] += config.params().policy.cooldown_seconds + 1
            again = client.post(
                "/alerts", json=payload("rebalance"), headers={"Authorization": f"Bearer {TOKEN}"}
            )
            assert again.json["result"] == "rebalance" and again.json["after"]["node1"] < after["node1"]
            # resolved while node1 is still far hotter: the weights are what keeps it in check, so
            # they are held (no EDS change), and the tick keeps checking
            clock[0] += config.params().policy.cooldown_seconds + 1
            steered = {n: h.weight for n, h in envoy.cluster(CLUSTER).by_node().items()}
            resolved = client.post(
                "/alerts", json=payload("rebalance", "resolved"), headers={"Authorization": f"Bearer {TOKEN}"}
            )
            assert resolved.json["result"] == "hold", resolved.json
            assert "weights held" in resolved.json["reason"]
            clock[0] += config.params().policy.cooldown_seconds + 1
            assert rb_holder["rb"].tick() is None
            assert {n: h.weight for n, h in envoy.cluster(CLUSTER).by_node().items()} == steered
            # the load evens out: the tick walks the weights back, every step visible in Envoy
            broker_metrics.set({"node1": 0.41, "node2": 0.4, "node3": 0.39}, {})
            wait_for_series(prom_url, {"node1": 0.41, "node2": 0.4, "node3": 0.39})
            for _ in range(20):
                clock[0] += config.params().policy.cooldown_seconds + 1
                if rb_holder["rb"].tick() is None:
                    break
            assert {n: h.weight for n, h in envoy.cluster(CLUSTER).by_node().items()} == dict.fromkeys(
                NODES, 100
            )
            metrics = client.get("/metrics").text
            assert 'mqttlb_webhook_actions_total{kind="rebalance"} 2.0' in metrics
            assert "mqttlb_webhook_decision_duration_seconds_count" in metrics
    finally:
        upstreams.close()


def test_shed_caps_new_connections_keeps_held_ones_and_lifts_stepwise(tmp_path):
    topo, config = webhook_stack(tmp_path)
    upstreams = Upstreams(topo.settings.broker_ports)
    listener = topo.envoy_listener.port
    clock = [50_000.0]
    held: list[socket.socket] = []
    try:
        create_app(config, token=TOKEN)
        with running_envoy(topo):
            rb = Rebalancer(config, clock=lambda: clock[0])
            client = create_app(config, rebalancer=rb, token=TOKEN).test_client()
            envoy = EnvoyAdminClient(config.envoy_admin)
            wait_until(lambda: len(envoy.cluster(CLUSTER).by_node()) == 3, 5, what="3 hosts")
            held = [connect(listener) for _ in range(6)]
            assert all(echoes(s) for s in held)
            wait_until(
                lambda: envoy.active_connections(CLUSTER) == 6, 5, what="6 active upstream connections"
            )
            headers = {"Authorization": f"Bearer {TOKEN}"}
            cooldown = config.params().policy.cooldown_seconds

            def shed(status: str = "firing") -> dict:
                clock[0] += cooldown + 1
                r = client.post(
                    "/alerts", json=payload("shed", status, starts=f"t{clock[0]}"), headers=headers
                )
                assert r.status_code == 200, r.json
                return r.json

            assert shed()["result"] == "shed"  # level 1: hold at 6
            assert envoy.runtime_value(circuit_breaker_key(CLUSTER)) == "6"
            newcomer = connect(listener)
            assert not echoes(newcomer), "a new connection over the cap must be refused (EOF)"
            newcomer.close()
            assert all(echoes(s) for s in held), "held connections must survive shedding"
            for expected in ("5", "4", "3"):  # ceil(6 * 0.8), ceil(6 * 0.6), ceil(6 * 0.4)
                shed()
                assert envoy.runtime_value(circuit_breaker_key(CLUSTER)) == expected
            shed()  # top level: overload hard stop
            assert Path(config.overload_file).read_text().strip() == OVERLOAD_ON
            assert rb.state.shed_level == 5
            time.sleep(0.6)  # overload manager refresh_interval is 0.25 s
            newcomer = connect(listener)
            assert not echoes(newcomer)
            newcomer.close()
            assert all(echoes(s) for s in held)
            metrics = client.get("/metrics").text
            assert "mqttlb_webhook_shed_level 5.0" in metrics
            # resolved: one level per notification/tick, back to no override at all
            assert shed("resolved")["result"] == "unshed"
            assert Path(config.overload_file).read_text().strip() == OVERLOAD_OFF
            levels = [rb.state.shed_level]
            for _ in range(10):
                clock[0] += cooldown + 1
                if rb.tick() is None:
                    break
                levels.append(rb.state.shed_level)
            assert levels == [4, 3, 2, 1, 0]
            assert envoy.runtime_value(circuit_breaker_key(CLUSTER)) is None
            time.sleep(0.6)
            newcomer = connect(listener)
            assert echoes(newcomer), "after shedding is lifted new connections work again"
            newcomer.close()
    finally:
        for s in held:
            s.close()
        upstreams.close()


def test_rest_eds_served_by_waitress_feeds_a_second_envoy(tmp_path):
    topo, config = webhook_stack(tmp_path, eds="rest")
    upstreams = Upstreams(topo.settings.broker_ports)
    port = topo.webhook.port
    app = create_app(config, token=TOKEN)
    server = waitress.create_server(app, host="127.0.0.1", port=port, threads=2)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        # the stack's REST EDS source: the webhook polled every EDS_REFRESH
        with running_envoy(topo):
            envoy = EnvoyAdminClient(topo.envoy_admin.url())
            wait_until(
                lambda: {h.weight for h in envoy.cluster(CLUSTER).by_node().values()} == {100},
                10,
                what="REST EDS snapshot in the second Envoy",
            )
            r = requests.post(
                f"http://127.0.0.1:{port}/drain",
                json={"node": "node2", "draining": True},
                headers={"Authorization": f"Bearer {TOKEN}"},
                timeout=2,
            )
            assert r.status_code == 200
            wait_until(
                lambda: envoy.cluster(CLUSTER).by_node()["node2"].health == "draining",
                10,
                what="DRAINING via REST EDS",
            )
            stats = requests.get(
                topo.envoy_admin.url("/stats"), params={"filter": "update_success"}, timeout=2
            ).text
            assert f"cluster.{CLUSTER}.update_success" in stats

            # the real server (waitress) also enforces the size limit on a chunked body
            def chunks():
                for _ in range(33):
                    yield b"x" * 32768

            big = requests.post(
                f"http://127.0.0.1:{port}/alerts",
                data=chunks(),
                headers={"Authorization": f"Bearer {TOKEN}"},
                timeout=5,
            )
            assert big.status_code == 413
    finally:
        server.close()
        thread.join(timeout=5)
        upstreams.close()
