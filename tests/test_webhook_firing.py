"""The firing set (mqttlb.webhook.firing): notifications only update desired state.

Every time is a fake clock value; nothing sleeps.  Payloads are the real shapes captured from
Alertmanager 0.25 on loopback (webhook version 4 and ``GET /api/v2/alerts``).
"""

from __future__ import annotations

import dataclasses
import json
import threading
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mqttlb.contract import ACTION_LABEL, ALERT_CPU_CRITICAL, ALERT_CPU_HIGH, ALERT_IMBALANCED, Action
from mqttlb.params import duration_seconds, load_params
from mqttlb.webhook.firing import (
    CLUSTER_LABEL,
    GO_ZERO_NS,
    NODE_LABEL,
    NS_PER_MS,
    NS_PER_S,
    FiringInputError,
    FiringSet,
    IgnoreReason,
    TimestampError,
    fingerprint_of,
    format_timestamp,
    parse_ends_at,
    parse_timestamp,
    refresh_ttl_for,
)
from mqttlb.webhook.payload import Alert, parse_notification

TIMING = load_params().alertmanager
GROUP_INTERVAL = duration_seconds(TIMING.group_interval)
REPEAT_INTERVAL = duration_seconds(TIMING.repeat_interval)
HA_PEER_OFFSET = 15.2  # the second Alertmanager of an HA pair, one peer timeout (15 s) later
TTL = refresh_ttl_for(GROUP_INTERVAL, REPEAT_INTERVAL)
ZERO = "0001-01-01T00:00:00Z"  # what Alertmanager sends as endsAt of a firing alert
T0 = 1_700_000_000.0
CLUSTER = "lab"

# Captured from prometheus-alertmanager 0.25 (the fingerprint is Alertmanager's own), when the MQTT cluster
# label was still named `cluster`: the sets that read it are made with CAPTURED_CLUSTER_LABEL.
CAPTURED_CLUSTER_LABEL = "cluster"
REAL_LABELS = {
    "action": "rebalance",
    "alertname": "MqttBrokerCpuHigh",
    "cluster": "lab",
    "node": "node1",
    "severity": "warning",
}
REAL_FINGERPRINT = "ea968c3b9968578b"
REAL_NOTIFICATION = {
    "receiver": "hook",
    "status": "firing",
    "alerts": [
        {
            "status": "firing",
            "labels": REAL_LABELS,
            "annotations": {},
            "startsAt": "2026-11-30T12:26:50.123456789Z",
            "endsAt": ZERO,
            "generatorURL": "",
            "fingerprint": REAL_FINGERPRINT,
        }
    ],
    "groupLabels": {"action": "rebalance", "alertname": "MqttBrokerCpuHigh", "cluster": "lab"},
    "commonLabels": REAL_LABELS,
    "commonAnnotations": {},
    "externalURL": "http://vm:34891",
    "version": "4",
    "groupKey": '{}:{action="rebalance", alertname="MqttBrokerCpuHigh", cluster="lab"}',
    "truncatedAlerts": 0,
}
REAL_API_ALERTS = [
    {
        "annotations": {},
        "endsAt": "2026-11-30T12:31:50.500Z",
        "fingerprint": REAL_FINGERPRINT,
        "receivers": [{"name": "hook"}],
        "startsAt": "2026-11-30T12:26:50.123Z",  # the API keeps milliseconds only
        "status": {"inhibitedBy": [], "silencedBy": [], "state": "active"},
        "updatedAt": "2026-11-30T12:27:50.266Z",
        "labels": REAL_LABELS,
    }
]
REAL_API_NOW = parse_timestamp("2026-11-30T12:27:52Z") / NS_PER_S  # when the GET was sent


class FakeClock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def advance(self, seconds: float) -> float:
        self.now += seconds
        return self.now


def labels(alertname: str, node: str | None = None, action: str = Action.REBALANCE) -> dict[str, str]:
    result = {"alertname": alertname, CLUSTER_LABEL: CLUSTER, ACTION_LABEL: action, "severity": "warning"}
    if node is not None:
        result[NODE_LABEL] = node
    return result


HIGH1 = labels(ALERT_CPU_HIGH, "node1")
HIGH2 = labels(ALERT_CPU_HIGH, "node2")
IMBALANCED = labels(ALERT_IMBALANCED)
CRITICAL = labels(ALERT_CPU_CRITICAL, action=Action.SHED)


