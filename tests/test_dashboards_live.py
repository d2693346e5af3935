"""Every dashboard query returns data from the live stack, and `render` draws the dashboards.

The stack is driven into each state a panel shows: MQTT clients connect through Envoy's listener
and publish (brokers, Envoy endpoints, recording rules); the webhook takes page notifications
(fast-path latency), drains and undrains a node (actions, pass latency, the actions annotation)
and refuses unauthenticated requests (rejections).
Two panels show events a healthy stack must not produce on demand (an alert, a failed action);
they may be empty only while their source confirms there is nothing to show.
"""

from __future__ import annotations

import datetime as dt
import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
import requests
from stackutil import prometheus_api, web_auth, webhook_headers

from mqttlb import contract
from mqttlb.dashboards import cli
from mqttlb.dashboards.build import GENERATED_DIR
from mqttlb.dashboards.common import ALERTNAME_REGEX
from mqttlb.dashboards.execute import (
    PanelResult,
    Window,
    load_dashboards,
    resolve_dashboard,
    run_annotations,
    run_panels,
)
from mqttlb.dashboards.resolve import parse_duration
from mqttlb.stack.runner import Stack

pytestmark = pytest.mark.live

CLIENTS_PER_NODE = 2
MAX_CLIENTS_PER_NODE = 5
PUBLISH_SECONDS = 4.0
PUBLISH_INTERVAL = 0.02  # 50 messages/s per client: enough CPU to see, modest on shared cores
DATA_DEADLINE_SECONDS = 90.0
RANGE = "5m"
ALERTS_PANEL = "mqttlb-rebalancer / Alert states"
FAILURES_PANEL = "mqttlb-rebalancer / Action failures"


def _client(port: int, name: str) -> mqtt.Client:
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"dash-{name}-{uuid.uuid4().hex[:6]}")
    client.connect("127.0.0.1", port, keepalive=30)
    client.loop_start()
    return client


def _active_per_node(stack: Stack) -> dict[str, int]:
    return {host.node: host.cx_active for host in stack.envoy_hosts()}


def _connect_clients(stack: Stack) -> list[mqtt.Client]:
    """Connect through Envoy until every node holds a client.

    Bounded: if Envoy's spread leaves a node empty after MAX_CLIENTS_PER_NODE clients per node,
    that node gets one client directly (printed), because the "most / fewest connections" rule
    has no value while any node has zero connections.
    """
    cfg = stack.cfg
    clients: list[mqtt.Client] = []
    try:
        for i in range(MAX_CLIENTS_PER_NODE * cfg.nodes):
            clients.append(_client(cfg.ports.envoy_listener, str(i)))
            if len(clients) >= CLIENTS_PER_NODE * cfg.nodes and _every_node_reached(stack, clients):
                return clients
        active = _active_per_node(stack)
        print(f"Envoy spread {len(clients)} clients as {active}; topping up empty nodes directly")
        for node, port in zip(cfg.node_names, cfg.broker_ports, strict=True):
            if active.get(node, 0) == 0:
                clients.append(_client(port, f"direct-{node}"))
        return clients
    except BaseException:
        _disconnect(clients)
        raise


def _every_node_reached(stack: Stack, clients: list[mqtt.Client]) -> bool:
    deadline = time.monotonic() + 10
    while not all(c.is_connected() for c in clients):
        assert time.monotonic() < deadline, "MQTT clients did not connect through Envoy"
        time.sleep(0.05)
    active = _active_per_node(stack)
    return all(active.get(node, 0) > 0 for node in stack.cfg.node_names)


def _disconnect(clients: list[mqtt.Client]) -> None:
    for client in clients:
        client.disconnect()
        client.loop_stop()


def _publish(clients: list[mqtt.Client], seconds: float) -> int:
    sent = 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        for i, client in enumerate(clients):
            client.publish(f"dashboards/live/{i}", b"x" * 64, qos=0)
            sent += 1
        time.sleep(PUBLISH_INTERVAL)
    return sent


