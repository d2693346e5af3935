"""Test helpers for the rebalancer's HTTP layer and command (tests/test_webhook_app.py, test_webhook_faults.py,
test_webhook_cli.py).

* :func:`config_data`, :func:`make_config`, :func:`write_config` — the webhook config of these tests
  as data, validated, or written for the ``mqttlb webhook`` command;
* :func:`build` — a real :class:`Controller` over fake Envoy/Prometheus adapters (the Protocols of
  ``mqttlb.webhook.controller``) and a real EDS file publisher, a fake clock, and the Flask app;
* :class:`World` — everything a request could change (firing set, controller state and snapshot,
  pending drain wishes, the files), to show that a refused request changes none of it;
* :func:`serving` — the real waitress server with the CLI's settings (``create_webhook_server``)
  on a free loopback port in a thread;
* :class:`HangingPrometheus` — a Prometheus that holds every query until released (at most 30 s).
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import yaml
from flask import Flask
from flask.testing import FlaskClient
from prometheus_client.parser import text_string_to_metric_families

from mqttlb import contract
from mqttlb.brokers.eviction import ClientLoad, EvictResult
from mqttlb.webhook.app import READ_ROUTES, create_app, server_error_hook
from mqttlb.webhook.config import WebhookConfig
from mqttlb.webhook.controller import Controller, LeverError, Snapshot
from mqttlb.webhook.firing import FiringSnapshot
from mqttlb.webhook.levers import EdsFilePublisher
from mqttlb.webhook.metrics import WebhookMetrics
from mqttlb.webhook.plan import Observation
from mqttlb.webhook.policy import NodeSample
from mqttlb.webhook.server import create_webhook_server
from mqttlb.webhook.shedding import ShedPlan

TOKEN = "http-layer-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
CLUSTER = "lab"
NODES = ("node1", "node2", "node3")
T0 = 1_800_000_000.0
ZERO = "0001-01-01T00:00:00Z"  # Alertmanager's endsAt of a firing alert


class Clock:
    """A fake clock (Unix seconds) the controller and the app read."""

    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class FakeCluster:
    """Observer of the Protocol: every node fresh, ``cpu`` per node (0..1); Envoy applies whatever
    the EDS file holds (as path-based EDS does), read back from the file."""

    def __init__(self, eds_path: Path, cpu: Mapping[str, float] | None = None) -> None:
        self.eds_path = eds_path
        self.cpu = dict(cpu or {n: 0.5 for n in NODES})
        self.observed = 0

    def observe(self, now: float) -> Observation:
        self.observed += 1
        samples = {n: NodeSample(cpu=c, connections=100.0, age_seconds=1.0) for n, c in self.cpu.items()}
        return Observation(samples=samples, fast_cpu={}, active_connections=300, cluster_connections=300.0)

    def applied_weights(self) -> dict[str, int]:
        try:
            document = json.loads(self.eds_path.read_text())
        except OSError as exc:
            raise LeverError("envoy_unreachable", str(exc)) from exc
        endpoints = document["resources"][0]["endpoints"][0]["lb_endpoints"]
        return {e["endpoint"]["hostname"]: e["load_balancing_weight"] for e in endpoints}


class FakeShedLever:
    def __init__(self) -> None:
        self.plans: list[ShedPlan] = []

    def apply(self, plan: ShedPlan) -> None:
        self.plans.append(plan)


def config_data(tmp_path: Path, node_names: Sequence[str] = NODES, **overrides: Any) -> dict[str, Any]:
    """The webhook config of these tests as YAML would hold it: files under ``tmp_path``, the nodes
    ``node_names`` on 127.0.0.1:18831..., Envoy admin and Prometheus on a closed port; ``overrides`` replace keys."""
    return {
        "cluster": CLUSTER,
        "envoy_admin": "http://127.0.0.1:9",  # unused by the fakes; a closed port for the real adapters
        "prometheus_url": "http://127.0.0.1:9",
        "eds_path": str(tmp_path / "eds" / "eds.json"),
        "overload_file": str(tmp_path / "envoy" / "pressure"),
        "state_file": str(tmp_path / "webhook" / "state.json"),
        "audit_log": str(tmp_path / "webhook" / "audit.jsonl"),
        "nodes": [{"name": n, "host": "127.0.0.1", "port": 18830 + i} for i, n in enumerate(node_names, start=1)],
        "http_timeout_seconds": 1.0,
        **overrides,
    }


def make_config(tmp_path: Path, **overrides: Any) -> WebhookConfig:
    """:func:`config_data` validated (pydantic ``ValidationError`` for a bad override)."""
    return WebhookConfig.model_validate(config_data(tmp_path, **overrides))


def write_config(tmp_path: Path, **overrides: Any) -> Path:
    """:func:`config_data` as ``tmp_path/webhook.yaml`` for the ``mqttlb webhook`` command, with the
    token file ``tmp_path/token`` (``TOKEN``) beside it; returns the YAML file's path."""
    token = tmp_path / "token"
    token.write_text(TOKEN)
    path = tmp_path / "webhook.yaml"
    path.write_text(yaml.safe_dump(config_data(tmp_path, token_file=str(token), **overrides)))
    return path