def at(seconds: float) -> str:
    """An Alertmanager timestamp ``seconds`` after T0, with nanoseconds as the webhook sends them."""
    return format_timestamp(round((T0 + seconds) * NS_PER_S) + 123_456_789)


def firing(alert_labels: dict[str, str], starts: float, *, fingerprint: bool = True) -> Alert:
    return Alert(
        status="firing",
        labels=alert_labels,
        startsAt=at(starts),
        endsAt=ZERO,
        fingerprint=fingerprint_of(alert_labels) if fingerprint else "",
    )


def resolved(alert_labels: dict[str, str], starts: float, ends: float) -> Alert:
    return Alert(
        status="resolved",
        labels=alert_labels,
        startsAt=at(starts),
        endsAt=at(ends),
        fingerprint=fingerprint_of(alert_labels),
    )


def episodes(fs: FiringSet) -> dict[str, int]:
    """fingerprint -> startsAt (ns) of every firing entry: what the reconcile loop acts on."""
    return {a.fingerprint: a.starts_at_ns for a in fs.snapshot().alerts}


# --------------------------------------------------------------------------- fingerprints


def test_fingerprint_is_alertmanagers() -> None:
    # prometheus/common model/signature_test.go TestMetricToFingerprint, and a live Alertmanager 0.25.
    assert fingerprint_of({}) == f"{14695981039346656037:016x}"
    assert fingerprint_of({"name": "garland, briggs", "fear": "love is not enough"}) == f"{5799056148416392346:016x}"
    assert fingerprint_of(REAL_LABELS) == REAL_FINGERPRINT
    assert fingerprint_of(dict(reversed(list(REAL_LABELS.items())))) == REAL_FINGERPRINT
    assert fingerprint_of({**REAL_LABELS, "node": "node2"}) != REAL_FINGERPRINT


def test_an_alert_without_fingerprint_gets_the_same_key() -> None:
    clock = FakeClock()
    fs = FiringSet(refresh_ttl=TTL)
    assert fs.apply([firing(HIGH1, 0, fingerprint=False)], clock.now).added == (fingerprint_of(HIGH1),)
    copy = fs.apply([firing(HIGH1, 0)], clock.advance(1))
    assert not copy.changed
    assert [(i.fingerprint, i.reason) for i in copy.ignored] == [(fingerprint_of(HIGH1), IgnoreReason.DUPLICATE)]


# --------------------------------------------------------------------------- timestamps


@pytest.mark.parametrize(
    ("text", "ns"),
    [
        ("2024-01-01T00:00:00.123456789Z", 1_704_067_200_123_456_789),
        ("2024-01-01T00:00:00Z", 1_704_067_200_000_000_000),
        ("2024-01-01T00:00:00.5Z", 1_704_067_200_500_000_000),
        ("2024-01-01T02:00:00.123+02:00", 1_704_067_200_123_000_000),
        ("2023-12-31T19:30:00-04:30", 1_704_067_200_000_000_000),
        ("2024-01-01t00:00:00z", 1_704_067_200_000_000_000),
        ("2024-01-01T00:00:00.1234567891Z", 1_704_067_200_123_456_789),  # beyond ns: truncated
        ("1969-12-31T23:59:59.999999999Z", -1),
        ("0001-01-01T00:00:00Z", GO_ZERO_NS),
    ],
)
def test_timestamps_parse_to_nanoseconds(text: str, ns: int) -> None:
    assert parse_timestamp(text) == ns
    assert parse_timestamp(format_timestamp(ns)) == ns


def test_format_is_go_rfc3339nano() -> None:
    assert format_timestamp(1_704_067_200_123_456_789) == "2024-01-01T00:00:00.123456789Z"
    assert format_timestamp(1_704_067_200_500_000_000) == "2024-01-01T00:00:00.5Z"
    assert format_timestamp(GO_ZERO_NS) == ZERO


def test_unset_ends_at() -> None:
    assert parse_ends_at(ZERO) is None
    assert parse_ends_at("") is None
    assert parse_ends_at(None) is None
    assert parse_ends_at("2024-01-01T00:00:00Z") == 1_704_067_200 * NS_PER_S


