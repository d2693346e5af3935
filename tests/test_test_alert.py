"""`mqttlb test-alert` and the webhook's handling of test alerts (``mqttlb_test="true"``), in process.

A test alert routes like a rebalance alert (amtool on the generated Alertmanager config), reaches
the webhook, is recorded (audit log, /status, the ``test`` action counter) and moves no lever: the
same alert without the test label does steer the weights.  The live path (Alertmanager -> webhook)
is in tests/test_stack_live.py.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from webhookhttp import AUTH, Harness, alert, build, notification

from mqttlb import alertmanager_config, contract, testalert
from mqttlb.params import load_params
from mqttlb.webhook.firing import FiringSet, IgnoreReason
from mqttlb.webhook.test_alerts import SeenTestAlerts

HOT = {"node1": 0.95, "node2": 0.30, "node3": 0.30}
TEST_LABELS = {contract.TEST_LABEL: "true", contract.TEST_ID_LABEL: "abc123"}


def labelled_test_alert(**labels: str) -> dict[str, Any]:
    return alert(contract.ALERT_TEST, None, **{**TEST_LABELS, **labels})


def post(h: Harness, *alerts: dict[str, Any]) -> dict[str, Any]:
    answer = h.client.post("/alerts", data=json.dumps(notification(*alerts)), headers=AUTH)
    assert answer.status_code == 200, answer.get_data(as_text=True)
    return dict(answer.json)


def acting_kinds(h: Harness) -> list[str]:
    return [s.kind.value for s in h.controller.reconcile_once().steps if s.acts]


def test_a_test_alert_is_recorded_and_moves_no_lever(tmp_path: Path) -> None:
    h = build(tmp_path, cpu=HOT)
    weights = dict(h.controller.state.weights)
    answer = post(h, labelled_test_alert())
    assert (answer["result"], answer["ignored"]) == ("unchanged", {"test": 1})
    assert h.controller.firing.snapshot().alerts == ()
    assert acting_kinds(h) == [] and h.controller.state.weights == weights and h.controller.state.shed_level == 0

    audit = [e for e in h.controller.audit.read() if e["kind"] == contract.OutcomeKind.TEST.value]
    assert len(audit) == 1 and audit[0]["test_ids"] == ["abc123"] and audit[0]["applied"] is False
    assert f"{contract.ALERT_TEST}[abc123] firing" in audit[0]["reason"]
    recent = h.client.get("/status").json["recent"]
    assert [e["test_ids"] for e in recent if e["kind"] == "test"] == [["abc123"]]
    assert h.metrics()[(contract.WEBHOOK_ACTIONS, (("kind", "test"),))] == 1


def test_the_same_alert_without_the_test_label_steers(tmp_path: Path) -> None:
    """The control: only the label keeps the webhook from acting on the very same alert."""
    h = build(tmp_path, cpu=HOT)
    answer = post(h, labelled_test_alert(**{contract.TEST_LABEL: "false"}))
    assert answer["result"] == "changed"
    assert acting_kinds(h) == [contract.OutcomeKind.REBALANCE.value]
    assert not [e for e in h.controller.audit.read() if e["kind"] == contract.OutcomeKind.TEST.value]


def test_a_test_alert_beside_a_real_one_records_one_and_acts_on_the_other(tmp_path: Path) -> None:
    h = build(tmp_path, cpu=HOT)
    answer = post(h, labelled_test_alert(), alert())
    assert (answer["result"], answer["added"], answer["ignored"]) == ("changed", 1, {"test": 1})
    assert [a.alertname for a in h.controller.firing.snapshot().alerts] == [contract.ALERT_CPU_HIGH]
    assert h.metrics()[(contract.WEBHOOK_ACTIONS, (("kind", "test"),))] == 1


def test_a_resolved_test_alert_is_recorded_too(tmp_path: Path) -> None:
    h = build(tmp_path, cpu=HOT)
    post(h, labelled_test_alert(status="resolved", ends_at="2027-01-15T08:02:00Z"))
    reasons = [e["reason"] for e in h.controller.audit.read() if e["kind"] == "test"]
    assert len(reasons) == 1 and "resolved" in reasons[0]


def test_alertmanagers_re_sends_record_a_test_alert_once_per_firing_and_once_on_resolve(tmp_path: Path) -> None:
    """Trial: each re-send (repeat_interval, a group change) added another `test` entry: 5 for one alert."""
    h = build(tmp_path, cpu=HOT)
    firing = labelled_test_alert(fingerprint="e4a459399ec2abcd")
    for _ in range(4):
        post(h, firing)
    other = labelled_test_alert(**{contract.TEST_ID_LABEL: "def456"})
    post(h, firing, other)  # a second test alert joins the group: the first is re-sent with it
    resolved = {**firing, "status": "resolved", "endsAt": "2027-01-15T08:02:00Z"}
    post(h, resolved)
    post(h, resolved)
    entries = [e for e in h.controller.audit.read() if e["kind"] == contract.OutcomeKind.TEST.value]
    assert [(e["test_ids"], e["reason"].split(": ")[1].split(";")[0]) for e in entries] == [
        (["abc123"], f"{contract.ALERT_TEST}[abc123] firing"),
        (["def456"], f"{contract.ALERT_TEST}[def456] firing"),
        (["abc123"], f"{contract.ALERT_TEST}[abc123] resolved"),
    ]
    assert [e["test_ids"] for e in h.client.get("/status").json["recent"] if e["kind"] == "test"] == [
        ["abc123"],
        ["def456"],
        ["abc123"],
    ]
    assert h.metrics()[(contract.WEBHOOK_ACTIONS, (("kind", "test"),))] == 3


def test_seen_test_alerts_forgets_the_oldest_beyond_its_limit() -> None:
    from mqttlb.webhook.payload import parse_notification

    def parsed(*documents: dict[str, Any]) -> list[Any]:
        return list(parse_notification(json.dumps(notification(*documents)).encode()).alerts)

    def alerts(*ids: str) -> list[Any]:
        return parsed(*[labelled_test_alert(**{contract.TEST_ID_LABEL: i}) for i in ids])

    seen = SeenTestAlerts(limit=2)
    assert [a.labels[contract.TEST_ID_LABEL] for a in seen.new(alerts("a", "b", "a"))] == ["a", "b"]
    assert (seen.new(alerts("a", "b")), seen.resent) == ([], 3)
    assert [a.labels[contract.TEST_ID_LABEL] for a in seen.new(alerts("c", "a"))] == ["c", "a"]
    assert seen.new(parsed(alert())) == []  # not a test alert: never "new"


def test_a_resync_from_alertmanager_leaves_test_alerts_out() -> None:
    firing = FiringSet(refresh_ttl=60)
    listed = {**labelled_test_alert(), "status": {"state": "active"}}
    result = firing.replace_from_api([listed], now=datetime(2027, 1, 15, 8, 1, tzinfo=UTC).timestamp())
    assert [i.reason for i in result.ignored] == [IgnoreReason.TEST] and firing.snapshot().alerts == ()


def test_the_sent_alert_routes_to_the_webhook(tmp_path: Path) -> None:
    amtool = shutil.which("amtool")
    assert amtool is not None, "amtool is not installed (Debian package prometheus-alertmanager)"
    config = tmp_path / "alertmanager.yml"
    built = alertmanager_config.build(load_params(), "http://127.0.0.1:9643/alerts", "/tmp/token")
    config.write_text(alertmanager_config.render(built))
    document = testalert.alert_document("local", "abc123", 120, datetime(2027, 1, 15, 8, 0, tzinfo=UTC))
    assert (document["startsAt"], document["endsAt"]) == ("2027-01-15T08:00:00Z", "2027-01-15T08:02:00Z")
    labels = [f"{k}={v}" for k, v in document["labels"].items()]
    routed = subprocess.run(
        [amtool, "config", "routes", "test", f"--config.file={config}", *labels], capture_output=True, text=True
    )
    assert routed.stdout.strip() == contract.RECEIVER_WEBHOOK, routed.stdout + routed.stderr


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--state-dir", "{tmp}/nowhere"], "no stack was started in"),
        (
            [
                "--alertmanager",
                "http://127.0.0.1:1",
                "--webhook",
                "http://127.0.0.1:1",
                "--cluster",
                "c",
                "--wait",
                "0",
            ],
            "Alertmanager does not answer at http://127.0.0.1:1/api/v2/alerts",
        ),
        (
            ["--alertmanager", "http://127.0.0.1:1", "--webhook", "http://127.0.0.1:1", "--cluster", "c"],
            "the webhook does not answer at http://127.0.0.1:1/status",
        ),
        (
            ["--alertmanager", "x", "--webhook", "x", "--cluster", "c", "--webhook-token-file", "{tmp}/no-token"],
            "the webhook's token file {tmp}/no-token: cannot read",
        ),
        (
            ["--alertmanager", "x", "--webhook", "x", "--cluster", "c", "--duration", "0"],
            "--duration must be more than 0 seconds",
        ),
    ],
)
def test_nothing_sent_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    code = testalert.main([a.replace("{tmp}", str(tmp_path)) for a in argv])
    err = capsys.readouterr().err
    assert code == 2 and message.replace("{tmp}", str(tmp_path)) in err and len(err.strip().splitlines()) == 1, err


class _Answer:
    def __init__(self, status_code: int) -> None:
        self.status_code = status_code


@pytest.mark.parametrize(
    ("token", "status", "message"),
    [
        ("", 200, "the webhook's token file {tmp}/token: empty"),
        ("wrong", 401, "the webhook at http://wh/status refuses the token in {tmp}/token (401)"),
        ("right", 503, "the webhook at http://wh/status answered 503, not 200"),
    ],
    ids=["empty", "refused", "not-ready"],
)
def test_a_bad_webhook_token_stops_it_before_anything_is_posted(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    token: str,
    status: int,
    message: str,
) -> None:
    """Trial: a wrong token file posted the alert, then waited 12 s and said "did not record it"."""
    (tmp_path / "token").write_text(token + "\n")
    sent: list[Any] = []
    asked: list[dict[str, str]] = []
    monkeypatch.setattr(testalert, "send", lambda *a, **k: sent.append(a))
    monkeypatch.setattr(testalert.requests, "get", lambda url, headers, **k: asked.append(headers) or _Answer(status))
    argv = ["--alertmanager", "http://am", "--webhook", "http://wh", "--cluster", "c"]
    code = testalert.main([*argv, "--webhook-token-file", str(tmp_path / "token")])
    err = capsys.readouterr().err
    assert code == 2 and sent == [] and len(err.strip().splitlines()) == 1, err
    assert message.replace("{tmp}", str(tmp_path)) in err
    assert asked == ([] if not token else [{"Authorization": f"Bearer {token}"}])


def test_an_accepted_token_lets_the_alert_go(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The control: the same check with a 200 posts the alert."""
    (tmp_path / "token").write_text("right\n")
    sent: list[Any] = []
    monkeypatch.setattr(testalert, "send", lambda *a, **k: sent.append(a))
    monkeypatch.setattr(testalert.requests, "get", lambda *a, **k: _Answer(200))
    monkeypatch.setattr(testalert, "wait_recorded", lambda *a, **k: None)
    argv = ["--alertmanager", "http://am", "--webhook", "http://wh", "--cluster", "c", "--wait", "1"]
    assert testalert.main([*argv, "--webhook-token-file", str(tmp_path / "token")]) == 1 and len(sent) == 1


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--wait", "-1"], "--wait: must be between 0 and 86400 seconds"),
        (["--duration", "soon"], "--duration: could not convert string to float"),
    ],
)
def test_bad_flags_are_usage_errors(capsys: pytest.CaptureFixture[str], argv: list[str], message: str) -> None:
    with pytest.raises(SystemExit) as exc:
        testalert.main(argv)
    assert exc.value.code == 2 and message in capsys.readouterr().err


