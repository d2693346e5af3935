"""``mqttlb status``: the rebalancer's view per node, from a real controller served by waitress."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from webhookhttp import TOKEN, alert, build, notification, serving

from mqttlb import status


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
