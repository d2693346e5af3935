"""Map HiveMQ Prometheus extension text (``com_hivemq_*``) into the common ``BrokerSample``.

The extension exports HiveMQ's Dropwizard registry with simpleclient's ``DropwizardExports``
(hivemq-prometheus-extension, simpleclient 0.16): the Dropwizard name with ``.`` and ``-``
replaced by ``_``; Dropwizard Gauge -> gauge; Dropwizard *Counter* -> gauge holding the raw
count (no ``_total``); Meter -> counter ``<name>_total``; Histogram/Timer -> summary with
quantiles 0.5/0.75/0.95/0.98/0.99/0.999 and ``_count``.  So every value used here is a gauge
sample with exactly the name below.

**Suffix and labels.**  The released official extension (4.0.x to 4.1.1, the master branch of
hivemq/hivemq-prometheus-extension) has three settings only: ``ip``, ``port``, ``metric_path``.  Its
unmerged pull request #16 (2021) adds ``labels`` (``name=value;...``, attached to every sample) and
``suffix``: each name becomes the Dropwizard name + simpleclient's own suffix + ``"." + suffix``,
sanitised, so ``com_hivemq_networking_connections_current`` turns into
``com_hivemq_networking_connections_current_<suffix>``.  Builds of that branch run in the field, so both
are read here: ``metric_suffix`` (the extension's ``suffix`` as configured) is stripped from the names,
and extra labels are ignored (the node is the whole target).  The mqttlb extension (brokers/hivemq) has
neither option.

**Non-finite values.**  A NaN or +-Inf sample is treated as missing: its field is left out, never
exported.  Process CPU comes from the OS figures (user + kernel ms) or, when a node has none, the JVM's
process CPU time (ns); `CpuReader` keeps to the source it started with, because the two count
differently and a switch between scrapes could look like a counter reset.  A reading of that source
that is missing or not finite drops the CPU sample of that scrape.
"""

from __future__ import annotations

import math
import re
from typing import Any, Literal

from prometheus_client.parser import text_string_to_metric_families

from mqttlb.exporters.node_adapter import BrokerSample

# BrokerSample field -> HiveMQ series (Dropwizard type in the comment).
DIRECT: dict[str, str] = {
    "clients_connected": "com_hivemq_networking_connections_current",  # Gauge
    "connects": "com_hivemq_messages_incoming_connect_count",  # Counter
    "disconnects": "com_hivemq_networking_connections_closed_total_count",  # Counter (graceful+ungraceful)
    "messages_received": "com_hivemq_messages_incoming_total_count",  # Counter, all MQTT packets
    "messages_sent": "com_hivemq_messages_outgoing_total_count",  # Counter
    "publish_received": "com_hivemq_messages_incoming_publish_count",  # Counter
    "publish_sent": "com_hivemq_messages_outgoing_publish_count",  # Counter
    "publish_dropped": "com_hivemq_messages_dropped_count",  # Counter
    "bytes_received": "com_hivemq_networking_bytes_read_total",  # Gauge (cumulative bytes)
    "bytes_sent": "com_hivemq_networking_bytes_write_total",  # Gauge (cumulative bytes)
    "subscriptions": "com_hivemq_subscriptions_overall_current",  # Counter used as current count
    "retained": "com_hivemq_messages_retained_current",  # Gauge
    "queued": "com_hivemq_messages_queued_count",  # Gauge (messages queued in persistent sessions)
    "resident_memory_bytes": "com_hivemq_system_os_process_memory_resident_set_size",  # Gauge, bytes
    "overload_level": "com_hivemq_overload_protection_level",  # Gauge (Enterprise only)
}
# Process CPU: OS-reported user + kernel time in milliseconds (OSHI) ...
CPU_USER_MS = "com_hivemq_system_os_process_time_spent_user"
CPU_KERNEL_MS = "com_hivemq_system_os_process_time_spent_kernel"
# ... or, if those are missing, the JVM's OperatingSystemMXBean.getProcessCpuTime() in nanoseconds.
CPU_JVM_NS = "com_hivemq_system_process_cpu_time"

