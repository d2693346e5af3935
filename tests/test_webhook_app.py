"""The rebalancer's HTTP layer, in-process: Flask's test client over a real Controller.

The controller runs with fake Envoy/Prometheus adapters (``webhookhttp.FakeCluster``), the real
EDS file publisher and a fake clock; a pass runs only when a test calls ``reconcile_once``.
Shown here: the bearer token on every POST route; every refused input is a short JSON 4xx,
counted in ``mqttlb_webhook_rejected_requests_total{route, reason}``, and changes nothing (firing
set, controller state and snapshot, drain wishes, EDS/state/audit files); duplicates and HA copies
change the firing set once; every labelled counter starts at 0; /status, /, /readyz, /drain and
REST EDS.
"""

from __future__ import annotations

import io
import json
import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from webhookhttp import AUTH, CLUSTER, NODES, TOKEN, Harness, alert, build, notification

from mqttlb import contract
from mqttlb.webhook.eds import CLA_TYPE
from mqttlb.webhook.firing import FiringSnapshot
from mqttlb.webhook.payload import MAX_ALERTS, MAX_DISCOVERY_NAMES

HA_PEER_OFFSET = 15.2  # the second Alertmanager of an HA pair: one peer timeout (15 s) later
HOT = {"node1": 0.95, "node2": 0.30, "node3": 0.30}
SHORT = 1024  # bytes: every refusal's answer, and every log line about it, is shorter


@pytest.fixture()
def h(tmp_path: Path) -> Harness:
    return build(tmp_path)


def deep(levels: int = 100_000) -> bytes:
    return b"[" * levels


def body(document: Any) -> bytes:
    return json.dumps(document).encode()


def valid_alerts() -> bytes:
    return body(notification())


def valid_drain() -> bytes:
    return body({"node": "node2", "draining": True})


def membership(snapshot: FiringSnapshot) -> tuple[int, tuple[tuple[str, int, int | None], ...]]:
    """The firing set without the refresh times a duplicate may move (version and episodes)."""
    return snapshot.version, tuple((a.fingerprint, a.starts_at_ns, a.ends_at_ns) for a in snapshot.alerts)


def assert_short_logs(caplog: pytest.LogCaptureFixture) -> None:
    for record in caplog.records:
        assert len(record.getMessage()) < SHORT, record.getMessage()[:200]


# --------------------------------------------------------------------------- auth


@pytest.mark.parametrize(("route", "payload"), [("/alerts", valid_alerts()), ("/drain", valid_drain())])
@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong-token-0123456789"},
        {"Authorization": TOKEN},  # no scheme
        {"Authorization": f"Basic {TOKEN}"},
        {"Authorization": f"Bearer {TOKEN}x"},
        {"Authorization": f"Bearer {TOKEN[:-1]}"},
        {"Authorization": "Bearer "},
    ],
    ids=["none", "wrong", "no-scheme", "basic", "longer", "shorter", "empty"],
)
def test_every_post_route_needs_the_bearer_token(h: Harness, route: str, payload: bytes, headers: dict[str, str]):
    before = h.world()
    response = h.client.post(route, data=payload, headers={**headers, "Content-Type": "application/json"})
    assert response.status_code == 401
    assert response.json == {"error": "missing or wrong bearer token"}
    assert h.world() == before and h.wakes == []
    assert h.rejected(route.strip("/"), "unauthorised") == 1
    # the same request with the token is taken
    assert h.client.post(route, data=payload, headers=AUTH).status_code in (200, 202)


# --------------------------------------------------------------------------- refusals change nothing

