"""Figures of a scenario run, pure (no I/O, no clock): settling after an event, the eviction batches and
their bounds as the broker counted them, reconnects per second around the batches, QoS 1 in flight.

Times are seconds since the load started (``Sample.t``); audit entries carry wall-clock seconds, turned
into run time with the wall-clock time of the load start.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

RATE_SLACK = 1e-6  # float slack when a measured rate is compared with its bound


@dataclass(frozen=True)
class Settling:
    """How a series behaved from ``start`` on against ``threshold``.

    ``first_below``: the first time at or after ``start`` with a value below the threshold (None: never);
    ``settled_at``: the time from which every value stays below it to the end of the series (None: the
    series ends at or above it); ``met``: settled within ``within`` seconds of ``start``; ``peak_after``:
    the largest value from ``settled_at`` on (0 when not settled)."""

    start: float
    threshold: float
    within: float
    first_below: float | None
    settled_at: float | None
    met: bool
    peak_after: float

    @property
    def settle_seconds(self) -> float | None:
        """Seconds from ``start`` to ``settled_at`` (None when not settled)."""
        return None if self.settled_at is None else self.settled_at - self.start


def settling(
    times: Sequence[float], values: Sequence[float], *, start: float, threshold: float, within: float
) -> Settling:
    """:class:`Settling` of ``values`` (at ``times``, ascending) from ``start`` on; strictly below
    ``threshold`` counts as below.  Raises ValueError when the lengths differ or no time is >= ``start``."""
    if len(times) != len(values):
        raise ValueError(f"{len(times)} times but {len(values)} values")
    after = [(t, v) for t, v in zip(times, values, strict=True) if t >= start]
    if not after:
        raise ValueError(f"no value at or after t={start:g} s")
    first_below = next((t for t, v in after if v < threshold), None)
    settled_at: float | None = None
    for t, v in after:
        if v >= threshold:
            settled_at = None
        elif settled_at is None:
            settled_at = t
    met = settled_at is not None and settled_at - start <= within
    peak = max((v for t, v in after if settled_at is not None and t >= settled_at), default=0.0)
    return Settling(start, threshold, within, first_below, settled_at, met, peak)


def window_mean(times: Sequence[float], values: Sequence[float], start: float, end: float = math.inf) -> float:
    """Mean of the values with ``start <= t < end``; ValueError when there is none."""
    inside = [v for t, v in zip(times, values, strict=True) if start <= t < end]
    if not inside:
        raise ValueError(f"no value in [{start:g}, {end:g}) s")
    return sum(inside) / len(inside)


@dataclass(frozen=True)
class Batch:
    """One eviction batch as its audit entry (kind ``evict``) recorded it, in run time (s since load start).

    ``count``: clients the webhook asked the broker to disconnect and it did; ``broker_evicted``: the
    broker's own ``evictedTotal`` after minus before (None when the broker reports no counters);
    ``bound``: the most the batch could take (``max_per_second x batch seconds`` and ``max_fraction`` of
    the node's ``node_clients``); ``clients``: the ids."""

    node: str
    purpose: str
    started: float
    finished: float
    count: int
    broker_evicted: int | None
    bound: int
    node_clients: int
    load_moved: float
    surplus: float
    clients: tuple[str, ...]

    @property
    def seconds(self) -> float:
        return max(0.0, self.finished - self.started)

    @property
    def paced_rate(self) -> float:
        """Clients/s between the first and the last disconnect as the broker counted them: (n - 1) /
        seconds (n = ``broker_evicted``, else ``count``); 0 for fewer than two clients.  The plugin sends
        client i no earlier than i / maxPerSecond s after the command, so this never exceeds the rate
        asked for when the bound holds."""
        n = self.broker_evicted if self.broker_evicted is not None else self.count
        if n < 2:
            return 0.0
        return math.inf if self.seconds <= 0 else (n - 1) / self.seconds


def batches_from_audit(entries: Sequence[Mapping[str, Any]], wall_start: float) -> list[Batch]:
    """The applied evict batches of an audit log (``mqttlb.webhook.audit`` lines, parsed), oldest first;
    ``wall_start``: wall-clock seconds of the load start.  Entries without batch times (dry runs, failed
    batches, a webhook that predates them) are left out."""
    batches = []
    for entry in entries:
        after = entry.get("after")
        if entry.get("kind") != "evict" or not entry.get("applied") or not isinstance(after, Mapping):
            continue
        if "started" not in after or "finished" not in after:
            continue
        before_c, after_c = after.get("broker_counters_before"), after.get("broker_counters_after")
        broker = None
        if isinstance(before_c, Mapping) and isinstance(after_c, Mapping):
            broker = int(after_c["evictedTotal"]) - int(before_c["evictedTotal"])
        batches.append(
            Batch(
                node=str(after["node"]),
                purpose=str(after["purpose"]),
                started=float(after["started"]) - wall_start,
                finished=float(after["finished"]) - wall_start,
                count=int(after["count"]),
                broker_evicted=broker,
                bound=int(after["bound"]),
                node_clients=int(after["node_clients"]),
                load_moved=float(after["load_moved"]),
                surplus=float(after["surplus"]),
                clients=tuple(str(c) for c in after.get("clients", ())),
            )
        )
    return sorted(batches, key=lambda b: (b.started, b.node))


@dataclass(frozen=True)
class BoundCheck:
    """The bounds of every batch: ``max_paced_rate`` (clients/s, the largest :attr:`Batch.paced_rate`)
    against ``max_per_second``; ``max_count_over_bound``: the largest count minus its batch bound (<= 0
    when every batch kept it); ``counter_mismatches``: batches whose broker count differs from the
    webhook's; ``without_counters``: batches the broker gave no counters for."""

    batches: int
    evicted: int
    max_per_second: float
    max_paced_rate: float
    max_count_over_bound: int
    counter_mismatches: int
    without_counters: int

    @property
    def holds(self) -> bool:
        return (
            self.max_paced_rate <= self.max_per_second + RATE_SLACK
            and self.max_count_over_bound <= 0
            and self.counter_mismatches == 0
            and self.without_counters == 0
        )


def check_bounds(batches: Sequence[Batch], max_per_second: float) -> BoundCheck:
    """:class:`BoundCheck` of ``batches`` against the rate bound ``max_per_second`` (clients/s per node)."""
    return BoundCheck(
        batches=len(batches),
        evicted=sum(b.broker_evicted if b.broker_evicted is not None else b.count for b in batches),
        max_per_second=max_per_second,
        max_paced_rate=max((b.paced_rate for b in batches), default=0.0),
        max_count_over_bound=max((b.count - b.bound for b in batches), default=0),
        counter_mismatches=sum(1 for b in batches if b.broker_evicted is not None and b.broker_evicted != b.count),
        without_counters=sum(1 for b in batches if b.broker_evicted is None),
    )


@dataclass(frozen=True)
class ConnectSample:
    """Envoy's upstream connections opened so far per node (``cx_total``) at run time ``t``."""

    t: float
    cx_total: Mapping[str, int]


def connects_per_second(samples: Sequence[ConnectSample]) -> list[tuple[float, dict[str, float]]]:
    """Per interval between two samples: (end time, node -> connects/s).  A counter that went down (Envoy
    re-added the host) counts from 0."""
    rates = []
    for prev, cur in zip(samples, samples[1:], strict=False):
        dt = cur.t - prev.t
        if dt <= 0:
            continue
        per_node = {}
        for node, total in cur.cx_total.items():
            before = prev.cx_total.get(node, 0)
            per_node[node] = (total - before if total >= before else total) / dt
        rates.append((cur.t, per_node))
    return rates


@dataclass(frozen=True)
class ReconnectSpread:
    """Connects per second at the nodes (Envoy) while eviction batches ran and shortly after (``settle``
    s, the clients' reconnect pause): ``peak_node`` / ``peak_total``: the busiest node's and all nodes'
    highest rate then; ``mean_total``: all nodes' mean rate then; ``seconds``: how long that was;
    ``reference_peak``: the highest all-nodes rate outside those windows from ``reference_from`` on (e.g.
    a node stop's reconnect wave)."""

    seconds: float
    peak_node: float
    peak_total: float
    mean_total: float
    reference_peak: float


def reconnect_spread(
    rates: Sequence[tuple[float, Mapping[str, float]]],
    batches: Sequence[Batch],
    settle: float = 3.0,
    reference_from: float = 0.0,
) -> ReconnectSpread:
    """:class:`ReconnectSpread` of ``rates`` (from :func:`connects_per_second`) around ``batches``; the
    reference peak is taken from ``reference_from`` s on (after the initial connect ramp)."""
    windows = [(b.started, b.finished + settle) for b in batches]

    def inside(t: float) -> bool:
        return any(start <= t <= end + 1.0 for start, end in windows)  # a rate ends its interval

    during = [r for t, r in rates if inside(t)]
    outside = [r for t, r in rates if not inside(t) and t >= reference_from]
    totals = [sum(r.values()) for r in during]
    return ReconnectSpread(
        seconds=float(len(during)),
        peak_node=max((max(r.values(), default=0.0) for r in during), default=0.0),
        peak_total=max(totals, default=0.0),
        mean_total=statistics.fmean(totals) if totals else 0.0,
        reference_peak=max((sum(r.values()) for r in outside), default=0.0),
    )


@dataclass(frozen=True)
class Qos1InFlight:
    """QoS 1 accounting of the load generator over a run: ``published``; ``acked`` (PUBACK came);
    ``unacked``: sent but never acknowledged nor echoed, i.e. in flight when a connection closed (the
    generator's sessions are clean, so nobody sends them again); ``lost``: acknowledged but the echo never
    came (queued for the old connection); ``redelivered``: echoes received twice (duplicates)."""

    published: int
    acked: int
    unacked: int
    lost: int
    redelivered: int


def qos1_in_flight(published_qos1: int, qos1: Mapping[str, int]) -> Qos1InFlight:
    """:class:`Qos1InFlight` from the load report's QoS 1 publish count and its ``qos1`` counts."""
    acked = int(qos1.get("acked", 0))
    echoed_unacked = int(qos1.get("received_without_ack", 0))
    return Qos1InFlight(
        published=published_qos1,
        acked=acked,
        unacked=max(0, published_qos1 - acked - echoed_unacked),
        lost=int(qos1.get("lost", 0)),
        redelivered=int(qos1.get("duplicates", 0)),
    )


def median(values: Sequence[float]) -> float:
    """The median; ValueError for no values."""
    if not values:
        raise ValueError("median of no values")
    return float(statistics.median(values))