def _page_notification(tag: str) -> dict:
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    labels = {
        "alertname": "MqttBrokerDown",
        "action": "page",
        "severity": "critical",
        "node": "dashboards-test",
    }
    return {
        "version": "4",
        "groupKey": f"dashboards-live-{tag}",
        "status": "firing",
        "receiver": "mqttlb-page",
        "groupLabels": {"action": "page"},
        "commonLabels": labels,
        "alerts": [{"status": "firing", "labels": labels, "startsAt": now, "fingerprint": f"dash{tag}"}],
    }


def _drive_webhook(stack: Stack) -> None:
    """Refused requests (no token), accepted page alerts and two real actions: drain the last node, then undrain it."""
    base = f"http://127.0.0.1:{stack.cfg.ports.webhook}"
    token = Path(stack.paths.webhook_token).read_text().strip()
    node = stack.cfg.node_names[-1]
    for attempt, draining in enumerate((True, False)):  # a few scrapes apart, so increase() sees each
        refused = requests.post(f"{base}/alerts", json=_page_notification(f"unauth{attempt}"), timeout=5)
        assert refused.status_code == 401, refused.text
        noted = requests.post(  # a page alert: taken by the fast path (timed), no lever moves
            f"{base}/alerts",
            json=_page_notification(uuid.uuid4().hex[:8]),
            headers={"Authorization": f"Bearer {token}"},
            timeout=5,
        )
        assert noted.status_code == 200, noted.text
        accepted = requests.post(
            f"{base}/drain",
            json={"node": node, "draining": draining},
            headers={"Authorization": f"Bearer {token}"},
            timeout=5,
        )
        assert accepted.status_code == 202, accepted.text
        time.sleep(3 * parse_duration(stack.cfg.scrape_interval))


@pytest.fixture(scope="module")
def loaded_stack(live_stack: Stack) -> Iterator[Stack]:
    """The live stack with clients connected on every node (held during the test) and recent load."""
    clients = _connect_clients(live_stack)
    try:
        assert _publish(clients, PUBLISH_SECONDS) > 0
        _drive_webhook(live_stack)
        yield live_stack
    finally:
        _disconnect(clients)


def _variables(stack: Stack) -> dict[str, list[str]]:
    cfg = stack.cfg
    return {"cluster": [cfg.cluster], "node": list(cfg.node_names), "envoy_cluster": [cfg.envoy_cluster]}


def _query_all(stack: Stack) -> tuple[list[PanelResult], list[tuple[str, str]]]:
    """Run every panel and annotation query; returns the results and (annotation, problem) pairs.

    cluster, node and envoy_cluster are the stack's; job and instance keep the defaults saved in the
    JSON (no override, no discovery), which must be jobs this Prometheus scrapes.
    """
    cfg = stack.cfg
    prom = prometheus_api(stack, timeout=10)
    window = Window.last(parse_duration(RANGE), parse_duration(cfg.scrape_interval))
    scraped = set(prom.label_values("up", "job", window.start, window.end))
    results: list[PanelResult] = []
    annotation_problems = []
    for _path, dashboard in load_dashboards(GENERATED_DIR):
        variables, panels = resolve_dashboard(dashboard, window, _variables(stack))
        jobs, instances = variables["job"], variables["instance"]
        assert jobs.values and set(jobs.values) <= scraped, f"job defaults {jobs.values}, scraped {sorted(scraped)}"
        assert instances.formatted() == ".+", instances
        results += run_panels(prom, panels, window)
        for name, found, error in run_annotations(prom, dashboard, variables, window):
            if error or not found:
                annotation_problems.append((f"{dashboard['uid']} / {name}", error or "no data"))
    return results, annotation_problems


def _active_mqttlb_alerts(stack: Stack) -> list[str]:
    url = f"http://127.0.0.1:{stack.cfg.ports.prometheus}/api/v1/alerts"
    body = requests.get(url, auth=web_auth(stack), timeout=5).json()
    return [
        a["labels"]["alertname"]
        for a in body["data"]["alerts"]
        if re.fullmatch(ALERTNAME_REGEX, a["labels"]["alertname"])
    ]


