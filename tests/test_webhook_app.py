"""Flask test-client tests: every bad input is a 4xx with no state change; dedup; dry run; readiness."""

from __future__ import annotations

import copy
import io
import json
import socket
import threading
from pathlib import Path

import pytest

from mqttlb.webhook.app import create_app
from mqttlb.webhook.config import WebhookConfig, WebhookConfigError, load_config, load_token
from mqttlb.webhook.eds import read_eds_file
from mqttlb.webhook.rebalancer import Rebalancer

TOKEN = "s3cret-token-0123456789"


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_config(tmp_path: Path, **extra: object) -> WebhookConfig:
    (tmp_path / "token").write_text(TOKEN + "\n")
    dead = closed_port()  # nothing listens: Prometheus and Envoy are "down" in these tests
    raw = {
        "listen": "127.0.0.1:9643",
        "cluster": "local",
        "envoy_cluster": "mqtt_brokers",
        "envoy_admin": f"http://127.0.0.1:{dead}",
        "prometheus_url": f"http://127.0.0.1:{dead}",
        "eds_path": str(tmp_path / "eds" / "eds.json"),
        "overload_file": str(tmp_path / "envoy" / "pressure"),
        "token_file": str(tmp_path / "token"),
        "state_file": str(tmp_path / "webhook" / "state.json"),
        "audit_log": str(tmp_path / "webhook" / "audit.jsonl"),
        "nodes": [{"name": f"node{i}", "host": "127.0.0.1", "port": 18830 + i} for i in (1, 2, 3)],
        "http_timeout_seconds": 0.5,
        **extra,
    }
    return WebhookConfig.model_validate(raw)


def alert_payload(action: str = "page", status: str = "firing", **changes: object) -> dict:
    payload = {
        "version": "4",
        "groupKey": '{}:{alertname="MqttBrokerDown"}',
        "truncatedAlerts": 0,
        "status": status,
        "receiver": "mqttlb-webhook",
        "groupLabels": {"alertname": "MqttBrokerDown"},
        "commonLabels": {"alertname": "MqttBrokerDown", "action": action},
        "commonAnnotations": {},
        "externalURL": "http://127.0.0.1:9093",
        "alerts": [
            {
                "status": status,
                "labels": {
                    "alertname": "MqttBrokerDown",
                    "action": action,
                    "node": "node2",
                    "cluster": "local",
                },
                "annotations": {"summary": "node2 down"},
                "startsAt": "2026-11-26T12:00:00Z",
                "endsAt": "0001-01-01T00:00:00Z",
                "generatorURL": "http://127.0.0.1:9090/graph",
                "fingerprint": "a1b2c3d4e5f60718",
            }
        ],
    }
    payload.update(changes)
    return payload


@pytest.fixture()
def env(tmp_path):
    config = make_config(tmp_path)
    app = create_app(config)
    return config, app, app.test_client()


