"""Test alerts (``mqttlb_test="true"``, sent by `mqttlb test-alert`): seen, recorded, never acted on.

The firing set leaves them out (:data:`mqttlb.webhook.firing.IgnoreReason.TEST`), so no weight or
shedding step can follow from one.  What the operator sees instead, for each notification that
carries a test alert not seen before: one log line, one audit entry of kind ``test`` (in the audit log
and in ``/status``'s recent decisions, so `mqttlb status` lists it) and ``WEBHOOK_ACTIONS{kind="test"}``.
"Seen before" is per firing: Alertmanager re-sends a firing alert every ``repeat_interval`` (and a
group with it whenever the group changes); :class:`SeenTestAlerts` records each test alert once while
it fires and once when it resolves, and counts the re-sends it drops (a debug log line each).
A test alert the webhook's scope leaves out (another MQTT cluster, a node not configured; see
:meth:`mqttlb.webhook.firing.FiringSet.out_of_scope`) is recorded as ignored, with that reason, so
`mqttlb test-alert --cluster nosuch` can say so.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from typing import Any, Protocol

from mqttlb.contract import ALERTNAME_LABEL, TEST_ID_LABEL, OutcomeKind
from mqttlb.webhook.firing import AlertLike, ApplyResult, FiringSet, IgnoreReason, fingerprint_of, is_test_alert
from mqttlb.webhook.metrics import WebhookMetrics

log = logging.getLogger(__name__)

MAX_LISTED = 10  # test alerts named in one audit entry
MAX_REMEMBERED = 1000  # test alert firings/resolves remembered for de-duplication (oldest forgotten first)


class SeenTestAlerts:
    """Which test alerts were already recorded: one key per (fingerprint, startsAt, status), so a firing
    is recorded once however often Alertmanager re-sends it, and its resolve once more.  Thread-safe;
    remembers the last ``limit`` keys (a re-send of a forgotten one is recorded again).  ``resent``:
    how many re-sends :meth:`new` has dropped since start."""

    def __init__(self, limit: int = MAX_REMEMBERED) -> None:
        self._keys: OrderedDict[tuple[str, str, str], None] = OrderedDict()
        self._limit = limit
        self._lock = threading.Lock()
        self.resent = 0

    def new(self, alerts: list[AlertLike]) -> list[AlertLike]:
        """The test alerts among ``alerts`` not seen before (in order), remembering them; the others
        (non-test alerts, re-sends) are left out."""
        fresh: list[AlertLike] = []
        with self._lock:
            for alert in alerts:
                if not is_test_alert(alert.labels):
                    continue
                key = (alert.fingerprint or fingerprint_of(alert.labels), alert.startsAt, alert.status)
                if key in self._keys:
                    self.resent += 1
                    log.debug("test alert %s %s re-sent by Alertmanager; recorded already", key[0], key[2])
                    continue
                self._keys[key] = None
                while len(self._keys) > self._limit:
                    self._keys.popitem(last=False)
                fresh.append(alert)
        return fresh


class Recorder(Protocol):
    """What records an entry (the controller): audit log plus /status's recent decisions."""

    metrics: WebhookMetrics
    firing: FiringSet

    def record(self, entry: dict[str, Any]) -> None: ...


def test_alert_entry(alerts: list[AlertLike], firing: FiringSet | None = None) -> dict[str, Any]:
    """The audit entry for the test alerts among ``alerts`` (at least one): kind ``test``, a reason
    naming each (alertname, test_id, status; at most MAX_LISTED), ``applied`` False.  With ``firing``,
    test alerts its scope leaves out are named in the reason with why (``ignored: other_cluster``) and
    listed in ``ignored`` (test_id -> reason); a real alert like them would be ignored too."""
    tests = [a for a in alerts if is_test_alert(a.labels)]
    scope = {id(a): firing.out_of_scope(a.labels) if firing is not None else None for a in tests}
    named = [_named(a, scope[id(a)], firing) for a in tests][:MAX_LISTED]
    entry: dict[str, Any] = {
        "kind": OutcomeKind.TEST.value,
        "reason": f"test alert received from Alertmanager: {', '.join(named)}; no lever moved",
        "test_ids": sorted({a.labels.get(TEST_ID_LABEL, "") for a in tests})[:MAX_LISTED],
        "applied": False,
    }
    ignored = {a.labels.get(TEST_ID_LABEL, ""): r.value for a in tests if (r := scope[id(a)]) is not None}
    if ignored:
        entry["ignored"] = dict(list(ignored.items())[:MAX_LISTED])
    return entry


def _named(alert: AlertLike, reason: IgnoreReason | None, firing: FiringSet | None) -> str:
    """``MqttlbTestAlert[<test_id>] firing``, plus why the scope leaves it out, e.g. `` (ignored:
    other_cluster; this webhook's cluster is local)``."""
    text = f"{alert.labels.get(ALERTNAME_LABEL, '?')}[{alert.labels.get(TEST_ID_LABEL, '-')}] {alert.status}"
    if reason is None or firing is None:
        return text
    if reason is IgnoreReason.OTHER_CLUSTER:
        return f"{text} (ignored: {reason.value}; this webhook's cluster is {firing.cluster})"
    return f"{text} (ignored: {reason.value}; this webhook's nodes are {', '.join(sorted(firing.nodes or ()))})"


def record_test_alerts(
    recorder: Recorder, alerts: list[AlertLike], result: ApplyResult, seen: SeenTestAlerts | None = None
) -> bool:
    """Record the test alerts of one applied notification (``result`` from ``FiringSet.apply`` of
    ``alerts``): log, audit, count.  With ``seen``, only those it has not seen (firing, or resolved)
    before: Alertmanager's re-sends add nothing.  Returns True when it recorded any."""
    if not any(i.reason is IgnoreReason.TEST for i in result.ignored):
        return False
    fresh = seen.new(alerts) if seen is not None else [a for a in alerts if is_test_alert(a.labels)]
    if not fresh:
        return False
    entry = test_alert_entry(fresh, recorder.firing)
    recorder.metrics.actions.labels(OutcomeKind.TEST.value).inc()
    recorder.record(entry)
    log.info("%s", entry["reason"])
    return True