BAD_INPUTS = [
    # /alerts
    ("/alerts", b"{not json", 400, "invalid_payload"),
    ("/alerts", b"", 400, "invalid_payload"),
    ("/alerts", b"\xff\xfe{", 400, "invalid_payload"),
    ("/alerts", b"[1, 2]", 400, "invalid_payload"),
    ("/alerts", b'"a string"', 400, "invalid_payload"),
    ("/alerts", b'{"version": 1' + b"1" * 5000 + b"}", 400, "invalid_payload"),
    ("/alerts", body(notification(version="3")), 400, "invalid_payload"),
    ("/alerts", body({k: v for k, v in notification().items() if k != "version"}), 400, "invalid_payload"),
    ("/alerts", body(notification(version=[[["4"]]])), 400, "invalid_payload"),
    ("/alerts", body({k: v for k, v in notification().items() if k != "groupKey"}), 400, "invalid_payload"),
    ("/alerts", body(notification(alerts=[])), 400, "invalid_payload"),
    ("/alerts", body(notification(status="pending")), 400, "invalid_payload"),
    ("/alerts", body(notification(alert(status="pending"))), 400, "invalid_payload"),
    ("/alerts", body(notification(alert(severity=5))), 400, "invalid_payload"),
    ("/alerts", body(notification(alert(fingerprint="f" * 65))), 400, "invalid_payload"),
    ("/alerts", body(notification(alert(starts_at="yesterday"))), 400, "invalid_payload"),
    ("/alerts", body(notification(alert(ends_at="2027-13-45T99:00:00Z"))), 400, "invalid_payload"),
    ("/alerts", body(notification(alert(action="reboot"))), 422, "unknown_action"),
    ("/alerts", body(notification(alert(), alert(node="node2", action="reboot"))), 422, "unknown_action"),
    (
        "/alerts",
        body(notification({**alert(), "labels": {"alertname": "X", "cluster": CLUSTER}})),
        422,
        "unknown_action",
    ),  # no action
    ("/alerts", deep(), 400, "invalid_payload"),
    ("/alerts", b'{"version": "4", "alerts": ' + deep(), 400, "invalid_payload"),
    ("/alerts", b'{"a":' * 50_000, 400, "invalid_payload"),
    # /drain
    ("/drain", b"{not json", 400, "invalid_payload"),
    ("/drain", b"[]", 400, "invalid_payload"),
    ("/drain", body({"node": "node2"}), 400, "invalid_payload"),
    ("/drain", body({"draining": True}), 400, "invalid_payload"),
    ("/drain", body({"node": "node2", "draining": "yes"}), 400, "invalid_payload"),
    ("/drain", body({"node": "node2", "draining": 1}), 400, "invalid_payload"),
    ("/drain", body({"node": 2, "draining": True}), 400, "invalid_payload"),
    ("/drain", body({"node": "", "draining": True}), 400, "invalid_payload"),
    ("/drain", body({"node": "node2", "draining": True, "force": True}), 400, "invalid_payload"),
    ("/drain", body({"node": "node9", "draining": True}), 404, "invalid_payload"),
    ("/drain", deep(), 400, "invalid_payload"),
    ("/drain", b'{"node": "node2", "draining": true, "node": "node3"}', 400, "invalid_payload"),
    ("/alerts", body(notification())[:-1] + b', "version": "4"}', 400, "invalid_payload"),
    ("/v3/discovery:endpoints", b'{"resource_names": ["mqtt_brokers"], "resource_names": []}', 400, "invalid_payload"),
    # REST EDS (no token: Envoy's)
    ("/v3/discovery:endpoints", b"{x", 400, "invalid_payload"),
    ("/v3/discovery:endpoints", b"[]", 400, "invalid_payload"),
    ("/v3/discovery:endpoints", body({"resource_names": 5}), 400, "invalid_payload"),
    ("/v3/discovery:endpoints", body({"resource_names": [5]}), 400, "invalid_payload"),
    ("/v3/discovery:endpoints", body({"resourceNames": "mqtt_brokers"}), 400, "invalid_payload"),
    ("/v3/discovery:endpoints", body({"resource_names": ["x"] * (MAX_DISCOVERY_NAMES + 1)}), 400, "invalid_payload"),
    ("/v3/discovery:endpoints", body({"type_url": "type.googleapis.com/bogus"}), 400, "invalid_payload"),
    ("/v3/discovery:endpoints", body({"type_url": [[["x"]]]}), 400, "invalid_payload"),
    ("/v3/discovery:endpoints", body({"garbage": 1}), 400, "invalid_payload"),  # not a DiscoveryRequest field
    ("/v3/discovery:endpoints", body({"resourceNames": [], "versionInfo": "", "bogus": True}), 400, "invalid_payload"),
    ("/v3/discovery:endpoints", body({"node": "envoy"}), 400, "invalid_payload"),
    ("/v3/discovery:endpoints", deep(), 400, "invalid_payload"),
    ("/v3/discovery:endpoints", b'{"node": ' + deep(), 400, "invalid_payload"),
]
ROUTE_LABEL = {"/alerts": "alerts", "/drain": "drain", "/v3/discovery:endpoints": "eds"}