@dataclass(frozen=True)
class World:
    """Everything a request could change.  Equal worlds: the request changed nothing."""

    firing: FiringSnapshot
    state: dict[str, Any]
    snapshot: Snapshot | None
    drain_wishes: dict[str, bool]
    files: dict[str, bytes | None]


@dataclass
class Harness:
    config: WebhookConfig
    controller: Controller
    app: Flask
    clock: Clock
    cluster: FakeCluster
    shed: FakeShedLever
    wakes: list[float] = field(default_factory=list)

    @property
    def client(self) -> FlaskClient:
        return self.app.test_client()

    def world(self) -> World:
        paths = [self.config.eds_path, self.config.state_file, self.config.audit_log, self.config.overload_file]
        return World(
            firing=self.controller.firing.snapshot(),
            state=self.controller.state.model_dump(),
            snapshot=self.controller.snapshot,
            drain_wishes=dict(self.controller._drains),  # the wishes the next pass would publish
            files={str(p): (Path(p).read_bytes() if Path(p).exists() else None) for p in paths},
        )

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        return metric_samples(self.client.get("/metrics").get_data(as_text=True))

    def rejected(self, route: str, reason: str) -> float:
        return self.metrics()[(contract.WEBHOOK_REJECTED, (("reason", reason), ("route", route)))]

    def failures(self, kind: str, reason: str) -> float:
        return self.metrics()[(contract.WEBHOOK_FAILURES, (("kind", kind), ("reason", reason)))]

    def eds_health(self) -> dict[str, str]:
        document = json.loads(Path(self.config.eds_path).read_text())
        return {
            e["endpoint"]["hostname"]: e["health_status"]
            for e in document["resources"][0]["endpoints"][0]["lb_endpoints"]
        }


def build(tmp_path: Path, *, start: bool = True, cpu: Mapping[str, float] | None = None, **overrides: Any) -> Harness:
    """A controller over fakes (no pass run yet), started unless ``start`` is False, and its app."""
    config = make_config(tmp_path, **overrides)
    clock = Clock()
    cluster = FakeCluster(Path(config.eds_path), cpu)
    shed = FakeShedLever()
    publisher = EdsFilePublisher(Path(config.eds_path))
    controller = Controller(config, observer=cluster, publisher=publisher, shed_lever=shed, clock=clock)
    # the read routes open: these tests are about other things (tests/test_webhook_auth.py guards them)
    app = create_app(controller, TOKEN, config.max_body_bytes, open_routes=READ_ROUTES.values())
    harness = Harness(config, controller, app, clock, cluster, shed)
    wake = controller.wake

    def counting_wake() -> None:
        harness.wakes.append(clock())
        wake()

    controller.wake = counting_wake  # type: ignore[method-assign]
    if start:
        controller.start()
    return harness


