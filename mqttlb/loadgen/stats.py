"""Delivery accounting (loss, duplicates) and latency percentiles.  Pure: no I/O, no clocks."""

from __future__ import annotations

import math
from collections.abc import Iterable

_ACKED = 1
_RECEIVED = 2


class SequenceTracker:
    """Per-stream bookkeeping of QoS 1 sequence numbers.

    A stream is one publisher session (client id, session number); its sequence numbers start at 0
    and grow by one per message.  A message is *lost* when the broker acknowledged it (PUBACK) but
    the checking subscriber never received it; a *duplicate* is a second receipt of the same
    sequence number.  Receipts of messages whose PUBACK never arrived (connection closed first)
    are counted separately: at-least-once allows them.
    """

    def __init__(self) -> None:
        self._flags: dict[tuple[str, int], bytearray] = {}
        self.duplicates = 0
        self.received = 0

    def _slot(self, key: tuple[str, int], seq: int) -> bytearray:
        if seq < 0:
            raise ValueError(f"sequence numbers start at 0, got {seq}")
        flags = self._flags.get(key)
        if flags is None:
            flags = self._flags[key] = bytearray()
        if seq >= len(flags):
            flags.extend(bytes(max(seq + 1 - len(flags), len(flags))))
        return flags

    def acked(self, client_id: str, session: int, seq: int) -> None:
        self._slot((client_id, session), seq)[seq] |= _ACKED

    def receive(self, client_id: str, session: int, seq: int) -> bool:
        """Record a receipt; True if it is a duplicate."""
        flags = self._slot((client_id, session), seq)
        self.received += 1
        if flags[seq] & _RECEIVED:
            self.duplicates += 1
            return True
        flags[seq] |= _RECEIVED
        return False

    def counts(self) -> dict[str, int]:
        acked = lost = unique = unacked_received = 0
        for flags in self._flags.values():
            for flag in flags:
                if flag & _ACKED:
                    acked += 1
                    if not flag & _RECEIVED:
                        lost += 1
                if flag & _RECEIVED:
                    unique += 1
                    if not flag & _ACKED:
                        unacked_received += 1
        return {
            "acked": acked,
            "received": self.received,
            "received_unique": unique,
            "lost": lost,
            "duplicates": self.duplicates,
            "received_without_ack": unacked_received,
            "streams": len(self._flags),
        }

    def missing(self, client_id: str, session: int) -> int:
        """Acknowledged but not yet received messages of one stream (used to drain before disconnecting)."""
        return self._flags.get((client_id, session), bytearray()).count(_ACKED)


class LatencyHistogram:
    """Log-bucketed latency histogram: constant memory, percentiles within ``precision`` (relative)."""

    def __init__(self, precision: float = 0.02, floor_s: float = 1e-6) -> None:
        if not 0 < precision < 1:
            raise ValueError("precision must be in (0, 1)")
        self._log_base = math.log1p(precision)
        self._floor = floor_s
        self._buckets: dict[int, int] = {}
        self.count = 0
        self.total = 0.0
        self.max = 0.0

    def add(self, seconds: float) -> None:
        value = max(seconds, self._floor)
        index = math.ceil(math.log(value / self._floor) / self._log_base)
        self._buckets[index] = self._buckets.get(index, 0) + 1
        self.count += 1
        self.total += value
        self.max = max(self.max, value)

    def extend(self, values: Iterable[float]) -> None:
        for value in values:
            self.add(value)

    def percentile(self, p: float) -> float | None:
        """Upper bound of the bucket holding the ``p``-th percentile (0 < p <= 100); None when empty."""
        if not 0 < p <= 100:
            raise ValueError("percentile must be in (0, 100]")
        if self.count == 0:
            return None
        rank = math.ceil(self.count * p / 100)
        seen = 0
        for index in sorted(self._buckets):
            seen += self._buckets[index]
            if seen >= rank:
                return min(self._floor * math.exp(index * self._log_base), self.max)
        return self.max

    def state(self) -> dict[str, object]:
        """Everything needed to merge this histogram into another one (e.g. across processes)."""
        return {"buckets": dict(self._buckets), "count": self.count, "total": self.total, "max": self.max}

    def merge(self, state: dict[str, object]) -> None:
        """Add another histogram's ``state()`` (same precision and floor) into this one."""
        buckets = state["buckets"]
        assert isinstance(buckets, dict)
        for index, n in buckets.items():
            self._buckets[int(index)] = self._buckets.get(int(index), 0) + int(n)
        self.count += int(state["count"])  # type: ignore[call-overload]
        self.total += float(state["total"])  # type: ignore[arg-type]
        self.max = max(self.max, float(state["max"]))  # type: ignore[arg-type]

    def summary_ms(self) -> dict[str, float | None]:
        def ms(value: float | None) -> float | None:
            return None if value is None else round(value * 1000, 3)

        return {
            "count": self.count,
            "mean": ms(self.total / self.count) if self.count else None,
            "p50": ms(self.percentile(50)),
            "p95": ms(self.percentile(95)),
            "p99": ms(self.percentile(99)),
            "max": ms(self.max) if self.count else None,
        }