@pytest.mark.parametrize(
    "text",
    [
        "",
        "yesterday",
        "2024-01-01",
        "2024-01-01T00:00:00",  # no zone
        "2024-01-01 00:00:00Z",  # not RFC 3339's T
        "2024-13-01T00:00:00Z",
        "2024-02-30T00:00:00Z",
        "2024-01-01T24:00:00Z",
        "2024-01-01T00:00:60Z",
        "2024-01-01T00:00:00+24:00",
        "2024-01-01T00:00:00.Z",
        "1704067200",
        "2024-01-01T00:00:00Z" + "0" * 80,
    ],
)
def test_bad_timestamps_are_rejected(text: str) -> None:
    with pytest.raises(TimestampError, match="timestamp"):
        parse_timestamp(text)
    assert issubclass(TimestampError, ValueError) and issubclass(TimestampError, FiringInputError)


@pytest.mark.parametrize("field", ["startsAt", "endsAt"])
def test_a_bad_timestamp_rejects_the_whole_notification(field: str) -> None:
    fs = FiringSet(refresh_ttl=TTL)
    good = firing(HIGH1, 0)
    bad = firing(HIGH2, 0).model_copy(update={field: "2024-01-01T00:00:00"})
    with pytest.raises(TimestampError, match="not RFC 3339"):
        fs.apply([good, bad], T0)
    assert fs.snapshot().alerts == () and fs.snapshot().version == 0


def test_an_unknown_status_is_rejected() -> None:
    fs = FiringSet(refresh_ttl=TTL)
    bad = firing(HIGH1, 0).model_copy(update={"status": "pending"})
    with pytest.raises(FiringInputError, match="status"):
        fs.apply([bad], T0)
    assert fs.snapshot().version == 0


# --------------------------------------------------------------------------- duplicates


def test_an_ha_copy_at_15_2_s_changes_nothing() -> None:
    clock = FakeClock()
    fs = FiringSet(refresh_ttl=TTL, cluster_label=CAPTURED_CLUSTER_LABEL)
    notification = parse_notification(json.dumps(REAL_NOTIFICATION).encode())
    first = fs.apply(notification.alerts, clock.now)
    assert first.changed and first.added == (REAL_FINGERPRINT,)
    before = fs.snapshot()
    copy = fs.apply(notification.alerts, clock.advance(HA_PEER_OFFSET))
    assert not copy.changed
    assert copy.version == before.version == 1
    assert [i.reason for i in copy.ignored] == [IgnoreReason.DUPLICATE]
    assert episodes(fs) == {REAL_FINGERPRINT: parse_timestamp("2026-11-30T12:26:50.123456789Z")}
    assert fs.nodes_hot(CLUSTER) == ("node1",)
    # The copy refreshed the entry: it now expires one TTL after the copy.
    assert fs.firing(CLUSTER)[0].expires_at == pytest.approx(clock.now + TTL)


@settings(max_examples=200, deadline=None)
@given(offsets=st.lists(st.floats(0, REPEAT_INTERVAL + GROUP_INTERVAL), min_size=1, max_size=8))
def test_copies_at_any_offset_up_to_repeat_interval_change_nothing(offsets: list[float]) -> None:
    fs = FiringSet(refresh_ttl=TTL)
    fs.apply([firing(HIGH1, 0), firing(IMBALANCED, -3)], T0)
    before = fs.snapshot()
    for offset in sorted(offsets):
        # a retry, an HA copy or a repeat_interval re-send: the same alerts, in either order
        result = fs.apply([firing(IMBALANCED, -3), firing(HIGH1, 0)], T0 + offset)
        assert not result.changed
        assert {i.reason for i in result.ignored} == {IgnoreReason.DUPLICATE}
    after = fs.snapshot()
    assert after.version == before.version
    assert [dataclasses.replace(a, updated_at=0, expires_at=0) for a in after.alerts] == [
        dataclasses.replace(a, updated_at=0, expires_at=0) for a in before.alerts
    ]


# --------------------------------------------------------------------------- resolve and staleness


def test_resolve_removes() -> None:
    clock = FakeClock()
    fs = FiringSet(refresh_ttl=TTL)
    fs.apply([firing(HIGH1, 0)], clock.now)
    assert fs.rebalance_firing(CLUSTER)
    result = fs.apply([resolved(HIGH1, 0, 40)], clock.advance(40))
    assert result.changed and result.removed == (fingerprint_of(HIGH1),)
    assert not fs.rebalance_firing(CLUSTER) and fs.firing(CLUSTER) == () and fs.clusters() == ()
    assert fs.snapshot().tombstones == 1
    # its HA copy: nothing left to change
    copy = fs.apply([resolved(HIGH1, 0, 40)], clock.advance(HA_PEER_OFFSET))
    assert not copy.changed and [i.reason for i in copy.ignored] == [IgnoreReason.DUPLICATE]