@pytest.mark.parametrize(("route", "payload", "status", "reason"), BAD_INPUTS)
def test_a_refused_input_is_short_json_counted_and_changes_nothing(
    h: Harness, caplog: pytest.LogCaptureFixture, route: str, payload: bytes, status: int, reason: str
):
    caplog.set_level(logging.INFO)
    before = h.world()
    response = h.client.post(route, data=payload, headers={**AUTH, "Content-Type": "application/json"})
    assert response.status_code == status, response.data[:300]
    assert response.is_json and set(response.json) == {"error"}
    assert len(response.data) < SHORT
    assert h.world() == before and h.wakes == []
    assert h.rejected(ROUTE_LABEL[route], reason) == 1
    assert h.failures("http", "exception") == 0
    assert_short_logs(caplog)
    # nothing latent either: the next pass publishes nothing new
    h.controller.reconcile_once()
    assert h.world() == before


@pytest.mark.parametrize(
    ("route", "payload", "key"),
    [
        ("/drain", b'{"node": "node2", "draining": true, "node": "node3"}', "'node'"),
        ("/drain", b'{"node": "node2", "draining": true, "draining": false}', "'draining'"),
        ("/rebalance", b'{"dry_run": true, "dry_run": false}', "'dry_run'"),
        ("/evacuate", b'{"node": "node1", "node": "node2"}', "'node'"),
        ("/alerts", body(notification()).replace(b'"labels": {', b'"labels": {"node": "node3", ', 1), "'node'"),
    ],
    ids=["drain-node", "drain-draining", "rebalance", "evacuate", "alerts-nested"],
)
def test_a_key_given_twice_is_refused_not_last_one_wins(h: Harness, route: str, payload: bytes, key: str):
    """Trial: {"node":"node2","draining":true,"node":"node3"} drained node3 (Python's json: last key wins)."""
    before = h.world()
    response = h.client.post(route, data=payload, headers={**AUTH, "Content-Type": "application/json"})
    assert response.status_code == 400, response.data[:300]
    assert f"gives the key {key} more than once in one JSON object" in response.json["error"]
    assert h.world() == before and h.wakes == []


def test_a_rejected_10000_alert_body_is_not_echoed(tmp_path: Path, caplog: pytest.LogCaptureFixture):
    h = build(tmp_path, max_body_bytes=16 * 1024 * 1024)
    caplog.set_level(logging.INFO)
    alerts = [alert(node=f"node{i}", fingerprint=f"{i:016x}") for i in range(10_000)]
    payload = body(notification(*alerts))
    assert len(payload) > 2_000_000
    before = h.world()
    response = h.client.post("/alerts", data=payload, headers=AUTH)
    assert response.status_code == 400
    assert len(response.data) < SHORT
    assert f"at most {MAX_ALERTS} items" in response.json["error"]
    assert h.world() == before
    assert_short_logs(caplog)


def test_a_large_accepted_notification_gets_a_short_answer_and_log_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    h = build(tmp_path, max_body_bytes=16 * 1024 * 1024)
    caplog.set_level(logging.INFO)
    alerts = [
        alert("Mqtt" + "X" * 200 + str(i), node=f"node{1 + i % 3}", fingerprint=f"{i:016x}") for i in range(MAX_ALERTS)
    ]
    response = h.client.post("/alerts", data=body(notification(*alerts)), headers=AUTH)
    assert response.status_code == 200
    assert response.json == {
        "result": "changed",
        "firing_version": 1,
        "added": MAX_ALERTS,
        "updated": 0,
        "removed": 0,
        "expired": 0,
        "ignored": {},
    }
    assert len(h.controller.firing.snapshot().alerts) == MAX_ALERTS
    assert any("firing set changed" in r.getMessage() for r in caplog.records)
    assert_short_logs(caplog)


@pytest.mark.parametrize(
    ("route", "label", "headers"),
    [("/alerts", "alerts", AUTH), ("/drain", "drain", AUTH), ("/v3/discovery:endpoints", "eds", {})],
)
def test_a_too_large_body_is_a_counted_json_413(tmp_path: Path, route: str, label: str, headers: dict[str, str]):
    limit = 4096
    h = build(tmp_path, max_body_bytes=limit)
    before = h.world()
    big = b'{"pad": "' + b"x" * limit + b'"}'
    response = h.client.post(route, data=big, headers=headers)
    assert (response.status_code, response.json) == (413, {"error": f"body larger than {limit} bytes"})
    # chunked: no Content-Length, the body is counted as it is read
    chunked = h.client.post(
        route,
        input_stream=io.BytesIO(big),
        headers={**headers, "Transfer-Encoding": "chunked"},
        environ_overrides={"wsgi.input_terminated": True},  # what waitress sets for a chunked request
    )
    assert (chunked.status_code, chunked.json) == (413, {"error": f"body larger than {limit} bytes"})
    assert h.rejected(label, "too_large") == 2
    assert h.world() == before


