"""The generated config in a real Alertmanager: routes on `action`, sends the bearer token, inhibits."""

from __future__ import annotations

import datetime as dt
import json
import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
from stackutil import StubHandler, free_port, process, serve_stub, wait_until

from mqttlb import alertmanager_config, contract
from mqttlb.params import load_params

TOKEN = "live-test-token-0123456789abcdef"
HIGH = {"action": "rebalance", "severity": "warning"}


@dataclass
class Received:
    path: str
    authorization: str
    body: dict[str, Any]


@dataclass
class Receiver:
    """A loopback HTTP server that records every notification Alertmanager sends."""

    port: int = 0
    requests: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def snapshot(self) -> list[Received]:
        with self.lock:
            return list(self.requests)


@pytest.fixture()
def receiver() -> Iterator[Receiver]:
    record = Receiver()

    class Handler(StubHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server API)
            length = int(self.headers.get("Content-Length", "0"))
            body = json.loads(self.rfile.read(length) or b"{}")
            with record.lock:
                record.requests.append(Received(self.path, self.headers.get("Authorization", ""), body))
            self.answer(200, b"")

    server = serve_stub(Handler)
    record.port = server.server_port
    try:
        yield record
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture()
def alertmanager(tmp_path: Path, receiver: Receiver) -> Iterator[str]:
    binary = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
    assert binary is not None, "prometheus-alertmanager is not installed"
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    timing = {"group_wait": "1s", "group_interval": "1s", "repeat_interval": "1h"}
    params = load_params({"alertmanager": timing})
    config = tmp_path / "alertmanager.yml"
    config.write_text(
        alertmanager_config.render(
            alertmanager_config.build(
                params,
                webhook_url=f"http://127.0.0.1:{receiver.port}/alerts",
                token_file=str(token_file),
                # the operator's pager (here the same test receiver, another path, no token)
                page_receiver={"webhook_configs": [{"url": f"http://127.0.0.1:{receiver.port}/page"}]},
            )
        )
    )
    port = free_port()
    argv = [
        binary,
        f"--config.file={config}",
        f"--storage.path={tmp_path / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--cluster.listen-address=",  # no HA gossip port
    ]
    url = f"http://127.0.0.1:{port}"
    with process(argv, tmp_path / "alertmanager.log"):
        wait_until(lambda: requests.get(f"{url}/-/ready", timeout=1).status_code == 200, 20, "Alertmanager ready")
        yield url


def _alert(name: str, labels: dict[str, str], ends_in: float = 600, started_ago: float = 0) -> dict[str, Any]:
    # startsAt is "now" on purpose: Alertmanager sends an alert that started more than group_wait ago
    # at once, before the inhibitor may have seen its source (prometheus/alertmanager#4064).
    now = dt.datetime.now(dt.UTC)
    return {
        "labels": {"alertname": name, **labels},
        "annotations": {"summary": name},
        "startsAt": (now - dt.timedelta(seconds=started_ago)).isoformat(),
        "endsAt": (now + dt.timedelta(seconds=ends_in)).isoformat(),
    }


def _delivered(receiver: Receiver, path: str) -> dict[tuple[str, str, str], set[str]]:
    """(alertname, cluster, node) -> statuses seen at ``path``."""
    seen: dict[tuple[str, str, str], set[str]] = {}
    for request in receiver.snapshot():
        if request.path != path:
            continue
        for alert in request.body["alerts"]:
            labels = alert["labels"]
            key = (labels["alertname"], labels.get(contract.CLUSTER_LABEL, ""), labels.get("node", ""))
            seen.setdefault(key, set()).add(alert["status"])
    return seen


@pytest.mark.live
def test_routing_token_inhibition_and_resolve(alertmanager: str, receiver: Receiver) -> None:
    # Sources first, as in production where they are already firing: the inhibitor then holds them
    # before any target reaches the dispatcher, so the outcome does not depend on goroutine timing.
    sources = [
        _alert("MqttBrokerCpuCritical", {contract.CLUSTER_LABEL: "local", "action": "shed", "severity": "critical"}),
        _alert(
            "MqttBrokerDown", {contract.CLUSTER_LABEL: "east", "node": "e2", "action": "page", "severity": "critical"}
        ),
        _alert("Watchdog", {}),
    ]
    targets = [
        _alert("MqttBrokerCpuHigh", {contract.CLUSTER_LABEL: "local", "node": "n1", **HIGH}),
        _alert("MqttBrokerCpuHigh", {contract.CLUSTER_LABEL: "east", "node": "e1", **HIGH}),
        _alert("MqttClusterImbalanced", {contract.CLUSTER_LABEL: "east", "action": "rebalance", "severity": "warning"}),
    ]
    response = requests.post(f"{alertmanager}/api/v2/alerts", json=sources, timeout=5)
    assert response.status_code == 200, response.text
    wait_until(
        lambda: len(requests.get(f"{alertmanager}/api/v2/alerts", timeout=5).json()) == len(sources),
        timeout=20,
        what="the source alerts in Alertmanager",
    )
    response = requests.post(f"{alertmanager}/api/v2/alerts", json=targets, timeout=5)
    assert response.status_code == 200, response.text

    def all_delivered() -> bool:
        return (
            ("MqttBrokerCpuCritical", "local", "") in _delivered(receiver, "/alerts")
            and ("MqttBrokerCpuHigh", "east", "e1") in _delivered(receiver, "/alerts")
            and ("MqttBrokerDown", "east", "e2") in _delivered(receiver, "/page")
        )

    wait_until(all_delivered, timeout=20, what="notifications at the receiver")
    time.sleep(2)  # two more group intervals: anything inhibited would have been sent by now

    assert receiver.snapshot()
    for request in receiver.snapshot():
        assert request.path in ("/alerts", "/page")
        # the webhook's token goes to the webhook only, never to the operator's pager
        assert request.authorization == (f"Bearer {TOKEN}" if request.path == "/alerts" else ""), request.path
    to_webhook = _delivered(receiver, "/alerts")
    to_page = _delivered(receiver, "/page")
    # Critical inhibits High of the same cluster only; BrokerDown inhibits Imbalanced.
    assert set(to_webhook) == {("MqttBrokerCpuCritical", "local", ""), ("MqttBrokerCpuHigh", "east", "e1")}
    assert set(to_page) == {("MqttBrokerDown", "east", "e2")}
    for request in receiver.snapshot():
        if request.path == "/alerts":
            assert request.body["commonLabels"]["action"] in ("rebalance", "shed")
            grouping = {"alertname", contract.NAMESPACE_LABEL, contract.CLUSTER_LABEL, "action"}
            assert set(request.body["groupLabels"]) <= grouping

    state = requests.get(f"{alertmanager}/api/v2/alerts", timeout=5).json()
    inhibited = {
        a["labels"]["alertname"] + "/" + a["labels"].get(contract.CLUSTER_LABEL, "")
        for a in state
        if a["status"]["inhibitedBy"]
    }
    assert inhibited == {"MqttBrokerCpuHigh/local", "MqttClusterImbalanced/east"}

    # send_resolved: ending the east High alert produces a resolved notification for the webhook.
    east_e1 = {contract.CLUSTER_LABEL: "east", "node": "e1", **HIGH}
    ended = _alert("MqttBrokerCpuHigh", east_e1, ends_in=-1, started_ago=5)
    assert requests.post(f"{alertmanager}/api/v2/alerts", json=[ended], timeout=5).status_code == 200
    wait_until(
        lambda: "resolved" in _delivered(receiver, "/alerts").get(("MqttBrokerCpuHigh", "east", "e1"), set()),
        timeout=20,
        what="the resolved notification",
    )
