"""Test alerts (``mqttlb_test="true"``, sent by `mqttlb test-alert`): seen, recorded, never acted on.

The firing set leaves them out (:data:`mqttlb.webhook.firing.IgnoreReason.TEST`), so no weight or
shedding step can follow from one.  What the operator sees instead, for each notification that
carries test alerts: one log line, one audit entry of kind ``test`` (in the audit log and in
``/status``'s recent decisions, so `mqttlb status` lists it) and ``WEBHOOK_ACTIONS{kind="test"}``.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

from mqttlb.contract import ALERTNAME_LABEL, TEST_ID_LABEL, OutcomeKind
from mqttlb.webhook.firing import AlertLike, ApplyResult, IgnoreReason, is_test_alert
from mqttlb.webhook.metrics import WebhookMetrics

log = logging.getLogger(__name__)

MAX_LISTED = 10  # test alerts named in one audit entry


class Recorder(Protocol):
    """What records an entry (the controller): audit log plus /status's recent decisions."""

    metrics: WebhookMetrics

    def record(self, entry: dict[str, Any]) -> None: ...


def test_alert_entry(alerts: list[AlertLike]) -> dict[str, Any]:
    """The audit entry for the test alerts among ``alerts`` (at least one): kind ``test``, a reason
    naming each (alertname, test_id, status; at most MAX_LISTED), ``applied`` False."""
    tests = [a for a in alerts if is_test_alert(a.labels)]
    named = [
        f"{a.labels.get(ALERTNAME_LABEL, '?')}[{a.labels.get(TEST_ID_LABEL, '-')}] {a.status}" for a in tests
    ][:MAX_LISTED]
    return {
        "kind": OutcomeKind.TEST.value,
        "reason": f"test alert received from Alertmanager: {', '.join(named)}; no lever moved",
        "test_ids": sorted({a.labels.get(TEST_ID_LABEL, "") for a in tests})[:MAX_LISTED],
        "applied": False,
    }


def record_test_alerts(recorder: Recorder, alerts: list[AlertLike], result: ApplyResult) -> bool:
    """Record the test alerts of one applied notification (``result`` from ``FiringSet.apply`` of
    ``alerts``): log, audit, count.  Returns True when there were any."""
    if not any(i.reason is IgnoreReason.TEST for i in result.ignored):
        return False
    entry = test_alert_entry(alerts)
    recorder.metrics.actions.labels(OutcomeKind.TEST.value).inc()
    recorder.record(entry)
    log.info("%s", entry["reason"])
    return True