def test_a_resolve_of_an_older_episode_is_ignored() -> None:
    clock = FakeClock()
    fs = FiringSet(refresh_ttl=TTL)
    fs.apply([firing(HIGH1, 0)], clock.now)
    fs.apply([resolved(HIGH1, 0, 30)], clock.advance(30))
    fs.apply([firing(HIGH1, 60)], clock.advance(30))  # a new episode
    # The first episode's resolve arrives again (HA copy, retry): its endsAt (30) is before the
    # held episode's startsAt (60).
    late = fs.apply([resolved(HIGH1, 0, 30)], clock.advance(HA_PEER_OFFSET))
    assert not late.changed and [i.reason for i in late.ignored] == [IgnoreReason.STALE]
    assert episodes(fs) == {fingerprint_of(HIGH1): parse_timestamp(at(60))}
    assert fs.rebalance_firing(CLUSTER)


def test_a_firing_copy_after_a_newer_resolve_is_ignored() -> None:
    clock = FakeClock()
    fs = FiringSet(refresh_ttl=TTL)
    fs.apply([firing(HIGH1, 0)], clock.now)
    fs.apply([resolved(HIGH1, 0, 30)], clock.advance(30))
    late = fs.apply([firing(HIGH1, 0)], clock.advance(HA_PEER_OFFSET))  # the peer's firing copy, late
    assert not late.changed and [i.reason for i in late.ignored] == [IgnoreReason.STALE]
    assert not fs.rebalance_firing(CLUSTER)
    # The resolve may even come before the firing it closes: the firing is still stale.
    other = FiringSet(refresh_ttl=TTL)
    other.apply([resolved(HIGH2, 0, 30)], T0)
    assert [i.reason for i in other.apply([firing(HIGH2, 0)], T0 + 1).ignored] == [IgnoreReason.STALE]
    assert other.firing(CLUSTER) == ()


def test_a_newer_episode_replaces_the_held_one() -> None:
    clock = FakeClock()
    fs = FiringSet(refresh_ttl=TTL)
    fs.apply([firing(HIGH1, 0)], clock.now)
    newer = fs.apply([firing(HIGH1, 90)], clock.advance(90))  # its resolve was lost
    assert newer.changed and newer.updated == (fingerprint_of(HIGH1),)
    older = fs.apply([firing(HIGH1, 0)], clock.advance(1))
    assert not older.changed and [i.reason for i in older.ignored] == [IgnoreReason.STALE]
    assert episodes(fs) == {fingerprint_of(HIGH1): parse_timestamp(at(90))}


def test_one_group_resolving_leaves_the_other_firing() -> None:
    clock = FakeClock()
    fs = FiringSet(refresh_ttl=TTL)
    fs.apply([firing(IMBALANCED, 0)], clock.now)  # group A
    fs.apply([firing(HIGH1, 2)], clock.advance(2))  # group B
    result = fs.apply([resolved(IMBALANCED, 0, 50)], clock.advance(48))
    assert result.removed == (fingerprint_of(IMBALANCED),)
    assert fs.rebalance_firing(CLUSTER)  # recovery must not start
    assert fs.nodes_hot(CLUSTER) == ("node1",)
    assert [a.alertname for a in fs.firing(CLUSTER)] == [ALERT_CPU_HIGH]
    fs.apply([resolved(HIGH1, 2, 60)], clock.advance(10))
    assert not fs.rebalance_firing(CLUSTER)


def test_queries_by_action_and_cluster() -> None:
    fs = FiringSet(refresh_ttl=TTL)
    other_cluster = {**HIGH2, CLUSTER_LABEL: "other"}
    fs.apply([firing(CRITICAL, 0), firing(HIGH1, 0), firing(other_cluster, 0)], T0)
    assert fs.clusters() == ("lab", "other")
    assert fs.shed_firing(CLUSTER) and fs.rebalance_firing(CLUSTER)
    assert not fs.shed_firing("other") and fs.nodes_hot("other") == ("node2",)
    assert fs.nodes_hot(CLUSTER) == ("node1",)  # CpuCritical names no node
    assert fs.firing("nowhere") == () and not fs.rebalance_firing("nowhere")
    critical = next(a for a in fs.firing(CLUSTER) if a.action is Action.SHED)
    assert critical.alertname == ALERT_CPU_CRITICAL and critical.node is None
    assert critical.label(ACTION_LABEL) == Action.SHED and critical.label("missing") is None


