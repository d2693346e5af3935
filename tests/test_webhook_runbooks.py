"""The webhook serves the shipped runbooks (issue 18: ``runbook_url`` defaults to runbooks that exist).

``GET /runbooks/<AlertName>.md`` answers every alert's runbook as plain text without a credential (the
links come from Alertmanager, Grafana and pagers, which cannot send the token); anything else under
/runbooks is 404 and never reaches the file system; only GET is served.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from webhookhttp import AUTH, TOKEN, build

from mqttlb import contract
from mqttlb.webhook import runbooks
from mqttlb.webhook.app import create_app

ROOT = Path(__file__).resolve().parents[1]


def _client(tmp_path: Path):
    harness = build(tmp_path)
    return create_app(harness.controller, TOKEN, harness.config.max_body_bytes).test_client()


def test_every_alert_has_its_runbook_served_without_a_credential(tmp_path):
    client = _client(tmp_path)
    for name in contract.ALERT_NAMES:
        answer = client.get(f"/runbooks/{name}.md")
        assert answer.status_code == 200, name
        assert answer.headers["Content-Type"] == "text/plain; charset=utf-8"
        assert answer.get_data(as_text=True) == (ROOT / "docs" / "runbooks" / f"{name}.md").read_text()


def test_the_index_links_every_runbook(tmp_path):
    page = _client(tmp_path).get("/runbooks/")
    assert page.status_code == 200
    for name in contract.ALERT_NAMES:
        assert f'href="{name}.md"' in page.get_data(as_text=True)


@pytest.mark.parametrize(
    "path",
    [
        "/runbooks/NoSuchAlert.md",
        "/runbooks/MqttBrokerDown",
        "/runbooks/..%2F..%2Fpyproject.toml.md",
        "/runbooks/../README.md",
        "/runbooks/%2e%2e/README.md",
        "/runbooks/sub/MqttBrokerDown.md",
    ],
)
def test_anything_else_under_runbooks_is_404(tmp_path, path):
    assert _client(tmp_path).get(path, headers=AUTH).status_code == 404


def test_runbooks_are_read_only_and_the_rest_still_wants_the_token(tmp_path):
    client = _client(tmp_path)
    assert client.post("/runbooks/MqttBrokerDown.md", data="x").status_code == 405
    assert client.get("/status").status_code == 401
    assert client.get("/runbooksX").status_code == 404


def test_load_runbooks_keeps_alert_names_only(tmp_path):
    (tmp_path / "MqttX.md").write_text("# x\n")
    (tmp_path / "not-an-alert.md").write_text("no\n")
    (tmp_path / "notes.txt").write_text("no\n")
    assert runbooks.load_runbooks(tmp_path) == {"MqttX": "# x\n"}
    with pytest.raises(FileNotFoundError, match="no runbook folder"):
        runbooks.load_runbooks(tmp_path / "missing")