def test_a_body_of_exactly_the_limit_is_taken(tmp_path: Path):
    limit = 4096
    h = build(tmp_path, max_body_bytes=limit)
    wish = valid_drain()
    exact = wish[:-1] + b" " * (limit - len(wish)) + b"}"
    assert len(exact) == limit
    assert h.client.post("/drain", data=exact, headers=AUTH).status_code == 202
    chunked = h.client.post(
        "/drain",
        input_stream=io.BytesIO(exact),
        headers={**AUTH, "Transfer-Encoding": "chunked"},
        environ_overrides={"wsgi.input_terminated": True},
    )
    assert chunked.status_code == 202


@pytest.mark.parametrize(
    ("method", "path", "status", "route"),
    [
        ("GET", "/alerts", 405, "alerts"),
        ("PUT", "/drain", 405, "drain"),
        ("GET", "/v3/discovery:endpoints", 405, "eds"),
        ("POST", "/status", 405, "status"),
        ("GET", "/page", 404, "other"),
        ("POST", "/nowhere", 404, "other"),
    ],
)
def test_unknown_paths_and_methods_are_counted_json(h: Harness, method: str, path: str, status: int, route: str):
    before = h.world()
    response = h.client.open(path, method=method, data=valid_alerts(), headers=AUTH)
    assert response.status_code == status
    assert response.is_json and set(response.json) == {"error"}
    assert h.rejected(route, "wrong_route") == 1
    assert h.world() == before


def test_a_crashing_handler_is_a_counted_json_500(h: Harness, monkeypatch: pytest.MonkeyPatch):
    def crash(node: str, draining: bool) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(h.controller, "request_drain", crash)
    response = h.client.post("/drain", data=valid_drain(), headers=AUTH)
    assert (response.status_code, response.json) == (500, {"error": "internal error"})
    assert h.failures("http", "exception") == 1


# --------------------------------------------------------------------------- duplicates


def test_100_parallel_identical_notifications_change_the_firing_set_once(tmp_path: Path):
    h = build(tmp_path, cpu=HOT)
    payload = body(notification())

    def send(_: int) -> dict[str, Any]:
        response = h.app.test_client().post("/alerts", data=payload, headers=AUTH)
        assert response.status_code == 200
        return response.json

    with ThreadPoolExecutor(max_workers=16) as pool:
        answers = list(pool.map(send, range(100)))
    assert sorted(a["result"] for a in answers) == ["changed"] + ["unchanged"] * 99
    assert all(a["ignored"] == {"duplicate": 1} for a in answers if a["result"] == "unchanged")
    assert h.controller.firing.snapshot().version == 1
    assert len(h.controller.firing.snapshot().alerts) == 1
    assert len(h.wakes) == 1
    # one pass, one step
    first = h.controller.reconcile_once()
    assert [s.kind for s in first.steps if s.acts] == [contract.OutcomeKind.REBALANCE]
    again = h.controller.reconcile_once()
    assert [s for s in again.steps if s.acts] == []


def test_an_ha_copy_at_15_2_s_and_repeats_change_nothing(tmp_path: Path):
    h = build(tmp_path, cpu=HOT)
    payload = body(notification())
    first = h.clock.now
    assert h.client.post("/alerts", data=payload, headers=AUTH).json["result"] == "changed"
    report = h.controller.reconcile_once()
    assert [s.kind for s in report.steps if s.acts] == [contract.OutcomeKind.REBALANCE]
    weights = dict(h.controller.state.weights)
    assert weights["node1"] < 100
    firing = membership(h.controller.firing.snapshot())
    eds = Path(h.config.eds_path).read_bytes()

    h.clock.advance(HA_PEER_OFFSET)
    copy = h.client.post("/alerts", data=payload, headers=AUTH).json
    assert (copy["result"], copy["ignored"]) == ("unchanged", {"duplicate": 1})
    assert membership(h.controller.firing.snapshot()) == firing
    assert len(h.wakes) == 1  # the copy does not even wake the loop
    report = h.controller.reconcile_once()
    assert [s for s in report.steps if s.acts] == []
    assert h.controller.state.weights == weights
    assert Path(h.config.eds_path).read_bytes() == eds

    # copies at any later offset up to repeat_interval (retries, repeats) change nothing either
    repeat = h.controller.params.alertmanager.repeat_interval_seconds
    for k in (1, 2, 3):
        h.clock.now = first + HA_PEER_OFFSET + k * (repeat - HA_PEER_OFFSET - 0.1) / 3
        again = h.client.post("/alerts", data=payload, headers=AUTH).json
        assert again["result"] == "unchanged"
        assert membership(h.controller.firing.snapshot()) == firing
    assert len(h.wakes) == 1


