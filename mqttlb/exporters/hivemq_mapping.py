"""Map HiveMQ Prometheus extension text (``com_hivemq_*``) into the common ``BrokerSample``.

The extension exports HiveMQ's Dropwizard registry with simpleclient's ``DropwizardExports``
(hivemq-prometheus-extension, simpleclient 0.16): the Dropwizard name with ``.`` and ``-``
replaced by ``_``; Dropwizard Gauge -> gauge; Dropwizard *Counter* -> gauge holding the raw
count (no ``_total``); Meter -> counter ``<name>_total``; Histogram/Timer -> summary with
quantiles 0.5/0.75/0.95/0.98/0.99/0.999 and ``_count``.  So every value used here is a gauge
sample with exactly the name below.
"""

from __future__ import annotations

from typing import Any

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


class HiveMQParseError(ValueError):
    pass


def parse_values(text: str) -> dict[str, float]:
    """The unlabelled samples of the wanted series.  Raises HiveMQParseError on malformed text."""
    values: dict[str, float] = {}
    try:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                # The extension can add configured static labels; the node is the whole target.
                if sample.name in WANTED and "quantile" not in sample.labels:
                    values[sample.name] = float(sample.value)
    except (ValueError, TypeError, IndexError, KeyError) as exc:
        raise HiveMQParseError(f"malformed Prometheus text: {exc}") from None
    return values


def to_sample(values: dict[str, float]) -> BrokerSample:
    if not values:
        raise HiveMQParseError("no com_hivemq_* series found (is this the HiveMQ Prometheus extension?)")
    fields: dict[str, Any] = {f: values[name] for f, name in DIRECT.items() if name in values}
    if CPU_USER_MS in values and CPU_KERNEL_MS in values:
        fields["cpu_seconds"] = (values[CPU_USER_MS] + values[CPU_KERNEL_MS]) / 1000.0
    elif CPU_JVM_NS in values and values[CPU_JVM_NS] >= 0:
        fields["cpu_seconds"] = values[CPU_JVM_NS] / 1e9
    return BrokerSample(up=True, **fields)
