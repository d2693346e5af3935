"""Run one workload in several processes and merge their reports.

One Python process with paho tops out around 1,300-2,300 connects/s on this machine (CPU bound in
paho's packet handling); n processes each run every n-th client (``engine.shard_members``) at 1/n
of the connect rate, start at the same wall-clock instant, and send progress and their report back.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import multiprocessing
import os
import queue
import signal
import threading
import time
from collections.abc import Sequence
from typing import Any

from mqttlb.loadgen.engine import ProgressCallback, run
from mqttlb.loadgen.report import Report
from mqttlb.loadgen.stats import LatencyHistogram
from mqttlb.loadgen.workload import Workload

log = logging.getLogger(__name__)

START_DELAY_S = 2.0  # time for the spawned workers to import before the common start
SUMMED_SNAPSHOT_KEYS = (
    "connected",
    "connects_ok",
    "connect_failures",
    "published",
    "received",
    "unexpected_disconnects",
    "publish_rate",
    "receive_rate",
    "connect_rate",
)


def _worker(workload_json: str, shard: int, shards: int, start_at: float, out: Any) -> None:
    workload = Workload.model_validate_json(workload_json)
    logging.basicConfig(level=logging.WARNING)

    async def body() -> Report:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await asyncio.sleep(max(0.0, start_at - time.time()))
        return await run(
            workload,
            stop=stop,
            shard=(shard, shards),
            progress=lambda snap: out.put(("progress", shard, snap)),
        )

    try:
        report = asyncio.run(body())
        out.put(("report", shard, report.__dict__))
    except BaseException as exc:  # reported to the parent, which raises
        out.put(("error", shard, repr(exc)))


def merge_snapshots(snapshots: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One progress snapshot for the shards' snapshots of the same tick: the counters and rates of
    ``SUMMED_SNAPSHOT_KEYS`` summed (a missing key counts 0), ``t`` the latest shard's."""
    merged = {key: sum(s.get(key, 0) for s in snapshots) for key in SUMMED_SNAPSHOT_KEYS}
    merged["t"] = max(s["t"] for s in snapshots)
    return merged


def merge_reports(reports: list[Report]) -> Report:
    """One report for the union of the shards' clients (peak_connected: sum of the shards' peaks)."""
    if not reports:
        raise ValueError("no reports to merge")
    latency = LatencyHistogram()
    for r in reports:
        if r.latency_state:
            latency.merge(r.latency_state)
    failures: collections.Counter[str] = collections.Counter()
    qos1: collections.Counter[str] = collections.Counter()
    published: collections.Counter[str] = collections.Counter()
    for r in reports:
        failures.update(r.connect_failures)
        qos1.update(r.qos1)
        published.update(r.published)
    timeline = [merge_snapshots(ticks) for ticks in zip(*(r.timeline for r in reports), strict=False)]
    width = max(len(r.connects_by_second) for r in reports)
    by_second = [
        sum(r.connects_by_second[i] for r in reports if i < len(r.connects_by_second)) for i in range(width)
    ]
    return Report(
        workload=reports[0].workload,
        seed=reports[0].seed,
        elapsed_s=max(r.elapsed_s for r in reports),
        clients=sum(r.clients for r in reports),
        connect_attempts=sum(r.connect_attempts for r in reports),
        connects_ok=sum(r.connects_ok for r in reports),
        connect_failures=dict(failures),
        unexpected_disconnects=sum(r.unexpected_disconnects for r in reports),
        peak_connected=sum(r.peak_connected for r in reports),
        published={"0": published.get("0", 0), "1": published.get("1", 0)},
        publish_refused=sum(r.publish_refused for r in reports),
        received=sum(r.received for r in reports),
        qos1=dict(qos1),
        latency_ms=latency.summary_ms(),
        timeline=timeline,
        connects_by_second=by_second,
        stopped_early=any(r.stopped_early for r in reports),
        latency_state=latency.state(),
    )


CLOSE_RATE_FLOOR = 250.0  # clients/s a worker is assumed to close at least, for the stop margin