def auth(token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def snapshot(config: WebhookConfig) -> dict[str, bytes | None]:
    paths = [config.eds_path, config.state_file, config.overload_file, config.audit_log]
    return {str(p): (Path(p).read_bytes() if Path(p).exists() else None) for p in paths}


def test_start_publishes_neutral_snapshot_and_is_ready(env):
    config, app, client = env
    doc = read_eds_file(config.eds_path)
    weights = {
        e["endpoint"]["hostname"]: e["load_balancing_weight"]
        for e in doc["resources"][0]["endpoints"][0]["lb_endpoints"]
    }
    assert weights == {"node1": 100, "node2": 100, "node3": 100} and doc["version_info"] == "1"
    assert client.get("/readyz").status_code == 200
    assert client.get("/healthz").json == {"status": "ok"}
    metrics = client.get("/metrics").text
    assert (
        'mqttlb_webhook_endpoint_weight{cluster="mqtt_brokers",endpoint="127.0.0.1:18832",node="node2"} 100.0'
        in metrics
    )
    assert "mqttlb_webhook_shed_level 0.0" in metrics


BIG = b'{"version": "4", "pad": "' + b"x" * (1024 * 1024) + b'"}'


@pytest.mark.parametrize(
    ("headers", "body", "status", "reason"),
    [
        ({}, json.dumps(alert_payload()).encode(), 401, "unauthorised"),
        (auth("wrong-token-0123456789"), json.dumps(alert_payload()).encode(), 401, "unauthorised"),
        ({"Authorization": TOKEN}, json.dumps(alert_payload()).encode(), 401, "unauthorised"),
        (auth(), b"{not json", 400, "invalid_payload"),
        (auth(), b"[1, 2]", 400, "invalid_payload"),
        (auth(), json.dumps(alert_payload(version="3")).encode(), 400, "invalid_payload"),
        (auth(), json.dumps(alert_payload(alerts=[])).encode(), 400, "invalid_payload"),
        (auth(), json.dumps(alert_payload(status="pending")).encode(), 400, "invalid_payload"),
        (
            auth(),
            json.dumps({k: v for k, v in alert_payload().items() if k != "groupKey"}).encode(),
            400,
            "invalid_payload",
        ),
        (auth(), json.dumps(alert_payload(action="reboot")).encode(), 422, "unknown_action"),
        (auth(), BIG, 413, "too_large"),
    ],
    ids=[
        "no-token",
        "wrong-token",
        "no-bearer-scheme",
        "malformed-json",
        "not-object",
        "wrong-version",
        "no-alerts",
        "bad-status",
        "missing-groupKey",
        "unknown-action",
        "huge-body",
    ],
)
def test_bad_input_is_rejected_without_state_change(env, headers, body, status, reason):
    config, app, client = env
    before = snapshot(config)
    response = client.post("/alerts", data=body, headers={**headers, "Content-Type": "application/json"})
    assert response.status_code == status
    assert "error" in response.json
    assert snapshot(config) == before
    rejected = f'mqttlb_webhook_rejected_requests_total{{reason="{reason}",route="alerts"}} 1.0'
    assert rejected in client.get("/metrics").text
    assert "mqttlb_webhook_action_failures_total{" not in client.get("/metrics").text


def test_huge_chunked_body_without_content_length_is_413(env):
    config, app, client = env
    before = snapshot(config)
    environ = {"wsgi.input_terminated": True}  # what waitress sets for a chunked request
    response = client.post(
        "/alerts",
        input_stream=io.BytesIO(BIG),
        headers={**auth(), "Content-Type": "application/json", "Transfer-Encoding": "chunked"},
        environ_overrides=environ,
    )
    assert response.status_code == 413
    assert snapshot(config) == before


def test_mixed_actions_in_one_notification_are_422(env):
    config, app, client = env
    payload = alert_payload("page")
    second = copy.deepcopy(payload["alerts"][0])
    second["labels"]["action"] = "shed"
    second["fingerprint"] = "ffff"
    payload["alerts"].append(second)
    before = snapshot(config)
    assert client.post("/alerts", json=payload, headers=auth()).status_code == 422
    assert snapshot(config) == before


def test_page_route_only_takes_page_alerts(env):
    config, app, client = env
    assert client.post("/page", json=alert_payload("shed"), headers=auth()).status_code == 422
    assert client.post("/page", json=alert_payload("page"), headers=auth()).status_code == 200


def test_duplicates_act_once_and_reappear_after_the_window(tmp_path):
    config = make_config(tmp_path)
    clock = [1000.0]
    rb = Rebalancer(config, clock=lambda: clock[0])
    client = create_app(config, rebalancer=rb).test_client()
    payload = alert_payload("page")
    first = client.post("/alerts", json=payload, headers=auth())
    assert first.status_code == 200 and first.json["result"] == "page"
    state_after_first = Path(config.state_file).read_bytes()
    for _ in range(3):  # Alertmanager retry + HA peer
        dup = client.post("/alerts", json=payload, headers=auth())
        assert dup.status_code == 200 and dup.json["result"] == "duplicate"
    assert Path(config.state_file).read_bytes() == state_after_first
    assert len(rb.audit.read()) == 1
    # a different alert set is a different notification
    other = alert_payload("page")
    other["alerts"][0]["fingerprint"] = "0000000000000001"
    assert client.post("/alerts", json=other, headers=auth()).json["result"] == "page"
    # repeat_interval re-send of the same still-firing alert after the window acts again
    clock[0] += rb.dedup_window + 0.1
    assert client.post("/alerts", json=payload, headers=auth()).json["result"] == "page"
    assert len(rb.audit.read()) == 3
    assert 'mqttlb_webhook_actions_total{kind="duplicate"} 3.0' in client.get("/metrics").text


def test_dedup_survives_a_restart(tmp_path):
    config = make_config(tmp_path)
    client = create_app(config).test_client()
    assert client.post("/alerts", json=alert_payload(), headers=auth()).json["result"] == "page"
    restarted = create_app(config).test_client()
    assert restarted.post("/alerts", json=alert_payload(), headers=auth()).json["result"] == "duplicate"


def test_prometheus_down_is_a_counted_failure_with_no_state_change(env):
    config, app, client = env
    before = snapshot(config)
    response = client.post("/alerts", json=alert_payload("rebalance"), headers=auth())
    assert response.status_code == 503 and response.json["reason"] == "prometheus"
    after = snapshot(config)
    assert {k: v for k, v in after.items() if not k.endswith("audit.jsonl")} == {
        k: v for k, v in before.items() if not k.endswith("audit.jsonl")
    }
    assert (
        'mqttlb_webhook_action_failures_total{kind="rebalance",reason="prometheus"} 1.0'
        in client.get("/metrics").text
    )
    # a failed notification is not remembered: Alertmanager's retry gets another chance
    assert client.post("/alerts", json=alert_payload("rebalance"), headers=auth()).status_code == 503


def test_envoy_down_shed_fails_without_state_change(env):
    config, app, client = env
    before = snapshot(config)
    response = client.post("/alerts", json=alert_payload("shed"), headers=auth())
    assert response.status_code == 503 and response.json["reason"] == "envoy"
    assert snapshot(config)[str(config.state_file)] == before[str(config.state_file)]
    assert not Path(config.overload_file).exists()


def test_drain_validation_and_last_node_guard(env):
    config, app, client = env
    assert client.post("/drain", json={"node": "node1", "draining": True}).status_code == 401
    assert client.post("/drain", json={"node": "node1"}, headers=auth()).status_code == 400
    assert client.post("/drain", json={"node": "node9", "draining": True}, headers=auth()).status_code == 404
    assert client.post("/drain", json={"node": "node1", "draining": True}, headers=auth()).status_code == 200
    assert client.post("/drain", json={"node": "node2", "draining": True}, headers=auth()).status_code == 200
    before = snapshot(config)
    assert client.post("/drain", json={"node": "node3", "draining": True}, headers=auth()).status_code == 409
    assert snapshot(config) == before
    doc = read_eds_file(config.eds_path)
    health = {
        e["endpoint"]["hostname"]: e["health_status"]
        for e in doc["resources"][0]["endpoints"][0]["lb_endpoints"]
    }
    assert health == {"node1": "DRAINING", "node2": "DRAINING", "node3": "HEALTHY"}


def test_rest_eds_returns_current_snapshot_and_same_version_for_same_state(env):
    config, app, client = env
    request = {
        "version_info": "",
        "node": {"id": "x", "cluster": "y"},
        "resource_names": ["mqtt_brokers"],
        "type_url": "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment",
    }
    first = client.post("/v3/discovery:endpoints", json=request)
    assert first.status_code == 200
    assert first.json == read_eds_file(config.eds_path)
    again = client.post(
        "/v3/discovery:endpoints", json={**request, "version_info": first.json["version_info"]}
    )
    assert again.json == first.json
    other = client.post("/v3/discovery:endpoints", json={**request, "resource_names": ["other"]})
    assert other.json["resources"] == []
    assert client.post("/v3/discovery:endpoints", data=b"{x").status_code == 400
    assert client.post("/v3/discovery:endpoints", json={**request, "type_url": "bogus"}).status_code == 400


def test_dry_run_decides_but_writes_nothing(tmp_path):
    config = make_config(tmp_path, dry_run=True)
    app = create_app(config)
    client = app.test_client()
    assert client.get("/readyz").status_code == 200
    assert not Path(config.eds_path).exists() and not Path(config.state_file).exists()
    assert client.post("/alerts", json=alert_payload("page"), headers=auth()).status_code == 200
    assert not Path(config.state_file).exists()
    assert app.extensions["rebalancer"].audit.read()[0]["dry_run"] is True


def test_state_persists_across_restart_and_is_republished(tmp_path):
    config = make_config(tmp_path)
    app = create_app(config)
    client = app.test_client()
    client.post("/drain", json={"node": "node3", "draining": True}, headers=auth())
    version = read_eds_file(config.eds_path)["version_info"]
    Path(config.eds_path).unlink()
    create_app(config)
    doc = read_eds_file(config.eds_path)
    assert int(doc["version_info"]) == int(version) + 1
    assert doc["resources"][0]["endpoints"][0]["lb_endpoints"][2]["health_status"] == "DRAINING"


def test_changed_node_set_starts_neutral(tmp_path):
    config = make_config(tmp_path)
    create_app(config).test_client().post("/drain", json={"node": "node3", "draining": True}, headers=auth())
    fewer = config.model_copy(update={"nodes": config.nodes[:2]})
    app = create_app(fewer)
    assert app.extensions["rebalancer"].state.weights == {"node1": 100, "node2": 100}
    assert app.extensions["rebalancer"].state.draining == []


def test_bad_config_and_token_are_clear_errors(tmp_path):
    config = make_config(tmp_path)
    bad = tmp_path / "bad.yaml"
    bad.write_text("nodes: []\n")
    with pytest.raises(WebhookConfigError, match="nodes: List should have at least 1 item"):
        load_config(bad)
    bad.write_text(": : :\n")
    with pytest.raises(WebhookConfigError, match="not valid YAML at line 1"):
        load_config(bad)
    (tmp_path / "token").write_text("short\n")
    with pytest.raises(WebhookConfigError, match="shorter"):
        load_token(config)
    with pytest.raises(WebhookConfigError, match="missing"):
        load_token(config.model_copy(update={"token_file": None}), env={})
    assert (
        load_token(config.model_copy(update={"token_file": None}), env={"MQTTLB_WEBHOOK_TOKEN": TOKEN})
        == TOKEN
    )
    good = tmp_path / "good.yaml"
    good.write_text(
        json.dumps({**json.loads(config.model_dump_json()), "params_overrides": {"policy": {"bogus": 1}}})
    )
    with pytest.raises(WebhookConfigError, match="params_overrides.policy.bogus: unknown key"):
        load_config(good)


def test_concurrent_ha_duplicates_produce_one_action(tmp_path):
    config = make_config(tmp_path)
    app = create_app(config)
    results: list[str] = []
    barrier = threading.Barrier(8)

    def send() -> None:
        client = app.test_client()
        barrier.wait(timeout=5)
        results.append(client.post("/alerts", json=alert_payload(), headers=auth()).json["result"])

    threads = [threading.Thread(target=send) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    assert sorted(results) == ["duplicate"] * 7 + ["page"]
    assert len(app.extensions["rebalancer"].audit.read()) == 1