def test_page_alerts_and_alerts_without_cluster_are_not_actionable() -> None:
    fs = FiringSet(refresh_ttl=TTL)
    page = labels("MqttBrokerDown", "node1", action=Action.PAGE)
    no_cluster = {k: v for k, v in HIGH1.items() if k != CLUSTER_LABEL}
    no_action = {k: v for k, v in HIGH1.items() if k != ACTION_LABEL}
    result = fs.apply([firing(page, 0), firing(no_cluster, 0), firing(no_action, 0)], T0)
    assert not result.changed
    assert [i.reason for i in result.ignored] == [IgnoreReason.NOT_ACTIONABLE] * 3
    assert fs.clusters() == ()


# --------------------------------------------------------------------------- expiry and tombstones


def test_an_entry_expires_without_a_refresh() -> None:
    fs = FiringSet(refresh_ttl=TTL)
    fs.apply([firing(HIGH1, 0), firing(IMBALANCED, 0)], T0)
    resend = REPEAT_INTERVAL + GROUP_INTERVAL  # the longest gap between two sends of a firing group
    fs.apply([firing(HIGH1, 0)], T0 + resend)  # a re-send of HIGH1 only
    now = T0 + TTL
    snapshot = fs.snapshot()
    assert len(snapshot.alerts) == 2  # nothing removed yet: the set has not been told the time
    assert [a.fingerprint for a in snapshot.firing(CLUSTER, now=now)] == [fingerprint_of(HIGH1)]
    assert fs.rebalance_firing(CLUSTER, now=T0 + resend + TTL) is False
    result = fs.expire(now)
    assert result.changed and result.expired == (fingerprint_of(IMBALANCED),)
    assert not fs.expire(now).changed
    for k in range(2, 12):  # every re-send keeps HIGH1 alive, far beyond one TTL
        assert not fs.apply([firing(HIGH1, 0)], T0 + k * resend).changed
    assert episodes(fs) == {fingerprint_of(HIGH1): parse_timestamp(at(0))}
    # A copy of the expired alert's episode adds it back: Alertmanager still says it fires.
    assert fs.apply([firing(IMBALANCED, 0)], T0 + 12 * resend).added == (fingerprint_of(IMBALANCED),)


def test_apply_expires_first() -> None:
    fs = FiringSet(refresh_ttl=TTL)
    fs.apply([firing(HIGH1, 0)], T0)
    result = fs.apply([firing(HIGH2, 0)], T0 + TTL)
    assert result.expired == (fingerprint_of(HIGH1),) and result.added == (fingerprint_of(HIGH2),)


def test_a_known_ends_at_outlives_the_ttl() -> None:
    fs = FiringSet(refresh_ttl=TTL)
    alert = firing(HIGH1, 0).model_copy(update={"endsAt": at(TTL * 3)})
    fs.apply([alert], T0)
    assert fs.firing(CLUSTER, now=T0 + TTL * 2)
    assert not fs.firing(CLUSTER, now=T0 + TTL * 3 + 1)


def test_tombstones_are_pruned_by_age_and_bounded() -> None:
    fs = FiringSet(refresh_ttl=TTL, tombstone_ttl=60)
    fs.apply([firing(HIGH1, 0)], T0)
    fs.apply([resolved(HIGH1, 0, 30)], T0 + 30)
    assert fs.apply([firing(HIGH1, 0)], T0 + 89).ignored[0].reason is IgnoreReason.STALE
    # 60 s after the resolve it is forgotten: a copy that late re-adds the alert (documented).
    late = fs.apply([firing(HIGH1, 0)], T0 + 90)
    assert late.added == (fingerprint_of(HIGH1),) and fs.snapshot().tombstones == 0

    bounded = FiringSet(refresh_ttl=TTL, max_tombstones=2)
    nodes = [labels(ALERT_CPU_HIGH, f"node{i}") for i in range(4)]
    for i, node in enumerate(nodes):
        bounded.apply([resolved(node, 0, 10)], T0 + i)
    assert bounded.snapshot().tombstones == 2
    assert bounded.apply([firing(nodes[0], 0)], T0 + 5).added  # oldest forgotten
    assert bounded.apply([firing(nodes[3], 0)], T0 + 6).ignored[0].reason is IgnoreReason.STALE


