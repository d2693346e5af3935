"""Every alert's ``runbook_url`` on a running stack opens (issue 18): the stack's rules point at its own
webhook's ``/runbooks``, which serves the shipped runbooks without a credential."""

from __future__ import annotations

import pytest
import requests
from stackutil import web_auth

from mqttlb import contract
from mqttlb.stack.runner import Stack

pytestmark = pytest.mark.live


def test_every_alerts_runbook_url_answers_200_without_a_credential(live_stack: Stack) -> None:
    topo = live_stack.topology
    rules = requests.get(
        topo.prometheus.url("/api/v1/rules"), params={"type": "alert"}, auth=web_auth(live_stack), timeout=10
    )
    rules.raise_for_status()
    urls = {
        rule["name"]: rule["annotations"]["runbook_url"]
        for group in rules.json()["data"]["groups"]
        for rule in group["rules"]
    }
    assert set(urls) == set(contract.ALERT_NAMES)
    for name, url in urls.items():
        assert url == topo.webhook.url(f"/runbooks/{name}.md")
        answer = requests.get(url, timeout=10)  # no token: a link clicked in Alertmanager or a pager
        assert answer.status_code == 200, f"{name}: {url} answers {answer.status_code}"
        assert answer.text.startswith("# ") and "## What you do" in answer.text, f"{name}: {answer.text[:200]}"
