"""prometheus-client custom collector for one Envoy admin endpoint, read at scrape time.

``/clusters?format=json`` and ``/stats?format=json`` are fetched in parallel and the scrape
waits at most ``timeout`` seconds in total; each fetch ends at its own deadline of ``timeout``
seconds (see ``mqttlb.exporters.http_fetch``), so a trickling admin frees the workers again and
the next scrape starts afresh.  ``up`` is 1 when ``/clusters`` (the endpoint data) was read; a
failed ``/stats`` only drops the cluster byte/overflow and listener series and counts a scrape
error.  ``mqttlb_envoy_scrape_errors_total{reason}`` is exported for every reason an admin read
can fail with (timeout, unreachable, bad_answer) from the first scrape on, 0 until it happens; a
scrape adds 1 per distinct reason it met.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import NamedTuple, TypeVar

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample

from mqttlb import contract
from mqttlb.envoy_admin import (
    HEALTH_STATUSES,
    STATS_FILTER,
    ClusterStatus,
    EnvoyAdminClient,
    EnvoyAdminError,
    EnvoyParseError,
    Fetch,
    listeners,
    overload,
)
from mqttlb.exporters.exposition import LabelSet, metric_family
from mqttlb.exporters.http_fetch import FetchError, InflightFetches, fetch_text, new_session
from mqttlb.exporters.scrape_errors import ENVOY_REASONS, REASON_LABEL, ScrapeErrorReason

log = logging.getLogger(__name__)
T = TypeVar("T")

EP_LABELS = [contract.ENVOY_CLUSTER_LABEL, contract.ENVOY_ENDPOINT_LABEL, contract.NODE_LABEL]

# (stat after "cluster.<stat_name>.", series, help): per-cluster counters from /stats, label cluster
CLUSTER_STATS: tuple[tuple[str, str, str], ...] = (
    (
        "upstream_cx_rx_bytes_total",
        contract.ENVOY_CLUSTER_RX_BYTES,
        "Bytes received from upstream hosts (cluster total; Envoy has no per-endpoint byte stats).",
    ),
    ("upstream_cx_tx_bytes_total", contract.ENVOY_CLUSTER_TX_BYTES, "Bytes sent to upstream hosts (cluster total)."),
    (
        "upstream_cx_overflow",
        contract.ENVOY_CLUSTER_CX_OVERFLOW,
        "Connections refused by the max_connections circuit breaker.",
    ),
)
# (ListenerStats field, series, help, is_counter): per-listener series, label listener
LISTENER_SERIES: tuple[tuple[str, str, str, bool], ...] = (
    ("cx_active", contract.ENVOY_LISTENER_CX_ACTIVE, "Active downstream connections.", False),
    ("cx_total", contract.ENVOY_LISTENER_CX_TOTAL, "Downstream connections accepted.", True),
    (
        "cx_overflow",
        contract.ENVOY_LISTENER_CX_OVERFLOW,
        "Downstream connections refused by the listener's limit or Envoy's global connection cap.",
        True,
    ),
    (
        "cx_overload_reject",
        contract.ENVOY_LISTENER_CX_OVERLOAD_REJECT,
        "Downstream connections rejected by the overload manager.",
        True,
    ),
)


class AdminReadError(NamedTuple):
    reason: ScrapeErrorReason
    message: str  # one line, naming the URL


def _reason_of(exc: EnvoyAdminError) -> ScrapeErrorReason:
    if isinstance(exc, EnvoyParseError):
        return ScrapeErrorReason.BAD_ANSWER
    # The admin client re-raises FetchError as EnvoyAdminError ``from None``, which keeps the
    # FetchError as the context.
    context = exc.__context__
    return context.reason if isinstance(context, FetchError) else ScrapeErrorReason.UNREACHABLE


class EnvoyCollector(Collector):
    """Series of the Envoy admin at ``admin_url`` (only the clusters in ``clusters``, if given);
    ``fetch`` replaces the HTTP GET (see :class:`mqttlb.envoy_admin.EnvoyAdminClient`); without
    it, GETs go through ``fetch_text`` on one keep-alive session, and ``close()`` aborts them."""

    def __init__(
        self,
        admin_url: str,
        timeout: float,
        clusters: frozenset[str] | None = None,
        fetch: Fetch | None = None,
    ) -> None:
        self._session = new_session()
        self._inflight = InflightFetches()
        if fetch is None:
            fetch = functools.partial(fetch_text, session=self._session, inflight=self._inflight)
        self.admin = EnvoyAdminClient(admin_url, timeout, session=self._session, fetch=fetch)
        self.timeout = timeout
        self.only = clusters
        self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="envoy-admin")
        self._errors = dict.fromkeys(ENVOY_REASONS, 0)  # every reason from the start: exported from 0
        self._label_sets: dict[tuple[str, str, str], tuple[LabelSet, tuple[LabelSet, ...]]] = {}
        self._was_up: bool | None = None
        self._lock = threading.Lock()

    def describe(self) -> list[Metric]:
        return []

    def close(self) -> None:
        """End the admin reads in progress at once and stop the workers (no waiting)."""
        self._inflight.abort()
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._session.close()

    def _wait(self, future: Future[T], deadline: float, url: str) -> T:
        try:
            return future.result(timeout=max(0.0, deadline - time.monotonic()))
        except FutureTimeout:
            future.cancel()  # if it never started; a started one ends at its own deadline
            raise FetchError(
                f"GET {url}: no complete answer within {self.timeout:g}s", ScrapeErrorReason.TIMEOUT
            ) from None

    def read(self) -> tuple[list[ClusterStatus] | None, dict[str, int] | None, list[AdminReadError]]:
        """(clusters or None, stats or None, errors): both read in parallel, ``timeout`` s in all."""
        deadline = time.monotonic() + self.timeout
        clusters_future = self._pool.submit(self.admin.clusters, self.only)
        stats_future = self._pool.submit(self.admin.stats, STATS_FILTER)
        errors: list[AdminReadError] = []
        clusters = stats = None
        try:
            clusters = self._wait(clusters_future, deadline, self.admin.clusters_url)
        except EnvoyAdminError as exc:
            errors.append(AdminReadError(_reason_of(exc), str(exc)))
        except FetchError as exc:
            errors.append(AdminReadError(exc.reason, str(exc)))
        try:
            stats = self._wait(stats_future, deadline, self.admin.stats_url(STATS_FILTER))
        except EnvoyAdminError as exc:
            errors.append(AdminReadError(_reason_of(exc), str(exc)))
        except FetchError as exc:
            errors.append(AdminReadError(exc.reason, str(exc)))
        return clusters, stats, errors

    def collect(self) -> Iterator[Metric]:
        start = time.perf_counter()
        clusters, stats, errors = self.read()
        up = clusters is not None
        messages = [error.message for error in errors]
        with self._lock:
            for reason in {error.reason for error in errors}:
                self._errors[reason] += 1
            error_counts = dict(self._errors)
            if self._was_up is not up or (errors and up):
                (log.info if up and not errors else log.warning)(
                    "envoy admin: %s%s", "up" if up else "down", f" ({'; '.join(messages)})" if errors else ""
                )
            self._was_up = up
        yield from self._endpoint_families(clusters or [])
        if clusters is not None and stats is not None:
            yield from self._stats_families(clusters, stats)
        up_family = GaugeMetricFamily(contract.ENVOY_UP, "1 if the Envoy admin /clusters was read.")
        up_family.add_metric([], 1.0 if up else 0.0)
        yield up_family
        errors_family = CounterMetricFamily(
            contract.ENVOY_SCRAPE_ERRORS,
            "Scrapes in which an admin request failed or was malformed, by reason.",
            labels=[REASON_LABEL],
        )
        for reason, count in error_counts.items():
            errors_family.add_metric([reason.value], float(count))
        yield errors_family
        duration = GaugeMetricFamily(contract.ENVOY_SCRAPE_DURATION, "Seconds taken to read the Envoy admin.")
        duration.add_metric([], time.perf_counter() - start)
        yield duration

    def _endpoint_families(self, clusters: list[ClusterStatus]) -> Iterator[Metric]:
        health = metric_family(
            contract.ENVOY_ENDPOINT_HEALTH,
            "1 for the endpoint's current status (healthy|degraded|draining|unhealthy), else 0.",
            [*EP_LABELS, "status"],
        )
        active = metric_family(contract.ENVOY_ENDPOINT_CX_ACTIVE, "Active upstream connections.", EP_LABELS)
        total = metric_family(contract.ENVOY_ENDPOINT_CX_TOTAL, "Upstream connections opened.", EP_LABELS, counter=True)
        failed = metric_family(contract.ENVOY_ENDPOINT_CX_FAIL, "Upstream connect failures.", EP_LABELS, counter=True)
        weight = metric_family(contract.ENVOY_ENDPOINT_WEIGHT, "Configured load_balancing_weight.", EP_LABELS)
        limits = metric_family(
            contract.ENVOY_CLUSTER_MAX_CONNECTIONS,
            "Circuit-breaker max_connections now in force.",
            [contract.ENVOY_CLUSTER_LABEL, "priority"],
        )
        # One pre-rendered label set per endpoint (and per endpoint+status), shared by the families
        # and kept between scrapes while the endpoint exists: with 1,000 endpoints, escaping labels
        # per sample was most of the scrape time.
        active_samples, total_samples, failed_samples = active.samples, total.samples, failed.samples
        weight_samples, health_samples = weight.samples, health.samples
        total_name = contract.ENVOY_ENDPOINT_CX_TOTAL
        failed_name = contract.ENVOY_ENDPOINT_CX_FAIL
        previous, current = self._label_sets, {}
        for cluster in clusters:
            for priority, limit in sorted(cluster.max_connections.items()):
                limits.add_metric([cluster.name, priority], float(limit))
            for ep in cluster.endpoints:
                key = (ep.cluster, ep.endpoint, ep.node)
                cached = previous.get(key)
                if cached is None:
                    base = LabelSet(dict(zip(EP_LABELS, key, strict=True)))
                    cached = (base, tuple(base.plus("status", status) for status in HEALTH_STATUSES))
                current[key] = cached
                labels, by_status = cached
                active_samples.append(Sample(active.name, labels, float(ep.cx_active)))
                total_samples.append(Sample(total_name, labels, float(ep.cx_total)))
                failed_samples.append(Sample(failed_name, labels, float(ep.cx_connect_fail)))
                weight_samples.append(Sample(weight.name, labels, float(ep.weight)))
                for status, status_labels in zip(HEALTH_STATUSES, by_status, strict=True):
                    health_samples.append(
                        Sample(health.name, status_labels, 1.0 if ep.health == status else 0.0)
                    )
        self._label_sets = current  # endpoints gone from Envoy drop out here
        yield from (active, total, failed, weight, health, limits)

    def _stats_families(self, clusters: list[ClusterStatus], stats: dict[str, int]) -> Iterator[Metric]:
        by_cluster = [
            (metric_family(name, text, [contract.ENVOY_CLUSTER_LABEL], counter=True), stat)
            for stat, name, text in CLUSTER_STATS
        ]
        for cluster in clusters:
            prefix = f"cluster.{cluster.stat_name}."
            for family, stat in by_cluster:
                if prefix + stat in stats:
                    family.add_metric([cluster.name], float(stats[prefix + stat]))
        by_listener = [
            (metric_family(name, text, ["listener"], counter=is_counter), field)
            for field, name, text, is_counter in LISTENER_SERIES
        ]
        for item in listeners(stats):
            for family, field in by_listener:
                family.add_metric([item.listener], float(getattr(item, field)))
        actions, pressures = overload(stats)
        action_family = GaugeMetricFamily(
            contract.ENVOY_OVERLOAD_ACTION_ACTIVE,
            "1 while the overload-manager action is in force (e.g. reject_incoming_connections).",
            labels=["action"],
        )
        for action, active in sorted(actions.items()):
            action_family.add_metric([action], float(active))
        pressure_family = GaugeMetricFamily(
            contract.ENVOY_OVERLOAD_PRESSURE, "Overload-manager resource pressure, 0..1.", labels=["resource"]
        )
        for resource, percent in sorted(pressures.items()):
            pressure_family.add_metric([resource], percent / 100.0)
        yield from (family for family, _stat in by_cluster)
        yield from (family for family, _field in by_listener)
        yield from (family for family in (action_family, pressure_family) if family.samples)