# --------------------------------------------------------------------------- replace_from_api


def test_replace_from_api_rebuilds_the_set() -> None:
    fs = FiringSet(refresh_ttl=TTL, cluster_label=CAPTURED_CLUSTER_LABEL)
    result = fs.replace_from_api(REAL_API_ALERTS, REAL_API_NOW)
    assert result.added == (REAL_FINGERPRINT,)
    (entry,) = fs.firing(CLUSTER)
    assert entry.node == "node1" and entry.action is Action.REBALANCE
    assert entry.ends_at_ns == parse_timestamp("2026-11-30T12:31:50.5Z")
    # The webhook's nanosecond startsAt is the same episode as the API's milliseconds.
    notification = parse_notification(json.dumps(REAL_NOTIFICATION).encode())
    copy = fs.apply(notification.alerts, REAL_API_NOW + 5)
    assert not copy.changed and copy.ignored[0].reason is IgnoreReason.DUPLICATE
    assert fs.firing(CLUSTER)[0].starts_at_ns == parse_timestamp("2026-11-30T12:26:50.123456789Z")


def api_alert(alert_labels: dict[str, str], starts: float, state: str = "active", ends: float = 300) -> dict[str, Any]:
    return {
        "annotations": {},
        "endsAt": format_timestamp(round((T0 + ends) * NS_PER_S)),
        "fingerprint": fingerprint_of(alert_labels),
        "receivers": [{"name": "mqttlb-webhook"}],
        "startsAt": format_timestamp(round((T0 + starts) * NS_PER_S) + 123 * NS_PER_MS),
        "status": {"inhibitedBy": [], "silencedBy": [], "state": state},
        "updatedAt": format_timestamp(round(T0 * NS_PER_S)),
        "labels": alert_labels,
    }


def test_replace_from_api_is_authoritative() -> None:
    fs = FiringSet(refresh_ttl=TTL)
    fs.apply([firing(HIGH1, 0), firing(HIGH2, 0)], T0)  # HIGH2's resolve was lost
    fs.apply([firing(IMBALANCED, 0)], T0 + 20)  # arrives after the GET below was sent
    result = fs.replace_from_api([api_alert(HIGH1, 0), api_alert(CRITICAL, 5, state="unprocessed")], T0 + 10)
    assert result.removed == (fingerprint_of(HIGH2),)
    assert result.added == (fingerprint_of(CRITICAL),)
    assert [i.reason for i in result.ignored] == [IgnoreReason.DUPLICATE]
    assert {a.alertname for a in fs.firing(CLUSTER)} == {ALERT_CPU_HIGH, ALERT_CPU_CRITICAL, ALERT_IMBALANCED}
    assert fs.nodes_hot(CLUSTER) == ("node1",)


def test_a_late_copy_of_an_episode_the_resync_removed_stays_out() -> None:
    # An HA peer's copy captured before the resolve arrives after a resync that no longer lists it.
    fs = FiringSet(refresh_ttl=TTL)
    fs.apply([firing(HIGH1, 0)], T0)
    assert fs.replace_from_api([], T0 + 10).removed == (fingerprint_of(HIGH1),)
    late = fs.apply([firing(HIGH1, 0)], T0 + 11)
    assert not late.changed and [i.reason for i in late.ignored] == [IgnoreReason.STALE]
    assert not fs.rebalance_firing(CLUSTER)
    assert fs.apply([firing(HIGH1, 60)], T0 + 70).changed  # a new episode of the alert does fire


def test_replace_from_api_leaves_suppressed_alerts_out_unless_asked() -> None:
    silenced = [api_alert(HIGH1, 0, state="suppressed")]
    fs = FiringSet(refresh_ttl=TTL)
    fs.apply([firing(HIGH1, 0)], T0)
    result = fs.replace_from_api(silenced, T0 + 10)
    assert result.removed == (fingerprint_of(HIGH1),)
    assert [i.reason for i in result.ignored] == [IgnoreReason.SUPPRESSED]
    assert fs.replace_from_api(silenced, T0 + 11, include_suppressed=True).added == (fingerprint_of(HIGH1),)