def metric_samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """``/metrics`` text as {(sample name, sorted labels): value}."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def alert(
    alertname: str = contract.ALERT_CPU_HIGH,
    node: str | None = "node1",
    *,
    action: str = contract.Action.REBALANCE.value,
    status: str = "firing",
    starts_at: str = "2027-01-15T08:00:00.123456789Z",
    ends_at: str = ZERO,
    fingerprint: str = "",
    **labels: str,
) -> dict[str, Any]:
    all_labels = {
        contract.ALERTNAME_LABEL: alertname,
        contract.ACTION_LABEL: action,
        contract.CLUSTER_LABEL: CLUSTER,
        "severity": "warning",
        **({contract.NODE_LABEL: node} if node is not None else {}),
        **labels,
    }
    return {
        "status": status,
        "labels": all_labels,
        "annotations": {"summary": f"{alertname} {node}"},
        "startsAt": starts_at,
        "endsAt": ends_at,
        "generatorURL": "http://127.0.0.1:9090/graph",
        "fingerprint": fingerprint,
    }


def notification(*alerts: dict[str, Any], **changes: Any) -> dict[str, Any]:
    """A webhook payload (version 4) as Alertmanager 0.25 sends it."""
    alerts = alerts or (alert(),)
    status = "firing" if any(a["status"] == "firing" for a in alerts) else "resolved"
    names = sorted({a["labels"][contract.ALERTNAME_LABEL] for a in alerts})
    payload = {
        "version": "4",
        "groupKey": f'{{}}:{{alertname="{names[0]}"}}',
        "truncatedAlerts": 0,
        "status": status,
        "receiver": "mqttlb-webhook",
        "groupLabels": {contract.ALERTNAME_LABEL: names[0]},
        "commonLabels": {},
        "commonAnnotations": {},
        "externalURL": "http://127.0.0.1:9093",
        "alerts": list(alerts),
    }
    payload.update(changes)
    return payload


@contextlib.contextmanager
def serving(app: Flask, metrics: WebhookMetrics, max_body_bytes: int) -> Iterator[tuple[str, int]]:
    """The real waitress server with the CLI's settings on a free loopback port, in a thread;
    yields (base URL, port)."""
    server = create_webhook_server(
        app,
        "127.0.0.1",
        0,
        max_body_bytes=max_body_bytes,
        on_error=server_error_hook(metrics, max_body_bytes),
    )
    thread = threading.Thread(target=server.run, name="waitress", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.port}", server.port
    finally:
        server.close()
        thread.join(timeout=5)


class HangingPrometheus:
    """Answers ``/api/v1/query`` with an empty vector, but only once ``release`` is set (at most
    ``hold_seconds``).  ``queried`` is set when the first query arrives."""

    def __init__(self, hold_seconds: float = 30.0) -> None:
        self.queried = threading.Event()
        self.release = threading.Event()
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                stub.queried.set()
                stub.release.wait(hold_seconds)
                data = json.dumps({"status": "success", "data": {"resultType": "vector", "result": []}}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (http.server's name)
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> HangingPrometheus:
        threading.Thread(target=self.server.serve_forever, daemon=True, name="hanging-prometheus").start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


class FakeEvictionSide:
    """A node's eviction side for controller tests: ``count`` light publishers (no persistent session);
    evicts whatever it is asked and records it."""

    shared_sessions = False

    def __init__(self, count: int = 200) -> None:
        self.count = count
        self.evicted: list[str] = []

    def clients(self) -> list[ClientLoad]:
        return [
            ClientLoad(f"c{i}", 1.0, 64.0, False, 4, 60.0) for i in range(self.count) if f"c{i}" not in self.evicted
        ]

    def evict(self, client_ids: Sequence[str], **_bounds: object) -> EvictResult:
        self.evicted += client_ids
        return EvictResult(tuple(client_ids), (), (), "ok")
