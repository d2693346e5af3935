"""Test helpers for the rebalancer against real processes (issue 13's live and fault tests).

Everything runs the way the native stack runs it, on free loopback ports:

* brokers: real Mosquitto with the stack's own config (``mqttlb.stack.render.mosquitto_config``);
* Envoy: the product bootstrap (``stackutil.running_envoy``), MQTT health check included;
* the rebalancer: ``python -m mqttlb.cli webhook --config <webhook.yaml>`` built by
  ``mqttlb.stack.builders.webhook_config``, only the Prometheus/Alertmanager URLs pointed at stubs.

Only Prometheus and Alertmanager are stubs: :class:`PrometheusStub` answers the controller's one
observation query (``mqttlb.webhook.observe.observation_query``, any other query is an API error)
with values the test sets; :class:`AlertmanagerStub` serves ``GET /api/v2/alerts``.

Every wait is bounded (``stackutil.wait_until``), every process is stopped when its block ends.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import paho.mqtt.client as mqtt
import requests
import yaml
from prometheus_client.parser import text_string_to_metric_families
from stackutil import free_port, loopback_topology, process, wait_until

from mqttlb import contract
from mqttlb.envoy_admin import EnvoyAdminClient
from mqttlb.params import load_params
from mqttlb.rulegen import cpu_rate_window
from mqttlb.stack import builders
from mqttlb.stack.ephemeral import FAST_PARAMS
from mqttlb.stack.render import mosquitto_config
from mqttlb.stack.topology import EdsSource, Topology, topology
from mqttlb.webhook.eds import CLA_TYPE
from mqttlb.webhook.observe import PART_LABEL, PARTS, observation_query

TOKEN = "issue13-live-token-0123456789"
XDS_TOKEN = "issue18-xds-token-0123456789"  # the xDS streams' own token (xds_token_file)
CLUSTER = "local"
NODES = ("node1", "node2", "node3")
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def params_with(policy: Mapping[str, Any] | None = None, **top: Any) -> dict[str, Any]:
    """FAST_PARAMS with ``policy`` keys and top-level keys replaced."""
    merged: dict[str, Any] = {**FAST_PARAMS, **top}
    merged["policy"] = {**FAST_PARAMS.get("policy", {}), **(policy or {})}
    return merged


# --------------------------------------------------------------------------- stubs
class _StubServer:
    """A ThreadingHTTPServer on a free loopback port answering with ``self.answer(method, path, query)``.

    ``requests`` records every (method, path) it was asked for.
    """

    def __init__(self) -> None:
        stub = self
        self.requests: list[tuple[str, str]] = []

        class Handler(BaseHTTPRequestHandler):
            def _reply(self) -> None:
                parsed = urlparse(self.path)
                stub.requests.append((self.command, parsed.path))
                status, body, content_type = stub.answer(self.command, parsed.path, parse_qs(parsed.query))
                data = body if isinstance(body, bytes) else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = _reply
            do_POST = _reply

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def answer(self, method: str, path: str, query: dict[str, list[str]]) -> tuple[int, Any, str]:
        """(HTTP status, body: bytes or JSON-able, content type)."""
        return 404, {"error": "not found"}, "application/json"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class PrometheusStub(_StubServer):
    """``/api/v1/query`` for the controller's observation query, per-node values set by the test.

    ``cpu``/``fast``: utilisation 0..1 (rate window / short window); ``connections``: MQTT
    connections the broker reports; ``up``: 1 or 0.  A node missing from a map has no series.
    Samples are always fresh (``timestamp()`` answers now).  ``queries`` counts the answers.
    """

    def __init__(
        self, cluster: str = CLUSTER, nodes: tuple[str, ...] = NODES, params: Mapping[str, Any] | None = None
    ) -> None:
        # the webhook under test asks over its own parameters' CPU window (FAST_PARAMS unless given)
        cpu_window = cpu_rate_window(load_params(dict(params if params is not None else FAST_PARAMS)))
        self.expected = observation_query(cluster, cpu_window=cpu_window)
        self.cluster = cluster
        self.lock = threading.Lock()
        self.values: dict[str, dict[str, float]] = {
            "cpu": dict.fromkeys(nodes, 0.3),
            "fast": dict.fromkeys(nodes, 0.3),
            "connections": dict.fromkeys(nodes, 0.0),
            "connections_window": {},  # none: the policy uses the CPU as measured
            "up": dict.fromkeys(nodes, 1.0),
            "connects": {"": 0.0},  # per cluster: one series without a node label
        }
        self.queries = 0
        super().__init__()

    def set(self, **values: Mapping[str, float]) -> None:
        """Replace whole maps: ``set(cpu={...}, fast={...}, connections={...}, up={...})``."""
        unknown = set(values) - set(self.values)
        if unknown:
            raise KeyError(f"unknown stub series {sorted(unknown)}")
        with self.lock:
            for name, per_node in values.items():
                self.values[name] = dict(per_node)

    def vector(self) -> list[dict[str, Any]]:
        now = time.time()
        with self.lock:
            values = {k: dict(v) for k, v in self.values.items()}
        sources = {
            "cpu": (contract.NODE_CPU, values["cpu"]),
            "cpu_timestamp": (None, dict.fromkeys(values["cpu"], now)),
            "connections": (contract.NODE_CONNECTIONS, values["connections"]),
            "connections_window": (None, values["connections_window"]),
            "cpu_fast": (contract.NODE_CPU_FAST, values["fast"]),
            "up": (contract.BROKER_UP, values["up"]),
            "connects": (contract.CLUSTER_CONNECTS_RATE, values["connects"]),
        }
        assert set(sources) == set(PARTS), "the stub must answer every part of the observation query"
        result = []
        for part, (name, per_node) in sources.items():
            for node, value in per_node.items():
                labels = {contract.CLUSTER_LABEL: self.cluster, PART_LABEL: part}
                if node:
                    labels[contract.NODE_LABEL] = node
                if name is not None:
                    labels["__name__"] = name
                result.append({"metric": labels, "value": [now, repr(float(value))]})
        return result

    def answer(self, method: str, path: str, query: dict[str, list[str]]) -> tuple[int, Any, str]:
        if method != "GET" or path != "/api/v1/query" or query.get("query") != [self.expected]:
            error = {"status": "error", "errorType": "bad_data", "error": f"stub: unexpected {path} {query}"}
            return 400, error, "application/json"
        with self.lock:
            self.queries += 1
        return 200, {"status": "success", "data": {"resultType": "vector", "result": self.vector()}}, "application/json"


class AlertmanagerStub(_StubServer):
    """``GET /api/v2/alerts``: the alerts in ``self.alerts`` (gettableAlert objects)."""

    def __init__(self) -> None:
        self.alerts: list[dict[str, Any]] = []
        super().__init__()

    def answer(self, method: str, path: str, query: dict[str, list[str]]) -> tuple[int, Any, str]:
        if method != "GET" or path != "/api/v2/alerts":
            return 404, {"error": "not found"}, "application/json"
        return 200, list(self.alerts), "application/json"


class FlakyEnvoyAdmin(_StubServer):
    """A proxy in front of the real Envoy admin that answers some requests with an HTML page.

    ``garbage(method, path, n)`` (``n``: how many requests of that method and path came before)
    picks the requests that get ``200 text/html`` instead of Envoy's answer, which is what a
    misrouted admin port or a proxy's error page looks like.  ``garbage_answers`` counts them.
    """

    def __init__(self, real_admin: str) -> None:
        self.real_admin = real_admin.rstrip("/")
        self.garbage: Callable[[str, str, int], bool] = lambda _method, _path, _n: False
        self.garbage_answers = 0
        self._seen: dict[tuple[str, str], int] = {}
        self._lock = threading.Lock()
        super().__init__()

    def answer(self, method: str, path: str, query: dict[str, list[str]]) -> tuple[int, Any, str]:
        with self._lock:
            n = self._seen.get((method, path), 0)
            self._seen[(method, path)] = n + 1
            bad = self.garbage(method, path, n)
            self.garbage_answers += bad
        if bad:
            return 200, b"<html><body>502 Bad Gateway</body></html>", "text/html"
        url = f"{self.real_admin}{path}"
        response = requests.request(method, url, params=query, timeout=2)
        return response.status_code, response.content, response.headers.get("Content-Type", "text/plain")


# --------------------------------------------------------------------------- alerts
def alert(
    alertname: str,
    action: contract.Action,
    status: str = "firing",
    starts_at: str = "2026-11-30T12:00:00Z",
    ends_at: str = "0001-01-01T00:00:00Z",
    node: str | None = None,
    **extra_labels: str,
) -> dict[str, Any]:
    """One alert of a webhook notification (no fingerprint: the webhook derives Alertmanager's)."""
    labels = {"alertname": alertname, contract.ACTION_LABEL: action.value, contract.CLUSTER_LABEL: CLUSTER}
    if node is not None:
        labels[contract.NODE_LABEL] = node
    labels.update(extra_labels)
    return {"status": status, "labels": labels, "annotations": {}, "startsAt": starts_at, "endsAt": ends_at}


def notification(alerts: list[dict[str, Any]], group: str) -> dict[str, Any]:
    """An Alertmanager v4 webhook notification of one group."""
    status = "firing" if any(a["status"] == "firing" for a in alerts) else "resolved"
    return {
        "version": "4",
        "groupKey": f'{{}}:{{alertname="{group}"}}',
        "truncatedAlerts": 0,
        "status": status,
        "receiver": "mqttlb-webhook",
        "groupLabels": {"alertname": group},
        "commonLabels": {},
        "commonAnnotations": {},
        "externalURL": "http://127.0.0.1:9093",
        "alerts": alerts,
    }


def api_alert(labelled: dict[str, Any]) -> dict[str, Any]:
    """The /api/v2/alerts (gettableAlert) form of :func:`alert`'s output, still firing."""
    return {
        "labels": labelled["labels"],
        "annotations": {},
        "startsAt": labelled["startsAt"],
        "endsAt": "2099-01-01T00:00:00Z",
        "updatedAt": labelled["startsAt"],
        "fingerprint": "",
        "receivers": [{"name": "mqttlb-webhook"}],
        "status": {"state": "active", "silencedBy": [], "inhibitedBy": []},
    }


# --------------------------------------------------------------------------- brokers
class Brokers:
    """The topology's Mosquitto nodes, each with the stack's own config; any can be stopped and started."""

    def __init__(self, topo: Topology) -> None:
        self.topo = topo
        self._running: dict[str, contextlib.ExitStack] = {}

    def start(self, name: str, timeout: float = 10.0) -> None:
        node = next(n for n in self.topo.nodes if n.name == name)
        paths = self.topo.state
        (paths.mosquitto_dir(name) / "data").mkdir(parents=True, exist_ok=True)
        paths.mosquitto_conf(name).write_text(mosquitto_config(self.topo, node))
        stack = contextlib.ExitStack()
        proc = stack.enter_context(
            process(["mosquitto", "-c", str(paths.mosquitto_conf(name))], paths.logs / f"mosquitto-{name}.log")
        )
        self._running[name] = stack

        def accepts() -> str | bool:
            if proc.poll() is not None:
                return "exited"
            with socket.create_connection((node.host, node.port), timeout=0.3):
                return True

        try:
            if wait_until(accepts, timeout, f"mosquitto {name} on {node.port}") == "exited":
                raise AssertionError(f"mosquitto {name} exited with {proc.returncode}")
        except BaseException:
            stack.close()
            del self._running[name]
            raise

    def stop(self, name: str) -> None:
        self._running.pop(name).close()

    def __enter__(self) -> Brokers:
        try:
            for node in self.topo.nodes:
                self.start(node.name)
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for name in list(self._running):
            self.stop(name)


# --------------------------------------------------------------------------- the rebalancer
def rig_topology(root: Path, eds: EdsSource = "file", **params: Any) -> Topology:
    """3 nodes on free loopback ports, scrape interval 1 s (a pass every 0.5 s), ``params_with(**params)``."""
    topo = loopback_topology(
        root / "state", nodes=len(NODES), eds=eds, scrape_interval="1s", params=params_with(**params)
    )
    assert tuple(n.name for n in topo.nodes) == NODES
    return topo


def rest_eds_topology(topo: Topology, root: Path) -> Topology:
    """A second Envoy beside ``topo``'s: own listener, admin port and state dir, endpoints from the
    same webhook over REST EDS (the compose stack's ``eds`` switch)."""
    ports = topo.settings.ports.model_copy(update={"envoy_listener": free_port(), "envoy_admin": free_port()})
    settings = topo.settings.model_copy(update={"state_dir": root, "ports": ports})
    return topology(settings, dataclasses.replace(topo.switches, eds="rest"))


def write_webhook_config(topo: Topology, **overrides: Any) -> Path:
    """The stack's webhook.yaml for ``topo`` with ``overrides`` (e.g. ``prometheus_url``) and the token file."""
    topo.state.webhook_dir.mkdir(parents=True, exist_ok=True)
    topo.state.webhook_token.write_text(TOKEN + "\n")
    topo.state.xds_token.parent.mkdir(parents=True, exist_ok=True)
    topo.state.xds_token.write_text(XDS_TOKEN + "\n")  # read with eds=grpc / delta-grpc
    config = {**builders.webhook_config(topo), "alertmanager_urls": [], **overrides}
    path = topo.files.webhook_config
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def webhook_argv(topo: Topology) -> list[str]:
    """How the native stack starts the rebalancer (``mqttlb.stack.render.programs``)."""
    return [sys.executable, "-m", "mqttlb.cli", *builders.webhook_args(topo)]


def is_ready(topo: Topology) -> bool:
    return requests.get(topo.webhook.url("/readyz"), timeout=1).status_code == 200


@contextlib.contextmanager
def running_webhook(
    topo: Topology, log: Path | None = None, timeout: float = 30.0, argv_prefix: tuple[str, ...] = ()
) -> Iterator[subprocess.Popen[bytes]]:
    """``mqttlb webhook`` on ``topo`` (config written by :func:`write_webhook_config`) until the block ends.

    Yields once ``/readyz`` answers 200; AssertionError with the end of its log if it does not.
    ``argv_prefix`` runs it under a wrapper (``setpriv``, ``unshare``).
    """
    log = log or topo.state.logs / "webhook.log"
    with process([*argv_prefix, *webhook_argv(topo)], log) as proc:

        def ready() -> str | bool:
            return "exited" if proc.poll() is not None else is_ready(topo)

        try:
            if wait_until(ready, timeout, "webhook ready") == "exited":
                raise AssertionError(f"webhook exited with {proc.returncode}")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{log.read_text()[-3000:]}") from None
        yield proc


def sigkill(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL the process group and reap the leader."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)


def post_alerts(topo: Topology, body: dict[str, Any]) -> dict[str, Any]:
    response = requests.post(topo.webhook.url("/alerts"), json=body, headers=AUTH, timeout=5)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def post_drain(topo: Topology, node: str, draining: bool) -> None:
    response = requests.post(
        topo.webhook.url("/drain"), json={"node": node, "draining": draining}, headers=AUTH, timeout=5
    )
    assert response.status_code == 202, response.text


def status(topo: Topology) -> dict[str, Any]:
    result: dict[str, Any] = requests.get(topo.webhook.url("/status"), headers=AUTH, timeout=2).json()
    return result


def metric_samples(topo: Topology) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """The webhook's /metrics as {(sample name, sorted labels): value}."""
    text = requests.get(topo.webhook.url("/metrics"), headers=AUTH, timeout=2).text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def failures(topo: Topology, kind: str, reason: str) -> float:
    key = (contract.WEBHOOK_FAILURES, (("kind", kind), ("reason", reason)))
    return metric_samples(topo)[key]


def audit(topo: Topology) -> list[dict[str, Any]]:
    path = topo.state.webhook_audit
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# --------------------------------------------------------------------------- what each place holds
@dataclass(frozen=True)
class View:
    """One place's idea of the published snapshot: version, weights and draining nodes."""

    where: str
    version: int
    weights: dict[str, int]
    draining: tuple[str, ...] = field(default=())


def view_of_discovery(where: str, document: Mapping[str, Any]) -> View:
    """A DiscoveryResponse (EDS file or REST EDS) as a View."""
    assert document["type_url"] == CLA_TYPE, document
    (cla,) = document["resources"]
    endpoints = [e for group in cla["endpoints"] for e in group["lb_endpoints"]]
    weights = {e["endpoint"]["hostname"]: int(e["load_balancing_weight"]) for e in endpoints}
    draining = tuple(sorted(e["endpoint"]["hostname"] for e in endpoints if e.get("health_status") == "DRAINING"))
    return View(where, int(document["version_info"]), weights, draining)


def eds_file_text(topo: Topology) -> str:
    return topo.state.eds_file.read_text()


def eds_file_view(topo: Topology) -> View:
    return view_of_discovery("eds file", json.loads(eds_file_text(topo)))


def state_view(path: Path) -> View:
    document = json.loads(path.read_text())
    return View("state file", int(document["version"]), dict(document["weights"]), tuple(sorted(document["draining"])))


def rest_eds_view(topo: Topology) -> View:
    response = requests.post(
        topo.webhook.url("/v3/discovery:endpoints"),
        json={"type_url": CLA_TYPE, "resource_names": [topo.settings.envoy_cluster]},
        headers=AUTH,
        timeout=2,
    )
    assert response.status_code == 200, response.text
    return view_of_discovery("REST EDS", response.json())


def envoy_eds_version(topo: Topology) -> int:
    """The version_info of the EDS update Envoy applied last (its ``cluster.<name>.version_text`` readout)."""
    name = f"cluster.{topo.settings.envoy_cluster}.version_text"
    text = requests.get(topo.envoy_admin.url("/stats"), params={"filter": f"^{re.escape(name)}$"}, timeout=2).text
    values = [line.partition(": ")[2].strip().strip('"') for line in text.splitlines() if line.startswith(f"{name}: ")]
    assert len(values) == 1, f"Envoy has no {name}: {text[:300]!r}"
    return int(values[0])


def envoy_view(topo: Topology) -> View:
    """What Envoy applies: /clusters weights and health, and the EDS version it last accepted."""
    admin = EnvoyAdminClient(topo.envoy_admin.url())
    version = envoy_eds_version(topo)
    hosts = admin.cluster(topo.settings.envoy_cluster).by_node()
    draining = tuple(sorted(n for n, h in hosts.items() if h.health == "draining"))
    if version != envoy_eds_version(topo):  # an update landed between the two reads
        raise AssertionError("Envoy's EDS version moved while reading it")
    return View("Envoy", version, {n: h.weight for n, h in hosts.items()}, draining)


def envoy_health(topo: Topology) -> dict[str, str]:
    return {
        n: h.health
        for n, h in EnvoyAdminClient(topo.envoy_admin.url()).cluster(topo.settings.envoy_cluster).by_node().items()
    }


# --------------------------------------------------------------------------- MQTT clients through Envoy
class MqttSession:
    """One paho client connected (CONNACK 0) to ``port``; :meth:`roundtrip` proves it still carries data."""

    def __init__(self, port: int, client_id: str, timeout: float = 3.0) -> None:
        self.client_id = client_id
        self.connected = threading.Event()
        self.received = threading.Event()
        self.reason: Any = None
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id)
        self.client.on_connect = self._on_connect
        self.client.on_message = lambda _c, _u, _m: self.received.set()
        self.client.connect("127.0.0.1", port, keepalive=30)
        self.client.loop_start()
        if not self.connected.wait(timeout) or self.reason is None or self.reason.is_failure:
            self.close()
            raise ConnectionError(f"{client_id}: no CONNACK 0 within {timeout}s (reason {self.reason})")
        self.client.subscribe(f"mqttlb-test/{client_id}", qos=1)

    def _on_connect(self, _client: Any, _userdata: Any, _flags: Any, reason: Any, _props: Any) -> None:
        self.reason = reason
        self.connected.set()

    def roundtrip(self, timeout: float = 3.0) -> bool:
        """Publish to its own topic and wait for the message to come back through Envoy and the broker."""
        self.received.clear()
        if not self.client.is_connected():
            return False
        self.client.publish(f"mqttlb-test/{self.client_id}", b"ping", qos=1)
        return self.received.wait(timeout)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.client.disconnect()
        self.client.loop_stop()


def connects(port: int, client_id: str, timeout: float = 3.0) -> bool:
    """True when a fresh MQTT session through ``port`` gets CONNACK 0."""
    try:
        session = MqttSession(port, client_id, timeout)
    except (ConnectionError, OSError):
        return False
    session.close()
    return True


def bounded_poll(check: Callable[[], bool], timeout: float, interval: float = 0.05) -> float | None:
    """Seconds until ``check()`` was first true, or None after ``timeout`` (exceptions count as false)."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        try:
            if check():
                return time.monotonic() - started
        except Exception:  # noqa: BLE001 (a process still starting)
            pass
        time.sleep(interval)
    return None