def test_replace_from_api_respects_resolves_and_ends_at() -> None:
    fs = FiringSet(refresh_ttl=TTL)
    fs.apply([firing(HIGH1, 0)], T0)
    fs.apply([resolved(HIGH1, 0, 30)], T0 + 30)
    # An Alertmanager that has not seen the resolve yet still lists the episode: it stays resolved.
    result = fs.replace_from_api([api_alert(HIGH1, 0), api_alert(HIGH2, 0, ends=25)], T0 + 31)
    assert not result.changed
    assert {i.reason for i in result.ignored} == {IgnoreReason.STALE, IgnoreReason.UNKNOWN}
    assert fs.firing(CLUSTER) == () and fs.snapshot().tombstones == 2  # HIGH2 ended at +25: resolved


def test_a_resolve_of_an_alert_never_seen_firing_is_unknown_and_a_repeat_of_it_a_duplicate() -> None:
    fs = FiringSet(refresh_ttl=TTL)
    first = fs.apply([resolved(HIGH1, 0, 30)], T0 + 30)
    assert not first.changed and [i.reason for i in first.ignored] == [IgnoreReason.UNKNOWN]
    again = fs.apply([resolved(HIGH1, 0, 30)], T0 + 31)
    assert [i.reason for i in again.ignored] == [IgnoreReason.DUPLICATE]
    assert fs.apply([firing(HIGH1, 0)], T0 + 32).ignored[0].reason is IgnoreReason.STALE  # it stays resolved


@pytest.mark.parametrize(
    "document",
    [
        {"alerts": []},
        [{"labels": HIGH1}],
        [{**api_alert(HIGH1, 0), "status": {"state": "firing"}}],
        [{**api_alert(HIGH1, 0), "labels": {"node": 1}}],
        "[]",
    ],
)
def test_replace_from_api_rejects_wrong_shapes(document: Any) -> None:
    fs = FiringSet(refresh_ttl=TTL)
    fs.apply([firing(HIGH1, 0)], T0)
    with pytest.raises(FiringInputError, match="/api/v2/alerts"):
        fs.replace_from_api(document, T0 + 1)
    assert len(fs.firing(CLUSTER)) == 1


def test_replace_from_api_rejects_bad_timestamps_without_change() -> None:
    fs = FiringSet(refresh_ttl=TTL)
    fs.apply([firing(HIGH1, 0)], T0)
    with pytest.raises(TimestampError):
        fs.replace_from_api([api_alert(HIGH2, 0), {**api_alert(IMBALANCED, 0), "endsAt": "soon"}], T0 + 1)
    assert episodes(fs) == {fingerprint_of(HIGH1): parse_timestamp(at(0))}


# --------------------------------------------------------------------------- snapshot


def test_the_snapshot_is_immutable_and_json() -> None:
    fs = FiringSet(refresh_ttl=TTL)
    fs.apply([firing(HIGH1, 0), firing(CRITICAL, 1)], T0)
    snapshot = fs.snapshot()
    with pytest.raises(dataclasses.FrozenInstanceError):
        snapshot.version = 7  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        snapshot.alerts[0].cluster = "x"  # type: ignore[misc]
    document = json.loads(json.dumps(snapshot.as_json()))
    assert document["version"] == 1 and document["changed_at"] == T0
    lab = document["clusters"][CLUSTER]
    assert lab["rebalance_firing"] and lab["shed_firing"] and lab["nodes_hot"] == ["node1"]
    high = next(a for a in lab["alerts"] if a["alertname"] == ALERT_CPU_HIGH)
    assert high["starts_at"] == at(0) and high["ends_at"] is None and high["labels"] == HIGH1
    assert high["fingerprint"] == fingerprint_of(HIGH1) and high["expires_at"] == T0 + TTL
    snapshot.as_json()["clusters"].clear()  # a fresh copy each call
    assert snapshot.as_json()["clusters"]
    fs.apply([resolved(HIGH1, 0, 10)], T0 + 10)
    assert len(snapshot.alerts) == 2 and len(fs.snapshot().alerts) == 1  # old views do not move
    result = fs.apply([resolved(CRITICAL, 1, 11)], T0 + 11)
    assert json.loads(json.dumps(result.as_json())) == {
        "changed": True,
        "version": 3,
        "added": [],
        "updated": [],
        "removed": [fingerprint_of(CRITICAL)],
        "expired": [],
        "ignored": [],
    }


