"""``mqttlb status``: the rebalancer's view per node, from a real controller served by waitress."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest
from stackutil import StubHandler, serve_stub
from webhookhttp import AUTH, TOKEN, FakeEvictionSide, alert, build, notification, serving

from mqttlb import status
from mqttlb.webhook.app import create_app
from mqttlb.webhook.controller import START_GRACE_SECONDS
from mqttlb.webhook.evict_lever import EvictLever
from mqttlb.webhook.plan import Observation


def _steered(tmp_path: Path):  # type: ignore[no-untyped-def]
    harness = build(tmp_path, cpu={"node1": 0.7, "node2": 0.3, "node3": 0.2})
    response = harness.client.post("/alerts", json=notification(alert()), headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 200
    harness.controller.reconcile_once()
    return harness


def test_status_document_has_every_node_and_the_last_decisions(tmp_path: Path) -> None:
    harness = _steered(tmp_path)
    document = harness.client.get("/status").get_json()
    rows = {n["node"]: n for n in document["nodes"]}
    assert set(rows) == set(harness.config.node_names)
    node1 = rows["node1"]
    assert node1["cpu"] == 0.7 and node1["health"] == "up" and node1["draining"] is False
    assert node1["weight"] == node1["published"] == node1["applied"] < 100
    assert [a["alertname"] for a in document["firing"]["alerts"]] == ["MqttBrokerCpuHigh"]
    assert document["recent"][-1]["kind"] == "rebalance"


def test_render_shows_the_table_alerts_and_reasons(tmp_path: Path) -> None:
    harness = _steered(tmp_path)
    text = status.render(harness.client.get("/status").get_json(), last=5)
    lines = text.splitlines()
    header = next(line for line in lines if line.startswith("node"))
    assert header.split() == [
        "node",
        "cpu",
        "cpu",
        "now",
        "conns",
        "decided",
        "published",
        "applied",
        "health",
        "draining",
    ]
    node1 = next(line for line in lines if line.startswith("node1"))
    assert node1.split()[1] == "0.70" and node1.split()[-2:] == ["up", "no"]
    assert "firing rebalance/shed alerts: MqttBrokerCpuHigh[node1]" in text
    assert any("rebalance" in line and "MqttBrokerCpuHigh firing" in line for line in lines)


def test_cli_json_and_text_against_a_served_webhook(tmp_path: Path) -> None:
    harness = _steered(tmp_path)
    with serving(harness.app, harness.controller.metrics, harness.config.max_body_bytes) as (url, _port):
        as_json = subprocess.run(
            [sys.executable, "-m", "mqttlb.cli", "status", "--url", url, "--json"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        as_text = subprocess.run(
            [sys.executable, "-m", "mqttlb.cli", "status", "--url", url], capture_output=True, text=True, timeout=60
        )
    assert as_json.returncode == 0, as_json.stderr
    assert {n["node"] for n in json.loads(as_json.stdout)["nodes"]} == set(harness.config.node_names)
    assert as_text.returncode == 0 and "decided" in as_text.stdout
    assert json.loads(as_json.stdout)["eviction"]["available"] is False
    assert "evict lever: unavailable (no node has an eviction side configured" in as_text.stdout


def test_cli_piped_into_a_reader_that_leaves_early_ends_quietly(tmp_path: Path) -> None:
    """``mqttlb status --json | head -1``: the reader closes the pipe; no BrokenPipeError traceback."""
    harness = _steered(tmp_path)
    with serving(harness.app, harness.controller.metrics, harness.config.max_body_bytes) as (url, _port):
        proc = subprocess.Popen(
            [sys.executable, "-m", "mqttlb.cli", "status", "--url", url, "--json"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert proc.stdout is not None and proc.stderr is not None
        proc.stdout.close()  # the reader is gone before the status is printed (head -1 of a long output)
        stderr = proc.stderr.read().decode()
        code = proc.wait(timeout=60)
    assert code == 0 and "Traceback" not in stderr, stderr


def test_cli_says_where_the_stack_is_missing(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mqttlb.cli", "status", "--state-dir", str(tmp_path / "none")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.strip().startswith("mqttlb status: error: no stack was started in")
    closed = subprocess.run(
        [sys.executable, "-m", "mqttlb.cli", "status", "--url", "http://127.0.0.1:9", "--timeout", "1"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert closed.returncode == 2 and "nothing answers at http://127.0.0.1:9/status" in closed.stderr
    negative = subprocess.run(
        [sys.executable, "-m", "mqttlb.cli", "status", "--last", "-1"], capture_output=True, text=True, timeout=60
    )
    assert negative.returncode == 2 and "must be 0 or more" in negative.stderr


def test_render_says_whether_the_evict_lever_is_armed_and_what_it_does(tmp_path: Path) -> None:
    harness = build(tmp_path, cpu={"node1": 0.7, "node2": 0.3, "node3": 0.2})
    harness.controller.evict_lever = EvictLever({n: FakeEvictionSide() for n in harness.config.node_names})
    harness.controller.reconcile_once()
    idle = status.eviction_line(harness.client.get("/status").get_json()["eviction"])
    assert idle.startswith("evict lever: available, not armed; no evacuation; ")
    assert idle.endswith("max squared deviation 0.0900 vs target 0.0025 (target: every node within 0.05 of the mean)")
    assert harness.client.post("/rebalance", json={}, headers=AUTH).status_code == 202
    assert harness.client.post("/evacuate", json={"node": "node3"}, headers=AUTH).status_code == 202
    harness.controller.reconcile_once()  # node3 drained, the lever armed by the request
    harness.controller.reconcile_once()  # node3 evacuating
    document = harness.client.get("/status").get_json()
    assert document["eviction"]["armed"] and document["eviction"]["evacuating"] == ["node3"]
    line = next(x for x in status.render(document, last=0).splitlines() if x.startswith("evict lever:"))
    assert line.startswith("evict lever: available, armed (operator request); ")
    assert "; evacuating node3; max squared deviation " in line


def test_eviction_line_says_why_the_lever_cannot_act_and_what_it_waits_for() -> None:
    off = {"available": False, "unavailable_reason": "the evict lever is off (eviction.enabled: false)"}
    assert status.eviction_line(off) == "evict lever: unavailable (the evict lever is off (eviction.enabled: false))"
    assert status.eviction_line({**off, "evacuating": ["node2"]}).endswith("; evacuating node2")
    shed = "new connections are being shed (level 2): an evicted client might not get back in"
    assert status.eviction_line({**off, "evacuating": ["node2"], "waiting": shed}).endswith(  # trial: it was hidden
        f"; evacuating node2; waiting: {shed}")
    waiting = {
        "available": True,
        "armed": True,
        "reason": "imbalanced for 31s",
        "waiting": "donors node1 in cooldown",
        "evacuating": [],
        "max_squared_deviation": None,
        "spread_target": 0.1,
    }
    assert status.eviction_line(waiting) == (
        "evict lever: available, armed (imbalanced for 31s); waiting: donors node1 in cooldown; no evacuation; "
        "max squared deviation - vs target 0.0100 (target: every node within 0.1 of the mean)"
    )
    assert status.eviction_line(None) == "evict lever: not reported by this webhook"


def test_a_node_not_yet_seen_up_is_starting_within_the_grace_then_down(tmp_path: Path) -> None:
    """Trial: HiveMQ nodes showed "down" for ~15 s after `make stack-up` (the JVM starts; the first scrapes
    say down).  Within START_GRACE_SECONDS of the start a node never seen up is "starting"; one seen up
    and then lost is "down" at once; after the grace, down is down."""
    harness = build(tmp_path)
    observe = harness.cluster.observe
    down: set[str] = {"node1", "node2"}

    def with_down(now: float) -> Observation:
        return dataclasses.replace(observe(now), down=frozenset(down))

    harness.cluster.observe = with_down  # type: ignore[method-assign]

    def health() -> dict[str, str]:
        harness.controller.reconcile_once()
        return {n["node"]: n["health"] for n in harness.client.get("/status").get_json()["nodes"]}

    assert health() == {"node1": "starting", "node2": "starting", "node3": "up"}
    assert "starting" in status.render(harness.client.get("/status").get_json(), last=0)
    down.discard("node1")
    assert health()["node1"] == "up"
    down.add("node1")  # seen up once: a loss is a loss
    harness.clock.advance(30)
    assert health() == {"node1": "down", "node2": "starting", "node3": "up"}
    harness.clock.advance(START_GRACE_SECONDS)
    assert health() == {"node1": "down", "node2": "down", "node3": "up"}


class _LoginWall(StubHandler):
    """What Prometheus behind its web login answers: 401, plain text, ``WWW-Authenticate: Basic``."""

    def do_GET(self) -> None:  # noqa: N802 -- http.server's name
        self.send_response(401)
        self.send_header("WWW-Authenticate", 'Basic realm="Prometheus"')
        self.send_header("Content-Length", "13")
        self.end_headers()
        self.wfile.write(b"Unauthorized\n")


def test_a_401_says_whether_the_webhook_or_something_else_refused(tmp_path: Path) -> None:
    harness = build(tmp_path)
    guarded = create_app(harness.controller, TOKEN, harness.config.max_body_bytes)  # /status needs the token
    wrong = tmp_path / "wrong-token"
    wrong.write_text("not-the-token-0123456789\n")
    with serving(guarded, harness.controller.metrics, harness.config.max_body_bytes) as (url, _port):
        with pytest.raises(status.StatusError) as no_token:
            status.fetch_status(url, timeout=5)
        with pytest.raises(status.StatusError) as wrong_token:
            status.fetch_status(url, timeout=5, token_file=wrong)
    assert str(no_token.value) == f"{url}/status: 401, the webhook wants its bearer token (--token-file)"
    assert str(wrong_token.value) == (
        f"{url}/status: 401, the webhook refuses the bearer token in {wrong} (--token-file names the right one)"
    )
    server = serve_stub(_LoginWall)
    try:
        other = f"http://127.0.0.1:{server.server_port}"
        with pytest.raises(status.StatusError) as elsewhere:
            status.fetch_status(other, timeout=5)
    finally:
        server.shutdown()
        server.server_close()
    assert str(elsewhere.value) == (
        f"{other}/status: 401 from something that is not the mqttlb webhook (it asks for Basic realm=\"Prometheus\"): "
        "is --url the webhook's address?"
    )