WANTED = frozenset(DIRECT.values()) | {CPU_USER_MS, CPU_KERNEL_MS, CPU_JVM_NS}
HIVEMQ_PREFIX = "com_hivemq_"
CpuSource = Literal["os", "jvm"]


class HiveMQParseError(ValueError):
    pass


def suffix_of_names(metric_suffix: str | None) -> str:
    """What the official extension's ``suffix`` setting appends to every name: ``"_" + suffix`` with each
    character outside ``[a-zA-Z0-9:_]`` replaced by ``_`` (simpleclient's sanitiser); ``""`` for none."""
    if not metric_suffix:
        return ""
    return re.sub(r"[^a-zA-Z0-9:_]", "_", "." + metric_suffix)


def parse_values(text: str, metric_suffix: str | None = None) -> dict[str, float]:
    """The samples of the wanted series by their plain name (``metric_suffix`` stripped, extra labels
    ignored), NaN and +-Inf included.  Raises HiveMQParseError on malformed text, and when the text has
    ``com_hivemq_*`` series but none of the wanted names (a suffix that is set but not configured here)."""
    ending = suffix_of_names(metric_suffix)
    values: dict[str, float] = {}
    hivemq_names = 0
    example = ""
    try:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name.startswith(HIVEMQ_PREFIX):
                    hivemq_names += 1
                    example = example or sample.name
                if not sample.name.endswith(ending) or "quantile" in sample.labels:
                    continue
                name = sample.name[: len(sample.name) - len(ending)]
                if name in WANTED:
                    values[name] = float(sample.value)
    except (ValueError, TypeError, IndexError, KeyError) as exc:
        raise HiveMQParseError(f"malformed Prometheus text: {exc}") from None
    if not values and hivemq_names:
        configured = f"metric_suffix {metric_suffix!r}" if metric_suffix else "no metric_suffix"
        raise HiveMQParseError(
            f"{hivemq_names} com_hivemq_* series but none of the expected names with {configured} "
            f"(e.g. {example}); if the Prometheus extension sets suffix=<s>, set metric_suffix: <s>"
        )
    return values


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


class CpuReader:
    """Process CPU seconds from one node's values, from one source for the reader's life.

    ``os``: (user + kernel) ms / 1000, HiveMQ's OSHI figures (Enterprise; the mqttlb extension adds them
    on CE); ``jvm``: ``getProcessCpuTime()`` ns / 1e9.  The first scrape with a finite, non-negative
    reading picks the source (``os`` first); later scrapes read only that one, and a missing or
    non-finite reading gives None (the sample is dropped) instead of a switch.
    """

    def __init__(self) -> None:
        self.source: CpuSource | None = None

    @staticmethod
    def _reading(values: dict[str, float], source: CpuSource) -> float | None:
        if source == "os":
            user, kernel = _finite(values.get(CPU_USER_MS)), _finite(values.get(CPU_KERNEL_MS))
            if user is None or kernel is None or user < 0 or kernel < 0:
                return None
            return (user + kernel) / 1000.0
        jvm = _finite(values.get(CPU_JVM_NS))
        return jvm / 1e9 if jvm is not None and jvm >= 0 else None

    def seconds(self, values: dict[str, float]) -> float | None:
        """CPU seconds of this scrape, or None when the source's reading is missing or not finite."""
        if self.source is not None:
            return self._reading(values, self.source)
        for source in ("os", "jvm"):
            reading = self._reading(values, source)
            if reading is not None:
                self.source = source
                return reading
        return None


def to_sample(values: dict[str, float], cpu: CpuReader | None = None) -> BrokerSample:
    """``values`` (from `parse_values`) in the common schema; non-finite values are left out.  ``cpu``: the
    node's reader (keeps its CPU source between scrapes); a fresh one when None.  Raises HiveMQParseError
    when there is no wanted series at all."""
    if not values:
        raise HiveMQParseError("no com_hivemq_* series found (is this the HiveMQ Prometheus extension?)")
    fields: dict[str, Any] = {f: values[name] for f, name in DIRECT.items() if _finite(values.get(name)) is not None}
    fields["cpu_seconds"] = (cpu or CpuReader()).seconds(values)
    return BrokerSample(up=True, **fields)