# --------------------------------------------------------------------------- metrics, status, pages


def test_every_labelled_counter_starts_at_zero(h: Harness):
    samples = h.metrics()
    for kind in contract.OutcomeKind:
        assert samples[(contract.WEBHOOK_ACTIONS, (("kind", kind.value),))] == 0
    for kind, reasons in contract.FAILURE_REASONS.items():
        for reason in reasons:
            assert samples[(contract.WEBHOOK_FAILURES, (("kind", kind), ("reason", reason)))] == 0
    for route in contract.REJECT_ROUTES:
        for reason in contract.REJECT_REASONS:
            assert samples[(contract.WEBHOOK_REJECTED, (("reason", reason), ("route", route)))] == 0
    expected = len(contract.OutcomeKind) + sum(map(len, contract.FAILURE_REASONS.values()))
    expected += len(contract.REJECT_ROUTES) * len(contract.REJECT_REASONS)
    counters = (contract.WEBHOOK_ACTIONS, contract.WEBHOOK_FAILURES, contract.WEBHOOK_REJECTED)
    assert sum(1 for name, _ in samples if name in counters) == expected


def test_status_shape(h: Harness):
    h.client.post("/alerts", data=valid_alerts(), headers=AUTH)
    status = h.client.get("/status").json
    assert set(status) == {
        "cluster",
        "dry_run",
        "version",
        "published_version",
        "shed_level",
        "eviction",
        "step_seconds",
        "pass_seconds",
        "last_pass_at",
        "nodes",
        "firing",
        "recent",
    }
    assert status["cluster"] == CLUSTER and status["dry_run"] is False
    assert status["version"] == status["published_version"] == 1 and status["shed_level"] == 0
    rows = {n["node"]: n for n in status["nodes"]}
    assert set(rows) == set(NODES)
    assert all(r["weight"] == r["published"] == 100 and r["draining"] is False for r in rows.values())
    assert all(r["cpu"] is None and r["health"] is None for r in rows.values())  # no pass yet
    assert status["last_pass_at"] is None and status["recent"] == []
    firing = status["firing"]
    assert (firing["rebalance_firing"], firing["shed_firing"], firing["nodes_hot"]) == (True, False, ["node1"])
    (entry,) = firing["alerts"]
    assert entry["alertname"] == contract.ALERT_CPU_HIGH and entry["action"] == "rebalance"
    h.controller.reconcile_once()
    assert h.client.get("/status").json["last_pass_at"] == h.clock.now


def test_home_page_is_html_and_escapes_the_cluster_name(tmp_path: Path):
    h = build(tmp_path, cluster='<script>alert("x")</script>&')
    response = h.client.get("/")
    assert response.status_code == 200 and response.mimetype == "text/html"
    page = response.get_data(as_text=True)
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&amp;" in page
    assert "<script>" not in page
    assert "EDS snapshot version 1" in page


def test_home_page_shows_each_nodes_weights_shed_level_and_drains(h: Harness):
    """Trial: README called / 'a page: weights, shedding, links' but it showed no weight."""
    h.client.post("/drain", data=valid_drain(), headers=AUTH)
    h.controller.reconcile_once()
    page = h.client.get("/").get_data(as_text=True)
    assert "shed level 0; draining: node2;\nfiring alerts: none." in page
    assert "<th>weight decided</th><th>published</th>\n<th>applied (Envoy)</th><th>draining</th>" in page
    for node in h.controller.status()["nodes"]:
        weight = node["weight"]
        assert f"<tr><td>{node['node']}</td><td>{node['health']}</td>" in page and weight is not None
        draining = "yes" if node["node"] == "node2" else "no"
        assert f"<td>{weight}</td><td>{node['published']}</td>" in page and f"<td>{draining}</td></tr>" in page


def test_readyz_before_and_after_start(tmp_path: Path):
    h = build(tmp_path, start=False)
    assert h.client.get("/healthz").json == {"status": "ok"}
    response = h.client.get("/readyz")
    assert (response.status_code, response.json) == (503, {"ready": False})
    assert h.client.post("/v3/discovery:endpoints", data=b"{}").status_code == 503
    h.controller.start()
    response = h.client.get("/readyz")
    assert (response.status_code, response.json) == (200, {"ready": True, "eds_version": 1})


