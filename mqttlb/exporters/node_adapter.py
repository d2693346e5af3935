"""The broker adapter interface: every broker kind turns into one ``BrokerSample`` per scrape.

Adding a broker kind (EMQX, VerneMQ, ...) means one module with a class that satisfies
``NodeAdapter`` and one line in ``mqttlb.exporters.adapters.build_adapter``; the collector, the
metric names and the dashboards stay as they are.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from mqttlb.exporters.scrape_errors import ScrapeErrorReason


@dataclass(frozen=True)
class BrokerSample:
    """What one node reported at one scrape, in the common schema.

    ``None`` means "this broker kind does not report it" (or not yet): the series is then left
    out for that node instead of being exported as a misleading 0.  Counters are cumulative
    since the broker (or, for log-derived Mosquitto connects, the exporter) started.
    """

    up: bool
    # Why the node is down, or (with up=True) what part of it could not be read; counted as a
    # scrape error of ``reason`` either way.  Both or neither are set.
    error: str | None = None
    reason: ScrapeErrorReason | None = None
    clients_connected: float | None = None
    connects: float | None = None
    disconnects: float | None = None
    messages_received: float | None = None
    messages_sent: float | None = None
    publish_received: float | None = None
    publish_sent: float | None = None
    publish_dropped: float | None = None
    bytes_received: float | None = None
    bytes_sent: float | None = None
    subscriptions: float | None = None
    retained: float | None = None
    queued: float | None = None
    cpu_seconds: float | None = None
    resident_memory_bytes: float | None = None
    overload_level: float | None = None
    sample_age_seconds: float | None = None  # age of the newest broker data (push-based kinds)

    def __post_init__(self) -> None:
        if (self.error is None) != (self.reason is None):
            raise ValueError("BrokerSample: error and reason go together")

    @classmethod
    def down(cls, error: str, reason: ScrapeErrorReason) -> BrokerSample:
        return cls(up=False, error=error, reason=reason)


@runtime_checkable
class NodeAdapter(Protocol):
    """One broker node.  ``snapshot`` must return within ``timeout`` seconds and never raise
    for an unreachable node: it returns ``BrokerSample.down(error, reason)`` instead.  ``close``
    also ends a ``snapshot`` in progress at once."""

    name: str
    kind: str
    address: str
    # True if snapshot() does network I/O: the collector then runs it in its worker pool under
    # the scrape deadline.  False for adapters that answer from memory (Mosquitto's $SYS cache).
    blocking: bool

    def start(self) -> None:
        """Open long-lived resources (e.g. an MQTT subscription); called once before scraping."""

    def snapshot(self, timeout: float) -> BrokerSample:
        """The node's current values."""
        ...

    def close(self) -> None:
        """Release everything start() opened."""