class _Inbox:
    """What the workers sent back: reports by shard, errors, and progress snapshots waiting for
    every shard's copy of the same tick."""

    def __init__(self, workers: int, progress: ProgressCallback | None) -> None:
        self.workers = workers
        self.progress = progress
        self.reports: dict[int, Report] = {}
        self.errors: list[str] = []
        self._ticks: dict[int, list[dict[str, Any]]] = collections.defaultdict(list)
        self._seen: collections.Counter[int] = collections.Counter()

    def complete(self) -> bool:
        """True once every worker sent its report or an error."""
        return len(self.reports) + len(self.errors) >= self.workers

    def take(self, kind: str, shard: int, payload: Any) -> None:
        """One ``(kind, shard, payload)`` message: ``progress`` (a snapshot; once every shard sent its
        n-th, their merge goes to the progress callback), ``report`` (``Report`` fields) or ``error``."""
        if kind == "progress":
            index = self._seen[shard]
            self._seen[shard] += 1
            self._ticks[index].append(payload)
            if len(self._ticks[index]) == self.workers and self.progress is not None:
                self.progress(merge_snapshots(self._ticks.pop(index)))
        elif kind == "report":
            self.reports[shard] = Report(**payload)
        else:
            self.errors.append(f"worker {shard}: {payload}")


def _start_workers(ctx: Any, workload: Workload, workers: int, start_at: float, out: Any) -> list[Any]:
    """Spawn and start ``workers`` daemon processes, shard k of ``workers`` each, all starting their
    load at the wall-clock time ``start_at`` (``time.time()`` seconds) and reporting on ``out``."""
    procs = [
        ctx.Process(target=_worker, args=(workload.model_dump_json(), k, workers, start_at, out), daemon=True)
        for k in range(workers)
    ]
    for proc in procs:
        proc.start()
    return procs


def _hard_limit(workload: Workload, start_at: float) -> float:
    """The ``time.monotonic()`` by which every worker must have reported: the common start, the
    run, drain and connect timeout, plus a margin that grows with the clients to close."""
    hard_limit = time.monotonic() + (start_at - time.time()) + workload.duration + workload.drain
    # Closing thousands of connections on a busy box takes a while: more margin for more clients.
    return hard_limit + workload.connect_timeout + 30 + workload.total_clients / CLOSE_RATE_FLOOR


def _terminate(procs: list[Any]) -> None:
    """SIGTERM every worker still alive (each then stops its run gracefully and reports)."""
    for proc in procs:
        if proc.pid is not None and proc.is_alive():
            os.kill(proc.pid, signal.SIGTERM)


def _reap(procs: list[Any]) -> None:
    """Join every worker (10 s each), killing one that does not stop in time."""
    for proc in procs:
        proc.join(timeout=10)
        if proc.is_alive():
            log.error("load worker %s did not stop; killing it", proc.pid)
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            proc.join(timeout=5)


def run_sharded(
    workload: Workload,
    workers: int,
    *,
    progress: ProgressCallback | None = None,
    stop: threading.Event | None = None,
) -> Report:
    """Run ``workload`` in ``workers`` processes; blocks until they finish (bounded) and merges.

    Raises ``ValueError`` if ``workers`` < 1 and ``RuntimeError`` if a worker failed or gave no
    report in time.  Setting ``stop`` ends the run early, gracefully.
    """
    if workers < 1:
        raise ValueError("workers must be >= 1")
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    start_at = time.time() + START_DELAY_S + 0.5 * workers
    procs = _start_workers(ctx, workload, workers, start_at, out)
    hard_limit = _hard_limit(workload, start_at)
    inbox = _Inbox(workers, progress)
    stop_sent = False
    try:
        while not inbox.complete() and time.monotonic() < hard_limit:
            if stop is not None and stop.is_set() and not stop_sent:
                stop_sent = True
                _terminate(procs)
            try:
                message = out.get(timeout=0.2)
            except queue.Empty:
                if not any(p.is_alive() for p in procs) and out.empty():
                    break
                continue
            inbox.take(*message)
    finally:
        _reap(procs)
    reports, errors = inbox.reports, inbox.errors
    if errors or len(reports) < workers:
        raise RuntimeError(f"{workers - len(reports)} load worker(s) gave no report: {'; '.join(errors)}")
    return merge_reports([reports[k] for k in sorted(reports)])