def test_parallel_duplicates_add_once() -> None:
    fs = FiringSet(refresh_ttl=TTL)
    results = []
    lock = threading.Lock()
    barrier = threading.Barrier(8)

    def deliver(i: int) -> None:
        barrier.wait()
        for j in range(50):
            result = fs.apply([firing(HIGH1, 0), firing(IMBALANCED, 0)], T0 + i * 0.001 + j)
            with lock:
                results.append(result)

    threads = [threading.Thread(target=deliver, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(fp for r in results for fp in r.added) == sorted([fingerprint_of(HIGH1), fingerprint_of(IMBALANCED)])
    assert sum(r.changed for r in results) == 1 and fs.snapshot().version == 1  # one notification added both


def test_settings_are_checked() -> None:
    assert refresh_ttl_for(10, 30) == 95
    with pytest.raises(ValueError):
        refresh_ttl_for(0, 30)
    for kwargs in (
        {"refresh_ttl": 0},
        {"refresh_ttl": 10, "tombstone_ttl": -1},
        {"refresh_ttl": 10, "max_tombstones": 0},
    ):
        with pytest.raises(ValueError):
            FiringSet(**kwargs)


# --------------------------------------------------------------------------- property


ALERT_LABELS = (HIGH1, HIGH2, IMBALANCED, CRITICAL)


@st.composite
def histories(draw: st.DrawFn) -> tuple[list[Alert], dict[str, int]]:
    """Notifications (in the order Alertmanager sent them) and the firing set they must end in.

    Each alert has 1-3 episodes with increasing startsAt; each episode fires and may resolve
    (a missing resolve is a lost notification: the next episode supersedes it).
    """
    sent: list[tuple[int, int, Alert]] = []  # (time, tiebreak, alert)
    expected: dict[str, int] = {}
    chosen = draw(st.lists(st.sampled_from(range(len(ALERT_LABELS))), min_size=1, unique=True))
    for index in chosen:
        alert_labels = ALERT_LABELS[index]
        start = draw(st.integers(0, 60 * NS_PER_S))
        for _ in range(draw(st.integers(1, 3))):
            duration = draw(st.integers(NS_PER_MS, 120 * NS_PER_S))
            starts_at = format_timestamp(round(T0 * NS_PER_S) + start)
            fingerprint = fingerprint_of(alert_labels) if draw(st.booleans()) else ""
            sent.append(
                (
                    start,
                    len(sent),
                    Alert(
                        status="firing", labels=alert_labels, startsAt=starts_at, endsAt=ZERO, fingerprint=fingerprint
                    ),
                )
            )
            expected[fingerprint_of(alert_labels)] = round(T0 * NS_PER_S) + start
            if draw(st.booleans()):
                ends_at = format_timestamp(round(T0 * NS_PER_S) + start + duration)
                sent.append(
                    (
                        start + duration,
                        len(sent),
                        Alert(status="resolved", labels=alert_labels, startsAt=starts_at, endsAt=ends_at),
                    )
                )
                expected.pop(fingerprint_of(alert_labels))
            else:
                expected[fingerprint_of(alert_labels)] = round(T0 * NS_PER_S) + start
            start += duration + draw(st.integers(NS_PER_MS, 60 * NS_PER_S))
    return [alert for _, _, alert in sorted(sent, key=lambda s: (s[0], s[1]))], expected


@settings(max_examples=300, deadline=None)
@given(history=histories(), data=st.data())
def test_any_interleaving_duplication_and_reordering_ends_in_the_same_set(
    history: tuple[list[Alert], dict[str, int]], data: st.DataObject
) -> None:
    sent, expected = history
    in_order = FiringSet(refresh_ttl=TTL)
    for i, alert in enumerate(sent):
        in_order.apply([alert], T0 + i)
    assert episodes(in_order) == expected

    copies = data.draw(st.lists(st.sampled_from(sent), max_size=2 * len(sent)), label="copies")
    delivery = data.draw(st.permutations(sent + copies), label="delivery")
    shuffled = FiringSet(refresh_ttl=TTL)
    clock = FakeClock()
    position = 0
    while position < len(delivery):  # group into notifications of 1-4 alerts, like Alertmanager's groups
        size = data.draw(st.integers(1, 4), label="notification size")
        shuffled.apply(delivery[position : position + size], clock.advance(data.draw(st.floats(0, 2))))
        position += size
    assert episodes(shuffled) == expected
    assert shuffled.rebalance_firing(CLUSTER) == in_order.rebalance_firing(CLUSTER)
    assert shuffled.shed_firing(CLUSTER) == in_order.shed_firing(CLUSTER)
    assert shuffled.nodes_hot(CLUSTER) == in_order.nodes_hot(CLUSTER)
