"""The controller's desired-state input: which rebalance/shed alerts are firing, per cluster.

Notifications only update this set; the reconcile loop reads it.  Pure and I/O-free: every time is
passed in (``received_at`` / ``now``, Unix seconds from the caller's clock), nothing here sleeps,
reads a clock, logs or touches the network or the disk.

Model
-----
The set is keyed by Alertmanager fingerprint (the hash of an alert's label set; derived with
Alertmanager's own algorithm, :func:`fingerprint_of`, when an alert carries none).  Per fingerprint
the set keeps the newest *episode* it has heard of, ordered by ``(startsAt, resolved)``:

- a firing alert opens or repeats the episode that started at its ``startsAt``;
- a resolved alert closes the episode that started at its ``startsAt`` (and leaves a *tombstone*);
- within one episode, resolved beats firing; a newer ``startsAt`` beats an older one.

An input that is not newer than what the set holds for its fingerprint changes nothing: a copy
of the held episode (HA peer copy, retry, ``repeat_interval`` re-send) is a ``DUPLICATE``; one
from an older episode (a resolve of an episode already superseded, a firing copy of an episode
already resolved) is ``STALE``.  Because every input is merged with a maximum, the final set does
not depend on the order, duplication or interleaving of the inputs (the property test checks it).

Episodes are compared at millisecond precision: the webhook sends ``startsAt`` with nanoseconds
(``2024-01-01T00:00:00.123456789Z``) but ``/api/v2/alerts`` truncates it to milliseconds
(``...00.123Z``), both checked against Alertmanager 0.25.  Two episodes of one alert start at least
one rule evaluation apart, so nothing is lost.

Expiry
------
Alertmanager does not expose a firing alert's ``endsAt`` in notifications: it sends the Go zero
time ``0001-01-01T00:00:00Z`` until the alert has resolved (``types.Alerts``: "If the end timestamp
is not reached yet, do not expose it", alert/alert.go in prometheus/alertmanager; seen on the
wire from 0.25).  ``/api/v2/alerts`` does show the real ``endsAt`` and hides alerts whose ``endsAt``
has passed (``alertFilter`` in api/v2/api.go).  So an entry expires at
``max(updated_at + refresh_ttl, endsAt)`` (``endsAt`` only when known) unless refreshed first:
Alertmanager re-sends a firing group every ``repeat_interval`` (checked on each ``group_interval``
flush), and every copy refreshes ``updated_at``.  :func:`refresh_ttl_for` gives a TTL that
survives one lost re-send.

Scope
-----
A set built with ``cluster`` and ``nodes`` (the webhook's: its config's) holds only alerts it can act
on: an alert whose cluster label names another MQTT cluster is ignored as ``OTHER_CLUSTER``, one whose
``node`` label names a node not configured as ``UNKNOWN_NODE`` (an alert without a node label, such as
a cluster-wide shed alert, is in scope).  Otherwise it would hold the weights of nodes it never saw.

Tombstones (resolved episodes) are kept for ``tombstone_ttl`` seconds after they were last heard
of, and at most ``max_tombstones`` of them (oldest dropped first): a firing copy delayed beyond
that can re-add an alert, until the next resolve, expiry or :meth:`FiringSet.replace_from_api`.

Threads
-------
Mutators (:meth:`FiringSet.apply`, :meth:`FiringSet.replace_from_api`, :meth:`FiringSet.expire`)
serialise on an internal lock that is held only for in-memory work (microseconds; no I/O).  Each
publishes a new immutable :class:`FiringSnapshot` with one reference assignment; readers
(:meth:`FiringSet.snapshot` and the query methods) never take the lock.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from mqttlb.contract import (
    ACTION_LABEL,
    ALERT_CPU_HIGH,
    ALERTNAME_LABEL,
    CLUSTER_LABEL,
    NODE_LABEL,
    TEST_LABEL,
    Action,
)
from mqttlb.params import AlertmanagerTiming

#: Actions whose alerts drive the controller (``page`` alerts are for humans).
ACTIONABLE: tuple[Action, ...] = (Action.REBALANCE, Action.SHED)

NS_PER_S = 1_000_000_000
NS_PER_MS = 1_000_000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
#: Go's zero ``time.Time`` (0001-01-01T00:00:00Z) in ns since the Unix epoch: "no endsAt".
GO_ZERO_NS = (datetime(1, 1, 1, tzinfo=UTC) - _EPOCH) // timedelta(microseconds=1) * 1000

# --------------------------------------------------------------------------- errors


class FiringInputError(ValueError):
    """An input the set cannot take (the HTTP caller answers 400); nothing was changed."""


class TimestampError(FiringInputError):
    """A timestamp that is not RFC 3339 (``YYYY-MM-DDThh:mm:ss[.fraction](Z|±hh:mm)``)."""


# --------------------------------------------------------------------------- timestamps

_RFC3339 = re.compile(
    r"(?P<date>\d{4}-\d{2}-\d{2})[Tt](?P<time>\d{2}:\d{2}:\d{2})(?:\.(?P<frac>\d+))?(?P<zone>[Zz]|[+-]\d{2}:\d{2})"
)
_MAX_TIMESTAMP_CHARS = 64


def parse_timestamp(text: str) -> int:
    """An RFC 3339 timestamp as integer nanoseconds since the Unix epoch (negative before 1970).

    Accepts what Alertmanager sends: ``Z`` or a ``±hh:mm`` offset, 0 to 9 fraction digits (more are
    truncated to nanoseconds), and Go's zero time ``0001-01-01T00:00:00Z``.
    Raises :class:`TimestampError` (a ``ValueError``) for anything else.
    """
    if not isinstance(text, str) or len(text) > _MAX_TIMESTAMP_CHARS:
        raise TimestampError(f"timestamp must be an RFC 3339 string, got {str(text)[:40]!r}")
    match = _RFC3339.fullmatch(text)
    if match is None:
        raise TimestampError(f"timestamp is not RFC 3339: {text!r}")
    zone = "+00:00" if match["zone"] in ("Z", "z") else match["zone"]
    try:
        moment = datetime.fromisoformat(f"{match['date']}T{match['time']}{zone}")
    except ValueError as exc:
        raise TimestampError(f"timestamp is not a valid instant: {text!r} ({exc})") from exc
    fraction = (match["frac"] or "")[:9].ljust(9, "0")
    return (moment - _EPOCH) // timedelta(microseconds=1) * 1000 + int(fraction)


def parse_ends_at(text: str | None) -> int | None:
    """``endsAt`` in ns, or ``None`` when unset (missing, empty, or Go's zero time)."""
    if text is None or text == "":
        return None
    value = parse_timestamp(text)
    return None if value == GO_ZERO_NS else value


def format_timestamp(ns: int) -> str:
    """ns since the epoch as RFC 3339 in UTC, Go ``RFC3339Nano`` style (fraction without trailing zeros)."""
    seconds, rest = divmod(ns, NS_PER_S)
    text = (_EPOCH + timedelta(seconds=seconds)).replace(tzinfo=None).isoformat(timespec="seconds")
    fraction = f"{rest:09d}".rstrip("0")
    return f"{text}.{fraction}Z" if fraction else f"{text}Z"


# --------------------------------------------------------------------------- fingerprints

_FNV64_OFFSET = 14695981039346656037
_FNV64_PRIME = 1099511628211
_MASK64 = (1 << 64) - 1
_SEPARATOR = 0xFF


def fingerprint_of(labels: Mapping[str, str]) -> str:
    """Alertmanager's fingerprint of a label set: 16 lower-case hex digits.

    FNV-1a 64 over ``name, 0xff, value, 0xff`` for each label sorted by name (UTF-8 bytes), as
    ``labelSetToFingerprint`` in prometheus/common model/signature.go, printed ``%016x``.  So an
    alert that arrives without ``fingerprint`` gets the key Alertmanager would have given it.
    """
    digest = _FNV64_OFFSET
    for name in sorted(labels):
        for part in (name, labels[name]):
            for byte in part.encode():
                digest = ((digest ^ byte) * _FNV64_PRIME) & _MASK64
            digest = ((digest ^ _SEPARATOR) * _FNV64_PRIME) & _MASK64
    return f"{digest:016x}"


def refresh_ttl_for(group_interval: float, repeat_interval: float, peer_timeout: float = 15.0) -> float:
    """Seconds a firing entry lives without a refresh, surviving one lost re-send.

    Alertmanager re-sends a still-firing group on the first ``group_interval`` flush after
    ``repeat_interval`` has passed, so consecutive sends are at most ``repeat_interval +
    group_interval`` apart; an HA peer sends up to ``peer_timeout`` (``--cluster.peer-timeout``,
    15 s by default) later per position.  All in seconds, all > 0 (else ``ValueError``).
    """
    if min(group_interval, repeat_interval, peer_timeout) <= 0:
        raise ValueError("group_interval, repeat_interval and peer_timeout must be > 0")
    return 2 * (repeat_interval + group_interval) + peer_timeout


# --------------------------------------------------------------------------- inputs


class AlertLike(Protocol):
    """One alert of a webhook notification (``mqttlb.webhook.payload.Alert`` fits)."""

    @property
    def status(self) -> str: ...  # "firing" | "resolved"

    @property
    def labels(self) -> Mapping[str, str]: ...

    @property
    def startsAt(self) -> str: ...  # noqa: N802 (Alertmanager's field name)

    @property
    def endsAt(self) -> str: ...  # noqa: N802

    @property
    def fingerprint(self) -> str: ...  # "" when absent


class _ApiAlertStatus(BaseModel):
    model_config = ConfigDict(extra="ignore")
    state: Literal["active", "suppressed", "unprocessed"]


class _ApiAlert(BaseModel):
    """One ``gettableAlert`` of ``GET /api/v2/alerts`` (api/v2/openapi.yaml); unused fields ignored."""

    model_config = ConfigDict(extra="ignore")
    labels: dict[str, str]
    startsAt: str = Field(min_length=1)
    endsAt: str = ""
    fingerprint: str = ""
    status: _ApiAlertStatus


_API_ALERTS = TypeAdapter(list[_ApiAlert])


# --------------------------------------------------------------------------- outputs


class IgnoreReason(StrEnum):
    """Why an input alert changed nothing."""

    STALE = "stale"  # from an older episode than the one held (or superseded by a resolve)
    DUPLICATE = "duplicate"  # the set already says this (copy, retry, HA peer, re-send)
    NOT_ACTIONABLE = "not_actionable"  # not a rebalance/shed alert, or no cluster label
    SUPPRESSED = "suppressed"  # silenced or inhibited in Alertmanager (replace_from_api only)
    TEST = "test"  # labelled mqttlb_test="true" (`mqttlb test-alert`): never enters the set
    UNKNOWN = "unknown"  # a resolve of an episode the set never held (never seen firing): remembered only
    OTHER_CLUSTER = "other_cluster"  # its cluster label names another MQTT cluster than the set's
    UNKNOWN_NODE = "unknown_node"  # its node label names a node the set's config does not have


@dataclass(frozen=True, slots=True)
class Ignored:
    fingerprint: str
    reason: IgnoreReason


@dataclass(frozen=True, slots=True)
class ApplyResult:
    """What one call did, by fingerprint.  ``version`` is the set's version after the call.

    ``added``: newly firing; ``updated``: a newer episode replaced the held one; ``removed``:
    resolved (or, for ``replace_from_api``, absent from Alertmanager); ``expired``: not refreshed
    in time; ``ignored``: changed nothing (a ``DUPLICATE`` still refreshes the entry's expiry).
    """

    added: tuple[str, ...] = ()
    updated: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    expired: tuple[str, ...] = ()
    ignored: tuple[Ignored, ...] = ()
    version: int = 0

    @property
    def changed(self) -> bool:
        """True when the firing set (membership or an episode) changed."""
        return bool(self.added or self.updated or self.removed or self.expired)

    def as_json(self) -> dict[str, Any]:
        """Plain JSON types (for the audit log)."""
        return {
            "changed": self.changed,
            "version": self.version,
            "added": list(self.added),
            "updated": list(self.updated),
            "removed": list(self.removed),
            "expired": list(self.expired),
            "ignored": [{"fingerprint": i.fingerprint, "reason": i.reason.value} for i in self.ignored],
        }


@dataclass(frozen=True, slots=True)
class FiringAlert:
    """One firing rebalance/shed alert.

    ``labels``: sorted ``(name, value)`` pairs; ``starts_at_ns`` / ``ends_at_ns``: Alertmanager's
    ``startsAt`` / ``endsAt`` in ns since the epoch (``ends_at_ns`` None when not known);
    ``updated_at`` / ``expires_at``: the caller's clock, Unix seconds.
    """

    fingerprint: str
    cluster: str
    action: Action
    alertname: str
    node: str | None
    labels: tuple[tuple[str, str], ...]
    starts_at_ns: int
    ends_at_ns: int | None
    updated_at: float
    expires_at: float

    def label(self, name: str) -> str | None:
        return dict(self.labels).get(name)

    def live(self, now: float | None) -> bool:
        """Not expired at ``now`` (always True when ``now`` is None)."""
        return now is None or self.expires_at > now

    def as_json(self) -> dict[str, Any]:
        return {
            "fingerprint": self.fingerprint,
            "cluster": self.cluster,
            "action": self.action.value,
            "alertname": self.alertname,
            "node": self.node,
            "labels": dict(self.labels),
            "starts_at": format_timestamp(self.starts_at_ns),
            "ends_at": None if self.ends_at_ns is None else format_timestamp(self.ends_at_ns),
            "updated_at": self.updated_at,
            "expires_at": self.expires_at,
        }


@dataclass(frozen=True, slots=True)
class FiringSnapshot:
    """An immutable view of the set.  Queries take an optional ``now`` (Unix s): when given,
    entries whose ``expires_at`` has passed are left out (the set drops them on its next call)."""

    version: int = 0
    alerts: tuple[FiringAlert, ...] = ()  # sorted by (cluster, fingerprint)
    tombstones: int = 0
    changed_at: float | None = None  # caller's clock at the last change

    def firing(self, cluster: str, now: float | None = None) -> tuple[FiringAlert, ...]:
        return tuple(a for a in self.alerts if a.cluster == cluster and a.live(now))

    def clusters(self, now: float | None = None) -> tuple[str, ...]:
        """Clusters with at least one firing alert, sorted."""
        return tuple(sorted({a.cluster for a in self.alerts if a.live(now)}))

    def rebalance_firing(self, cluster: str, now: float | None = None) -> bool:
        """Any ``action=rebalance`` alert of the cluster firing (recovery waits until this is False)."""
        return any(a.action is Action.REBALANCE for a in self.firing(cluster, now))

    def shed_firing(self, cluster: str, now: float | None = None) -> bool:
        return any(a.action is Action.SHED for a in self.firing(cluster, now))

    def nodes_hot(self, cluster: str, now: float | None = None) -> tuple[str, ...]:
        """Nodes named by firing ``MqttBrokerCpuHigh`` alerts of the cluster, sorted, unique."""
        return tuple(
            sorted({a.node for a in self.firing(cluster, now) if a.alertname == ALERT_CPU_HIGH and a.node is not None})
        )

    def as_json(self, now: float | None = None) -> dict[str, Any]:
        """Plain JSON types, a fresh copy per call (for ``/status`` and the audit log)."""
        return {
            "version": self.version,
            "changed_at": self.changed_at,
            "tombstones": self.tombstones,
            "clusters": {
                cluster: {
                    "rebalance_firing": self.rebalance_firing(cluster, now),
                    "shed_firing": self.shed_firing(cluster, now),
                    "nodes_hot": list(self.nodes_hot(cluster, now)),
                    "alerts": [a.as_json() for a in self.firing(cluster, now)],
                }
                for cluster in self.clusters(now)
            },
        }


# --------------------------------------------------------------------------- the set


@dataclass(frozen=True, slots=True)
class _Event:
    """One validated input alert."""

    fingerprint: str
    resolved: bool
    starts_at_ns: int
    ends_at_ns: int | None
    labels: tuple[tuple[str, str], ...]
    action: Action | None  # None: not actionable
    cluster: str | None
    test: bool  # a test alert: recorded by the caller, never merged

    @property
    def key(self) -> tuple[int, bool]:
        return self.starts_at_ns // NS_PER_MS, self.resolved


@dataclass(frozen=True, slots=True)
class _Tombstone:
    starts_at_ns: int
    ends_at_ns: int | None
    recorded_at: float

    @property
    def key(self) -> tuple[int, bool]:
        return self.starts_at_ns // NS_PER_MS, True


def is_test_alert(labels: Mapping[str, str]) -> bool:
    """True for an alert labelled ``mqttlb_test="true"`` (sent by `mqttlb test-alert`)."""
    return labels.get(TEST_LABEL) == "true"


def _event(
    status: str,
    labels: Mapping[str, str],
    starts_at: str,
    ends_at: str | None,
    fingerprint: str,
    cluster_label: str = CLUSTER_LABEL,
) -> _Event:
    if status not in ("firing", "resolved"):
        raise FiringInputError(f"alert status must be 'firing' or 'resolved', got {str(status)[:20]!r}")
    starts = parse_timestamp(starts_at)
    ends = parse_ends_at(ends_at)
    raw_action = labels.get(ACTION_LABEL)
    action = Action(raw_action) if raw_action in ACTIONABLE else None
    return _Event(
        fingerprint=fingerprint or fingerprint_of(labels),
        resolved=status == "resolved",
        starts_at_ns=starts,
        ends_at_ns=ends,
        labels=tuple(sorted(labels.items())),
        action=action,
        cluster=labels.get(cluster_label) or None,
        test=is_test_alert(labels),
    )


@dataclass
class _Changes:
    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    expired: list[str] = field(default_factory=list)
    ignored: list[Ignored] = field(default_factory=list)
    refreshed: bool = False  # an entry's expiry moved (snapshot must be republished)

    def result(self, version: int) -> ApplyResult:
        return ApplyResult(
            tuple(self.added),
            tuple(self.updated),
            tuple(self.removed),
            tuple(self.expired),
            tuple(self.ignored),
            version,
        )


class FiringSet:
    """The firing rebalance/shed alerts of every cluster; see the module docstring for the rules.

    ``refresh_ttl`` (s, > 0): lifetime of an entry without a refresh (see :func:`refresh_ttl_for`);
    ``tombstone_ttl`` (s, > 0, default ``refresh_ttl``): how long a resolve is remembered;
    ``max_tombstones`` (>= 1): bound on remembered resolves.  ``ValueError`` when out of range.
    ``cluster_label``: the name of the label that names an alert's MQTT cluster (``mqtt_cluster_label``).
    ``cluster`` / ``nodes``: the scope (see "Scope" in the module docstring); None: any.
    """

    def __init__(
        self,
        *,
        refresh_ttl: float,
        tombstone_ttl: float | None = None,
        max_tombstones: int = 10_000,
        cluster_label: str = CLUSTER_LABEL,
        cluster: str | None = None,
        nodes: Iterable[str] | None = None,
    ):
        self.cluster_label = cluster_label
        self.cluster = cluster
        self.nodes = frozenset(nodes) if nodes is not None else None
        tombstone_ttl = refresh_ttl if tombstone_ttl is None else tombstone_ttl
        if refresh_ttl <= 0 or tombstone_ttl <= 0 or max_tombstones < 1:
            raise ValueError("refresh_ttl and tombstone_ttl must be > 0 and max_tombstones >= 1")
        self.refresh_ttl = float(refresh_ttl)
        self.tombstone_ttl = float(tombstone_ttl)
        self.max_tombstones = max_tombstones
        self._lock = threading.Lock()
        self._entries: dict[str, FiringAlert] = {}
        self._tombstones: dict[str, _Tombstone] = {}
        self._snapshot = FiringSnapshot()

    @classmethod
    def for_timing(
        cls,
        timing: AlertmanagerTiming,
        cluster_label: str = CLUSTER_LABEL,
        cluster: str | None = None,
        nodes: Iterable[str] | None = None,
    ) -> FiringSet:
        """An empty set whose entries outlive one lost re-send under Alertmanager's ``timing``
        (``refresh_ttl`` from :func:`refresh_ttl_for` of its group and repeat intervals), scoped to
        ``cluster`` and ``nodes`` (None: any)."""
        ttl = refresh_ttl_for(timing.group_interval_seconds, timing.repeat_interval_seconds)
        return cls(refresh_ttl=ttl, cluster_label=cluster_label, cluster=cluster, nodes=nodes)

    def out_of_scope(self, labels: Mapping[str, str]) -> IgnoreReason | None:
        """``OTHER_CLUSTER`` or ``UNKNOWN_NODE`` for an alert (its ``labels``) this set's scope leaves
        out, else None (also for an alert without a cluster label: that one is not actionable)."""
        cluster = labels.get(self.cluster_label)
        if self.cluster is not None and cluster and cluster != self.cluster:
            return IgnoreReason.OTHER_CLUSTER
        node = labels.get(NODE_LABEL)
        if self.nodes is not None and node and node not in self.nodes:
            return IgnoreReason.UNKNOWN_NODE
        return None

    # ------------------------------------------------------------------ reads (lock-free)
    def snapshot(self) -> FiringSnapshot:
        """The current immutable view; consistent across several queries on it."""
        return self._snapshot

    def firing(self, cluster: str, now: float | None = None) -> tuple[FiringAlert, ...]:
        return self._snapshot.firing(cluster, now)

    def clusters(self, now: float | None = None) -> tuple[str, ...]:
        return self._snapshot.clusters(now)

    def rebalance_firing(self, cluster: str, now: float | None = None) -> bool:
        return self._snapshot.rebalance_firing(cluster, now)

    def shed_firing(self, cluster: str, now: float | None = None) -> bool:
        return self._snapshot.shed_firing(cluster, now)

    def nodes_hot(self, cluster: str, now: float | None = None) -> tuple[str, ...]:
        return self._snapshot.nodes_hot(cluster, now)

    # ------------------------------------------------------------------ writes
    def apply(self, alerts: Iterable[AlertLike], received_at: float) -> ApplyResult:
        """Merge the alerts of one webhook notification, received at ``received_at`` (Unix s).

        Raises :class:`FiringInputError` (bad status) or :class:`TimestampError` (bad ``startsAt`` /
        ``endsAt``) before changing anything.
        """
        events = [_event(a.status, a.labels, a.startsAt, a.endsAt, a.fingerprint, self.cluster_label) for a in alerts]
        with self._lock:
            changes = _Changes()
            self._housekeep(received_at, changes)
            for event in events:
                self._merge(event, received_at, changes)
            self._bound_tombstones(changes)
            return self._publish(changes, received_at)

    def replace_from_api(self, document: Any, now: float, *, include_suppressed: bool = False) -> ApplyResult:
        """Rebuild the set from a ``GET /api/v2/alerts`` response (the parsed JSON list).

        ``now``: when the request was *sent* (Unix s).  Alertmanager's answer is authoritative:
        entries it does not list as firing are removed, except those refreshed after ``now`` (a
        notification that overtook the response).  Listed alerts merge like notifications (so a
        resolve already applied still wins over its own episode).  ``active`` and ``unprocessed``
        alerts count as firing; ``suppressed`` ones (silenced or inhibited: Alertmanager does not
        notify them either) only with ``include_suppressed``.  An alert whose ``endsAt`` is not
        after ``now`` counts as resolved.  Raises :class:`FiringInputError` on a wrong shape or
        :class:`TimestampError` before changing anything.
        """
        try:
            api_alerts = _API_ALERTS.validate_python(document)
        except ValidationError as exc:
            raise FiringInputError(f"not an /api/v2/alerts response: {exc.errors()[:3]}") from exc
        now_ns = round(now * NS_PER_S)
        events: list[tuple[_Event, bool]] = []  # (event, suppressed)
        for a in api_alerts:
            ends = parse_ends_at(a.endsAt)
            status = "resolved" if ends is not None and ends <= now_ns else "firing"
            event = _event(status, a.labels, a.startsAt, a.endsAt, a.fingerprint, self.cluster_label)
            events.append((event, a.status.state == "suppressed"))
        with self._lock:
            changes = _Changes()
            self._housekeep(now, changes)
            listed: set[str] = set()
            held: set[str] = set()  # listed by Alertmanager, even if suppressed: it may notify them later
            for event, suppressed in events:
                held.add(event.fingerprint)
                if suppressed and not include_suppressed and event.action is not None:
                    changes.ignored.append(Ignored(event.fingerprint, IgnoreReason.SUPPRESSED))
                    continue
                self._merge(event, now, changes)
                if not event.resolved:
                    listed.add(event.fingerprint)
            for fingerprint, entry in list(self._entries.items()):
                if fingerprint not in listed and entry.updated_at <= now:
                    del self._entries[fingerprint]
                    if fingerprint not in held:
                        # Alertmanager no longer holds this episode: a late copy of it (an HA peer's
                        # re-send captured before the resolve) must not bring it back.
                        self._tombstones[fingerprint] = _Tombstone(entry.starts_at_ns, entry.ends_at_ns, now)
                    changes.removed.append(fingerprint)
            self._bound_tombstones(changes)
            return self._publish(changes, now)

    def expire(self, now: float) -> ApplyResult:
        """Drop entries not refreshed in time and tombstones past their TTL (the reconcile loop
        calls this each pass).  ``now``: Unix s."""
        with self._lock:
            changes = _Changes()
            self._housekeep(now, changes)
            return self._publish(changes, now)

    # ------------------------------------------------------------------ internals (lock held)
    def _housekeep(self, now: float, changes: _Changes) -> None:
        for fingerprint, entry in list(self._entries.items()):
            if entry.expires_at <= now:
                del self._entries[fingerprint]
                changes.expired.append(fingerprint)
        for fingerprint, stone in list(self._tombstones.items()):
            if stone.recorded_at + self.tombstone_ttl <= now:
                del self._tombstones[fingerprint]
                changes.refreshed = True

    def _bound_tombstones(self, changes: _Changes) -> None:
        excess = len(self._tombstones) - self.max_tombstones
        if excess > 0:
            oldest = sorted(self._tombstones, key=lambda fp: self._tombstones[fp].recorded_at)[:excess]
            for fingerprint in oldest:
                del self._tombstones[fingerprint]
            changes.refreshed = True

    def _expires_at(self, updated_at: float, ends_at_ns: int | None) -> float:
        ttl_end = updated_at + self.refresh_ttl
        return ttl_end if ends_at_ns is None else max(ttl_end, ends_at_ns / NS_PER_S)

    def _merge(self, event: _Event, at: float, changes: _Changes) -> None:
        fp = event.fingerprint
        if event.test:
            changes.ignored.append(Ignored(fp, IgnoreReason.TEST))
            return
        if event.action is None or event.cluster is None:
            changes.ignored.append(Ignored(fp, IgnoreReason.NOT_ACTIONABLE))
            return
        scope = self.out_of_scope(dict(event.labels))
        if scope is not None:
            changes.ignored.append(Ignored(fp, scope))
            return
        entry = self._entries.get(fp)
        stone = self._tombstones.get(fp)
        held: tuple[int, bool] | None = None  # the newest episode known for fp: (startsAt ms, resolved)
        if entry is not None:
            held = (entry.starts_at_ns // NS_PER_MS, False)
        elif stone is not None:
            held = stone.key
        if held is not None and event.key < held:
            changes.ignored.append(Ignored(fp, IgnoreReason.STALE))
            return
        if held is not None and event.key == held:
            changes.ignored.append(Ignored(fp, IgnoreReason.DUPLICATE))
            self._refresh(event, at, entry, stone)
            changes.refreshed = True
            return
        if event.resolved:
            self._tombstones[fp] = _Tombstone(event.starts_at_ns, event.ends_at_ns, at)
            changes.refreshed = True
            if entry is None:
                changes.ignored.append(Ignored(fp, IgnoreReason.UNKNOWN))  # never seen firing
            else:
                del self._entries[fp]
                changes.removed.append(fp)
            return
        self._tombstones.pop(fp, None)
        labels = dict(event.labels)
        self._entries[fp] = FiringAlert(
            fingerprint=fp,
            cluster=event.cluster,
            action=event.action,
            alertname=labels.get(ALERTNAME_LABEL, ""),
            node=labels.get(NODE_LABEL) or None,
            labels=event.labels,
            starts_at_ns=event.starts_at_ns,
            ends_at_ns=event.ends_at_ns,
            updated_at=at,
            expires_at=self._expires_at(at, event.ends_at_ns),
        )
        (changes.added if entry is None else changes.updated).append(fp)

    def _refresh(self, event: _Event, at: float, entry: FiringAlert | None, stone: _Tombstone | None) -> None:
        """Same episode again: keep the most precise ``startsAt`` and latest ``endsAt``/time seen."""
        if entry is not None:
            ends = _max_optional(entry.ends_at_ns, event.ends_at_ns)
            updated = max(entry.updated_at, at)
            self._entries[event.fingerprint] = replace(
                entry,
                starts_at_ns=max(entry.starts_at_ns, event.starts_at_ns),
                ends_at_ns=ends,
                updated_at=updated,
                expires_at=self._expires_at(updated, ends),
            )
        elif stone is not None:
            self._tombstones[event.fingerprint] = _Tombstone(
                max(stone.starts_at_ns, event.starts_at_ns),
                _max_optional(stone.ends_at_ns, event.ends_at_ns),
                max(stone.recorded_at, at),
            )

    def _publish(self, changes: _Changes, at: float) -> ApplyResult:
        """Swap in a new snapshot when anything visible moved; the version counts changes only."""
        previous = self._snapshot
        changed = bool(changes.added or changes.updated or changes.removed or changes.expired)
        if changed or changes.refreshed:
            self._snapshot = FiringSnapshot(
                version=previous.version + 1 if changed else previous.version,
                alerts=tuple(sorted(self._entries.values(), key=lambda a: (a.cluster, a.fingerprint))),
                tombstones=len(self._tombstones),
                changed_at=at if changed else previous.changed_at,
            )
        return changes.result(self._snapshot.version)


def _max_optional(a: int | None, b: int | None) -> int | None:
    if a is None:
        return b
    if b is None:
        return a
    return max(a, b)