# --------------------------------------------------------------------------- drain


def test_drain_is_accepted_and_the_next_pass_publishes_it(h: Harness):
    response = h.client.post("/drain", data=valid_drain(), headers=AUTH)
    assert (response.status_code, response.json) == (202, {"result": "accepted", "node": "node2", "draining": True})
    assert h.eds_health()["node2"] == "HEALTHY"  # desired, not yet published
    assert len(h.wakes) == 1
    h.controller.reconcile_once()
    assert h.eds_health() == {"node1": "HEALTHY", "node2": "DRAINING", "node3": "HEALTHY"}
    rest = h.client.post("/v3/discovery:endpoints", data=b"{}").json
    assert rest == json.loads(Path(h.config.eds_path).read_text())
    assert h.metrics()[(contract.WEBHOOK_ACTIONS, (("kind", "drain"),))] == 1
    h.client.post("/drain", data=body({"node": "node2", "draining": False}), headers=AUTH)
    h.controller.reconcile_once()
    assert h.eds_health()["node2"] == "HEALTHY"
    assert h.metrics()[(contract.WEBHOOK_ACTIONS, (("kind", "undrain"),))] == 1


def test_draining_the_last_node_is_refused_at_once(h: Harness):
    for node in ("node1", "node2"):
        assert h.client.post("/drain", data=body({"node": node, "draining": True}), headers=AUTH).status_code == 202
    h.controller.reconcile_once()
    assert h.eds_health() == {"node1": "DRAINING", "node2": "DRAINING", "node3": "HEALTHY"}
    before = h.world()
    refused = h.client.post("/drain", data=body({"node": "node3", "draining": True}), headers=AUTH)
    assert refused.status_code == 409 and "last node" in refused.json["error"]
    assert h.rejected("drain", "refused") == 1
    h.controller.reconcile_once()
    assert h.world() == before
    assert h.eds_health()["node3"] == "HEALTHY"


def test_pending_drains_count_toward_the_last_node(h: Harness):
    for node in ("node1", "node2"):  # not yet published by a pass
        assert h.client.post("/drain", data=body({"node": node, "draining": True}), headers=AUTH).status_code == 202
    assert h.client.post("/drain", data=body({"node": "node3", "draining": True}), headers=AUTH).status_code == 409
    h.controller.reconcile_once()
    assert h.eds_health() == {"node1": "DRAINING", "node2": "DRAINING", "node3": "HEALTHY"}


# --------------------------------------------------------------------------- REST EDS


def test_rest_eds_serves_the_published_snapshot(h: Harness):
    published = json.loads(Path(h.config.eds_path).read_text())
    cluster = h.config.envoy_cluster
    snake = {"version_info": "", "node": {"id": "envoy"}, "resource_names": [cluster], "type_url": CLA_TYPE}
    camel = {"versionInfo": "", "node": {"id": "envoy"}, "resourceNames": [cluster], "typeUrl": CLA_TYPE}
    for request in (snake, camel, {}):
        response = h.client.post("/v3/discovery:endpoints", data=body(request))
        assert response.status_code == 200 and response.json == published
    assert h.client.post("/v3/discovery:endpoints", data=b"").json == published
    other = h.client.post("/v3/discovery:endpoints", data=body({**snake, "resource_names": ["other"]})).json
    assert other["resources"] == [] and other["version_info"] == published["version_info"]


def test_rest_eds_and_readers_do_not_wait_for_the_pass_lock(h: Harness):
    """The readers read the immutable snapshot: they answer while a pass holds the loop's lock."""
    with h.controller._pass_lock:
        assert h.client.post("/v3/discovery:endpoints", data=b"{}").status_code == 200
        assert h.client.get("/status").status_code == 200
        assert h.client.get("/metrics").status_code == 200
        assert h.client.get("/readyz").status_code == 200
        assert h.client.post("/alerts", data=valid_alerts(), headers=AUTH).json["result"] == "changed"
        assert h.client.post("/drain", data=valid_drain(), headers=AUTH).status_code == 202


def test_world_covers_what_requests_change(h: Harness):
    """Guard for the tests above: a taken request does change the World they compare."""
    before = h.world()
    h.client.post("/drain", data=valid_drain(), headers=AUTH)
    assert h.world() != before
    middle = h.world()
    h.client.post("/alerts", data=valid_alerts(), headers=AUTH)
    assert h.world() != middle
