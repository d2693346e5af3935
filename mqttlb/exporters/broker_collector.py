"""prometheus-client custom collector: asks every node adapter for a sample at scrape time.

Blocking adapters (HTTP scrapes) run in parallel in a worker pool and the whole scrape waits at
most ``timeout`` seconds; a node that has not answered by then is reported down (reason timeout).
Each blocking adapter gets only the time left until that deadline, and its fetch ends there (see
``mqttlb.exporters.http_fetch``), so the worker is free again for the next scrape.  Memory-backed
adapters (Mosquitto) answer inline.

``mqtt_broker_scrape_errors_total{<cluster label>, node, reason}`` is exported for every node and every
reason of ``ScrapeErrorReason`` from the first scrape on, 0 until it happens.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass

from prometheus_client.core import Metric
from prometheus_client.registry import Collector

from mqttlb import contract
from mqttlb.exporters.exposition import metric_family
from mqttlb.exporters.node_adapter import BrokerSample, NodeAdapter
from mqttlb.exporters.scrape_errors import BROKER_REASONS, REASON_LABEL, ScrapeErrorReason

log = logging.getLogger(__name__)

MAX_WORKERS = 32

# (BrokerSample field, metric name, help, is_counter)
SAMPLE_METRICS: tuple[tuple[str, str, str, bool], ...] = (
    ("clients_connected", contract.BROKER_CLIENTS_CONNECTED, "MQTT clients connected now.", False),
    ("connects", contract.BROKER_CONNECTS, "Client connects (sessions opened).", True),
    ("disconnects", contract.BROKER_DISCONNECTS, "Client disconnects (sessions closed, any reason).", True),
    ("messages_received", contract.BROKER_MESSAGES_RECEIVED, "MQTT packets of any type received.", True),
    ("messages_sent", contract.BROKER_MESSAGES_SENT, "MQTT packets of any type sent.", True),
    ("publish_received", contract.BROKER_PUBLISH_RECEIVED, "PUBLISH messages received.", True),
    ("publish_sent", contract.BROKER_PUBLISH_SENT, "PUBLISH messages sent.", True),
    ("publish_dropped", contract.BROKER_PUBLISH_DROPPED, "PUBLISH messages dropped by the broker.", True),
    ("bytes_received", contract.BROKER_BYTES_RECEIVED, "Bytes received by the broker.", True),
    ("bytes_sent", contract.BROKER_BYTES_SENT, "Bytes sent by the broker.", True),
    ("subscriptions", contract.BROKER_SUBSCRIPTIONS, "Active subscriptions.", False),
    ("retained", contract.BROKER_RETAINED, "Retained messages stored.", False),
    ("queued", contract.BROKER_QUEUED, "Messages queued for offline/slow clients.", False),
    ("cpu_seconds", contract.BROKER_CPU_SECONDS, "Broker process CPU time (user+system) in seconds.", True),
    ("resident_memory_bytes", contract.BROKER_RESIDENT_MEMORY, "Broker process resident memory.", False),
    ("overload_level", contract.BROKER_OVERLOAD_LEVEL, "HiveMQ overload-protection level.", False),
    ("sample_age_seconds", contract.BROKER_SAMPLE_AGE, "Age of the newest pushed broker data.", False),
)


@dataclass(frozen=True)
class ScrapeResult:
    adapter: NodeAdapter
    sample: BrokerSample
    duration: float


@dataclass(frozen=True)
class NodeEntry:
    adapter: NodeAdapter
    cpu_cores: float


def _timed_snapshot(adapter: NodeAdapter, deadline: float) -> tuple[BrokerSample, float]:
    """The adapter's sample within the time left until ``deadline`` (time.monotonic()), and the
    seconds it took."""
    start = time.perf_counter()
    remaining = deadline - time.monotonic()
    if remaining <= 0:  # queued behind other scrapes for the whole budget
        return BrokerSample.down("no time left in the scrape", ScrapeErrorReason.TIMEOUT), 0.0
    try:
        sample = adapter.snapshot(remaining)
    except Exception as exc:  # an adapter bug must not break the other nodes' series
        log.exception("node %s: adapter raised", adapter.name)
        sample = BrokerSample.down(f"adapter error: {type(exc).__name__}: {exc}", ScrapeErrorReason.ADAPTER_ERROR)
    return sample, time.perf_counter() - start


class BrokerCollector(Collector):
    def __init__(
        self, cluster: str, nodes: Sequence[NodeEntry], timeout: float, cluster_label: str = contract.CLUSTER_LABEL
    ) -> None:
        """``cluster``: the value of the MQTT cluster label, named ``cluster_label`` (the parameter
        ``mqtt_cluster_label``), on every series; ``timeout``: seconds one scrape of all nodes may take."""
        self.cluster = cluster
        self.labels = [cluster_label, contract.NODE_LABEL]
        self.nodes = list(nodes)
        self.timeout = timeout
        # (node, reason) -> scrape errors: every pair from the start, so each is exported from 0
        self._errors = {(entry.adapter.name, reason): 0 for entry in self.nodes for reason in BROKER_REASONS}
        self._was_up: dict[str, bool | None] = {entry.adapter.name: None for entry in self.nodes}
        self._lock = threading.Lock()
        blocking = sum(1 for entry in self.nodes if entry.adapter.blocking)
        self._pool = (
            ThreadPoolExecutor(max_workers=min(MAX_WORKERS, blocking), thread_name_prefix="node-scrape")
            if blocking
            else None
        )

    def describe(self) -> list[Metric]:
        return []  # registering must not trigger a scrape

    def close(self) -> None:
        """Stop the worker pool without waiting; close the adapters first so no worker is busy."""
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)

    def scrape_nodes(self) -> list[ScrapeResult]:
        deadline = time.monotonic() + self.timeout
        pending: list[tuple[NodeAdapter, Future[tuple[BrokerSample, float]]]] = []
        results: dict[str, ScrapeResult] = {}
        for entry in self.nodes:
            if entry.adapter.blocking and self._pool is not None:
                pending.append(
                    (entry.adapter, self._pool.submit(_timed_snapshot, entry.adapter, deadline))
                )
        for entry in self.nodes:
            if not entry.adapter.blocking:
                sample, duration = _timed_snapshot(entry.adapter, deadline)
                results[entry.adapter.name] = ScrapeResult(entry.adapter, sample, duration)
        for adapter, future in pending:
            try:
                sample, duration = future.result(timeout=max(0.0, deadline - time.monotonic()))
            except FutureTimeout:
                future.cancel()  # if it never started; a started one ends at the same deadline
                sample = BrokerSample.down(f"no answer within {self.timeout:g}s", ScrapeErrorReason.TIMEOUT)
                duration = self.timeout
            results[adapter.name] = ScrapeResult(adapter, sample, duration)
        ordered = [results[entry.adapter.name] for entry in self.nodes]
        self._account(ordered)
        return ordered

    def _account(self, results: list[ScrapeResult]) -> None:
        with self._lock:
            for result in results:
                name, sample = result.adapter.name, result.sample
                if sample.reason is not None:
                    self._errors[(name, sample.reason)] += 1
                if self._was_up[name] is not sample.up:
                    if sample.up:
                        log.info(
                            "node %s (%s): up%s",
                            name,
                            result.adapter.kind,
                            f" (partial: {sample.error})" if sample.error else "",
                        )
                    else:
                        log.warning("node %s (%s): down: %s", name, result.adapter.kind, sample.error)
                    self._was_up[name] = sample.up

    def collect(self) -> Iterator[Metric]:
        results = self.scrape_nodes()
        LABELS = self.labels  # noqa: N806 (one list for every family)
        up = metric_family(contract.BROKER_UP, "1 if the node answered the last scrape.", LABELS)
        info = metric_family(contract.BROKER_INFO, "Node identity (always 1).", [*LABELS, "kind", "address"])
        capacity = metric_family(contract.BROKER_CPU_CAPACITY, "CPU cores credited to the node (from config).", LABELS)
        duration = metric_family(contract.BROKER_SCRAPE_DURATION, "Seconds taken to sample the node.", LABELS)
        errors = metric_family(
            contract.BROKER_SCRAPE_ERRORS,
            "Scrapes of the node that failed or were partial, by reason.",
            [*LABELS, REASON_LABEL],
            counter=True,
        )
        families = {
            field: metric_family(name, help_text, LABELS, counter=is_counter)
            for field, name, help_text, is_counter in SAMPLE_METRICS
        }
        with self._lock:
            error_counts = dict(self._errors)
        for entry, result in zip(self.nodes, results, strict=True):
            node = [self.cluster, entry.adapter.name]
            sample = result.sample
            up.add_metric(node, 1.0 if sample.up else 0.0)
            info.add_metric([*node, entry.adapter.kind, entry.adapter.address], 1.0)
            capacity.add_metric(node, entry.cpu_cores)
            duration.add_metric(node, result.duration)
            for reason in BROKER_REASONS:
                errors.add_metric([*node, reason.value], float(error_counts[(entry.adapter.name, reason)]))
            if not sample.up:
                continue  # a down node's last values would look current: export none
            for field, family in families.items():
                value = getattr(sample, field)
                if value is not None:
                    family.add_metric(node, float(value))
        yield up
        yield info
        yield capacity
        yield duration
        yield errors
        for family in families.values():
            if family.samples:
                yield family
