"""Why a scrape of a target failed or was partial: the ``reason`` label of both exporters'
scrape-error counters.

Both exporters export their counter for every known label value from the first scrape on
(0 until it happens), so the first error of each reason on each node is visible to ``rate()``
and ``increase()``.
"""

from __future__ import annotations

from enum import StrEnum

REASON_LABEL = "reason"


class ScrapeErrorReason(StrEnum):
    TIMEOUT = "timeout"  # no complete answer within the scrape deadline (connect, headers or body)
    UNREACHABLE = "unreachable"  # refused, reset, no route, TLS failure; MQTT connection lost or refused
    BAD_ANSWER = "bad_answer"  # an HTTP status other than 200, too large, or not the expected format
    STALE = "stale"  # connected, but no fresh data (Mosquitto $SYS older than its limit, or none yet)
    PARTIAL = "partial"  # up, but some values could not be read (e.g. the broker's process stats)
    ADAPTER_ERROR = "adapter_error"  # the node adapter raised (a bug); the node is reported down


# The reasons each exporter can count (and so exports from 0).
BROKER_REASONS: tuple[ScrapeErrorReason, ...] = tuple(ScrapeErrorReason)
ENVOY_REASONS: tuple[ScrapeErrorReason, ...] = (
    ScrapeErrorReason.TIMEOUT,
    ScrapeErrorReason.UNREACHABLE,
    ScrapeErrorReason.BAD_ANSWER,
)