def _webhook_failure_samples(stack: Stack) -> list[str]:
    url = f"http://127.0.0.1:{stack.cfg.ports.webhook}/metrics"
    text = requests.get(url, headers=webhook_headers(stack), timeout=5).text
    assert f"# TYPE {contract.WEBHOOK_FAILURES} counter" in text, (
        "the webhook no longer exports its failure counter"
    )
    return [line for line in text.splitlines() if line.startswith(contract.WEBHOOK_FAILURES + "{")]


def _why_empty_is_wrong(stack: Stack, result: PanelResult) -> str | None:
    """None if the panel may be empty (an event panel whose source shows no event), else why not."""
    if result.panel.label == ALERTS_PANEL:
        loaded = requests.get(
            f"http://127.0.0.1:{stack.cfg.ports.prometheus}/api/v1/rules",
            params={"type": "alert"},
            auth=web_auth(stack),
            timeout=5,
        ).json()
        names = [r["name"] for g in loaded["data"]["groups"] for r in g["rules"]]
        assert names and all(re.fullmatch(ALERTNAME_REGEX, n) for n in names), names
        active = _active_mqttlb_alerts(stack)
        return f"Prometheus reports active alerts {active}" if active else None
    if result.panel.label == FAILURES_PANEL:
        failures = _webhook_failure_samples(stack)
        return f"the webhook exports failures {failures}" if failures else None
    return "no data"


def test_every_panel_query_returns_data(loaded_stack: Stack) -> None:
    deadline = time.monotonic() + DATA_DEADLINE_SECONDS
    while True:
        results, annotation_problems = _query_all(loaded_stack)
        errors = [f"{r.panel.label}: {'; '.join(r.errors)}" for r in results if r.errors]
        assert not errors, "broken panel queries:\n" + "\n".join(errors)
        empty = [
            f"{r.panel.label} (targets {', '.join(r.empty_targets)}): {why}"
            for r in results
            if r.empty_targets and (why := _why_empty_is_wrong(loaded_stack, r))
        ]
        empty += [f"annotation {name}: {problem}" for name, problem in annotation_problems]
        if not empty:
            break
        assert time.monotonic() < deadline, "panels without data after load:\n" + "\n".join(empty)
        time.sleep(2)
    per_node = {r.panel.repeat_value for r in results if r.panel.repeat_value}
    assert per_node == set(loaded_stack.cfg.node_names), "the per-node row must repeat once per node"
    assert len(results) >= 30


def login_flags(stack: Stack) -> list[str]:
    """The dashboards command's flags for the stack's Prometheus login."""
    return ["--prometheus-user", web_auth(stack)[0], "--prometheus-password-file", str(stack.paths.web_password)]


def test_render_draws_one_png_per_dashboard(loaded_stack: Stack, tmp_path: Path) -> None:
    cfg = loaded_stack.cfg
    argv = [
        "render",
        "--prometheus",
        f"http://127.0.0.1:{cfg.ports.prometheus}",
        *login_flags(loaded_stack),
        "--out",
        str(tmp_path),
        "--range",
        RANGE,
        "--scrape-interval",
        cfg.scrape_interval,
    ]
    for name, values in _variables(loaded_stack).items():
        argv += ["--var", f"{name}={','.join(values)}"]
    assert cli.main(argv) == 0
    expected = {f"{d['uid']}.png" for _p, d in load_dashboards(GENERATED_DIR)}
    assert {p.name for p in tmp_path.glob("*.png")} == expected
    for png in tmp_path.glob("*.png"):
        data = png.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n", png
        assert len(data) > 50_000, f"{png.name} is only {len(data)} bytes"


def test_queries_discovers_variables_from_prometheus(
    loaded_stack: Stack, capsys: pytest.CaptureFixture
) -> None:
    cfg = loaded_stack.cfg
    argv = ["queries", "--prometheus", f"http://127.0.0.1:{cfg.ports.prometheus}", *login_flags(loaded_stack)]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    nodes = "|".join(sorted(cfg.node_names))
    assert f'{contract.CLUSTER_LABEL}="{cfg.cluster}", node=~"({nodes})"' in out
    assert f'{contract.ENVOY_CLUSTER_LABEL}="{cfg.envoy_cluster}"' in out
    for node in cfg.node_names:
        assert f'node=~"{node}"' in out  # the repeated row, once per discovered node
    assert "$" not in out  # every variable resolved