@pytest.mark.parametrize(
    ("labels", "reason"),
    [
        ({"node": "node9"}, "unknown_node"),
        ({contract.CLUSTER_LABEL: "nosuch"}, "other_cluster"),
    ],
    ids=["node9", "other-cluster"],
)
def test_an_alert_out_of_scope_is_ignored_with_its_reason(tmp_path: Path, labels: dict[str, str], reason: str) -> None:
    """Trial: alerts for node9 (not configured) or another cluster were added and would hold the weights."""
    h = build(tmp_path, cpu=HOT)
    weights = dict(h.controller.state.weights)
    node = labels.pop("node", "node1")
    answer = post(h, alert(node=node, **labels))
    assert (answer["result"], answer["added"], answer["ignored"]) == ("unchanged", 0, {reason: 1})
    assert h.controller.firing.snapshot().alerts == ()
    assert acting_kinds(h) == [] and h.controller.state.weights == weights
    assert h.metrics()[(contract.WEBHOOK_ALERTS_IGNORED, (("reason", reason),))] == 1
    assert h.metrics()[(contract.WEBHOOK_ALERTS_IGNORED, (("reason", "test"),))] == 0


def test_a_test_alert_for_another_cluster_is_recorded_as_ignored(tmp_path: Path) -> None:
    h = build(tmp_path, cpu=HOT)
    answer = post(h, labelled_test_alert(**{contract.CLUSTER_LABEL: "nosuch"}))
    assert answer["ignored"] == {"test": 1}
    recent = [e for e in h.client.get("/status").json["recent"] if e["kind"] == "test"]
    assert recent[0]["ignored"] == {"abc123": "other_cluster"}
    assert f"(ignored: other_cluster; this webhook's cluster is {h.config.cluster})" in recent[0]["reason"]


def test_test_alert_reports_an_ignored_alert(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`mqttlb test-alert --cluster nosuch`: what the webhook recorded says ignored, and the command says so."""
    entry = {"kind": "test", "test_ids": ["t1"], "ignored": {"t1": "other_cluster"}, "reason": "test alert ... ignored"}
    monkeypatch.setattr(testalert, "send", lambda *a, **k: None)
    monkeypatch.setattr(testalert, "check_webhook", lambda *a, **k: None)
    monkeypatch.setattr(testalert, "wait_recorded", lambda *a, **k: entry)
    monkeypatch.setattr(testalert.uuid, "uuid4", lambda: type("U", (), {"hex": "t1"})())
    code = testalert.main(["--alertmanager", "http://127.0.0.1:1", "--webhook", "http://x", "--cluster", "nosuch"])
    out = capsys.readouterr()
    assert code == 1 and "IGNORED it (other_cluster)" in out.out, out
