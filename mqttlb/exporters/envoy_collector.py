"""prometheus-client custom collector for one Envoy admin endpoint: what Envoy does not export itself.

Envoy serves per-endpoint connection counts and health (``envoy_cluster_endpoint_cx_active``,
``_cx_total``, ``_cx_connect_fail``, ``_healthy`` with ``track_cluster_stats: {per_endpoint_stats:
true}``), cluster bytes and circuit-breaker overflows, and listener counts on its own
``/stats/prometheus``; Prometheus scrapes that directly (job ``envoy``, one ServiceMonitor for a
fleet).  This collector adds only what is not there: each endpoint's configured
``load_balancing_weight`` and detailed health status (EDS status and health flags folded into
healthy|degraded|draining|unhealthy), the circuit-breaker ``max_connections`` in force (the shed
cap) and the overload manager's action and pressure state.

``/clusters?format=json`` and ``/stats?format=json&filter=<overload>`` are fetched in parallel and the
scrape waits at most ``timeout`` seconds in total; each fetch ends at its own deadline of ``timeout``
seconds (see ``mqttlb.exporters.http_fetch``), so a trickling admin frees the workers again and the
next scrape starts afresh.  ``up`` is 1 when ``/clusters`` (the endpoint data) was read; a failed
``/stats`` only drops the overload series and counts a scrape error.
``mqttlb_envoy_scrape_errors_total{reason}`` is exported for every reason an admin read can fail with
(timeout, unreachable, bad_answer) from the first scrape on, 0 until it happens; a scrape adds 1 per
distinct reason it met.
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
    ClusterStatus,
    EnvoyAdminClient,
    EnvoyAdminError,
    EnvoyParseError,
    Fetch,
    overload,
)
from mqttlb.exporters.exposition import metric_family
from mqttlb.exporters.http_fetch import FetchError, InflightFetches, fetch_text, new_session
from mqttlb.exporters.scrape_errors import ENVOY_REASONS, REASON_LABEL, ScrapeErrorReason

log = logging.getLogger(__name__)
T = TypeVar("T")

EP_LABELS = [contract.ENVOY_CLUSTER_LABEL, contract.ENVOY_ENDPOINT_LABEL, contract.NODE_LABEL]
# The only /stats the exporter reads: the overload manager's actions and resource pressures.
OVERLOAD_STATS_FILTER = r"^overload\..+\.(active|pressure)$"


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
        stats_future = self._pool.submit(self.admin.stats, OVERLOAD_STATS_FILTER)
        errors: list[AdminReadError] = []
        clusters = stats = None
        try:
            clusters = self._wait(clusters_future, deadline, self.admin.clusters_url)
        except EnvoyAdminError as exc:
            errors.append(AdminReadError(_reason_of(exc), str(exc)))
        except FetchError as exc:
            errors.append(AdminReadError(exc.reason, str(exc)))
        try:
            stats = self._wait(stats_future, deadline, self.admin.stats_url(OVERLOAD_STATS_FILTER))
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
        if stats is not None:
            yield from self._overload_families(stats)
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
        """Per endpoint: configured weight and detailed health; per cluster and priority: the cap."""
        weight = metric_family(contract.ENVOY_ENDPOINT_WEIGHT, "Configured load_balancing_weight.", EP_LABELS)
        health = metric_family(
            contract.ENVOY_ENDPOINT_HEALTH,
            "1 for the endpoint's current status (healthy|degraded|draining|unhealthy), else 0.",
            [*EP_LABELS, "status"],
        )
        limits = metric_family(
            contract.ENVOY_CLUSTER_MAX_CONNECTIONS,
            "Circuit-breaker max_connections now in force.",
            [contract.ENVOY_CLUSTER_LABEL, "priority"],
        )
        # Samples built directly (what add_metric does, without its per-sample zip): 5 per endpoint.
        weights, statuses = weight.samples, health.samples
        for cluster in clusters:
            for priority, limit in sorted(cluster.max_connections.items()):
                limits.add_metric([cluster.name, priority], float(limit))
            for ep in cluster.endpoints:
                labels = dict(zip(EP_LABELS, (ep.cluster, ep.endpoint, ep.node), strict=True))
                weights.append(Sample(weight.name, labels, float(ep.weight)))
                for status in HEALTH_STATUSES:
                    statuses.append(Sample(health.name, {**labels, "status": status}, float(ep.health == status)))
        yield from (weight, health, limits)

    @staticmethod
    def _overload_families(stats: dict[str, int]) -> Iterator[Metric]:
        """The overload manager's actions in force and its resource pressures (only those Envoy has)."""
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
        yield from (family for family in (action_family, pressure_family) if family.samples)
