"""Run a ``Workload``: schedule every client's sessions, publish, check delivery, report.

Delivery check: Mosquitto nodes behind Envoy are independent brokers, so a subscriber only sees
messages published on its own node.  A delivery-checked publisher therefore subscribes (QoS 1) to
its *own* topic on the *same* connection before publishing: every message it publishes comes back
through the same broker, and the tracker compares PUBACKed sequence numbers with echoes.  Before a
checked client leaves (churn or end of run) it waits up to ``drain`` seconds for missing echoes.

Bounds: the run ends at ``duration`` (every sleep is capped by the deadline); drain, disconnect
and connect waits are bounded by their timeouts; ``stop`` ends the run early, gracefully.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import random
import time
from collections.abc import Callable, Coroutine
from typing import Any

from mqttlb.loadgen.connection import ConnectError, Connection
from mqttlb.loadgen.payload import Stamp, decode, encode
from mqttlb.loadgen.report import Report
from mqttlb.loadgen.stats import LatencyHistogram, SequenceTracker
from mqttlb.loadgen.workload import Profile, Workload

log = logging.getLogger(__name__)

TICK_S = 0.01  # publish scheduling granularity; high-rate publishers send batches per tick
MAX_BATCH = 1000  # messages per client per tick at most (bounds catch-up after a stall)
DRAIN_POLL_S = 0.05

ProgressCallback = Callable[[dict[str, Any]], None]


def client_name(workload: Workload, profile: Profile, index: int) -> str:
    return f"{workload.client_prefix}-{profile.name}-{index}"


def client_rng(workload: Workload, client_id: str) -> random.Random:
    """Each client's own random stream (session lengths, phase, back-off): the same seed and client id
    give the same draws whatever the scheduling of the other clients."""
    return random.Random(f"{workload.seed}:{client_id}")


class _ConnectPacer:
    """Global token bucket for connects (first connects and reconnects alike)."""

    def __init__(self, rate: float) -> None:
        self._interval = 1.0 / rate
        self._next = 0.0

    async def wait(self, deadline: float) -> bool:
        """Wait for a connect slot; False if the slot falls after ``deadline``."""
        now = time.monotonic()
        slot = max(now, self._next)
        if slot >= deadline:
            return False
        self._next = slot + self._interval
        if slot > now:
            await asyncio.sleep(slot - now)
        return True


class _Run:
    def __init__(self, workload: Workload, progress: ProgressCallback | None, shards: int) -> None:
        self.w = workload
        self.progress = progress
        self.start = time.monotonic()
        self.deadline = self.start + workload.duration
        self.pacer = _ConnectPacer(workload.connect_rate / shards)
        # Connects in progress at once: when the generator (or the target) cannot keep up with
        # the asked-for rate, clients queue here instead of timing out behind a growing backlog.
        self.pending = asyncio.Semaphore(max(1, workload.max_pending_connects // shards))
        self.tracker = SequenceTracker()
        self.latency = LatencyHistogram()
        self.live: set[Connection] = set()
        self.connect_attempts = 0
        self.connects_ok = 0
        self.connects_by_second: list[int] = []
        self.connect_failures: collections.Counter[str] = collections.Counter()
        self.unexpected_disconnects = 0
        self.peak_connected = 0
        self.published = {"0": 0, "1": 0}
        self.publish_refused = 0
        self.received = 0
        self.timeline: list[dict[str, Any]] = []
        self.stopping = False
        self.clients = 0

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    # --- receipts -----------------------------------------------------------------------------
    def on_receipt(self, payload: bytes, own_client_id: str | None) -> None:
        self.received += 1
        stamp = decode(payload)
        if stamp is None:
            return
        self.latency.add(max(0.0, (time.time_ns() - stamp.sent_ns) / 1e9))
        if own_client_id is not None and stamp.client_id == own_client_id:
            self.tracker.receive(stamp.client_id, stamp.session, stamp.seq)

    # --- one client -----------------------------------------------------------------------------
    async def client(self, profile: Profile, index: int) -> None:
        client_id = client_name(self.w, profile, index)
        rng = client_rng(self.w, client_id)
        if profile.start:
            await asyncio.sleep(min(profile.start, max(0.0, self.remaining())))
        session = 0
        while not self.stopping and await self.pacer.wait(self.deadline):
            length = profile.session.draw(rng) if profile.session else float("inf")
            session_end = min(self.deadline, time.monotonic() + length)
            ok = await self.session(profile, client_id, session, session_end, rng)
            session += 1
            pause = profile.pause if ok else max(profile.pause, 0.5 + rng.random())
            if self.stopping or self.remaining() <= pause:
                break
            await asyncio.sleep(pause)

    async def session(
        self, profile: Profile, client_id: str, session: int, session_end: float, rng: random.Random
    ) -> bool:
        """One connection from connect to disconnect; False if the connect failed."""
        checked = profile.checks_delivery
        mid_to_seq: dict[int, int] = {}

        def on_puback(mid: int) -> None:
            seq = mid_to_seq.pop(mid, None)
            if seq is not None:
                self.tracker.acked(client_id, session, seq)

        def on_message(payload: bytes, _topic: str) -> None:
            self.on_receipt(payload, client_id if checked else None)

        receives = checked or profile.role == "sub"
        conn = Connection(
            client_id,
            self.w.host,
            self.w.port,
            self.w.keepalive,
            on_message=on_message if receives else None,
            on_puback=on_puback if checked else None,
        )
        self.connect_attempts += 1
        if not await self._connect(conn, profile, self._session_topic(profile, client_id)):
            return False
        self._connected(conn)
        if profile.role == "sub" or profile.rate == 0:
            await self._until_stopped(conn, self._idle(conn, session_end))
        else:
            publish = self._publish(conn, profile, client_id, session, session_end, rng, mid_to_seq)
            await self._until_stopped(conn, publish)
        if conn.closed.done():
            self.unexpected_disconnects += 1
            return True
        if checked:
            await self._drain(conn, client_id, session, mid_to_seq)
        await conn.disconnect()
        self.live.discard(conn)
        return True

    def _session_topic(self, profile: Profile, client_id: str) -> str:
        """The topic a session subscribes to: the profile's own, else everything under the prefix
        for a subscriber, else the client's own publish topic (a delivery-checked publisher's echo)."""
        return profile.topic or (
            f"{self.w.topic_prefix}/#"
            if profile.role == "sub"
            else f"{self.w.topic_prefix}/{profile.name}/{client_id}"
        )

    async def _connect(self, conn: Connection, profile: Profile, topic: str) -> bool:
        """Connect, then subscribe to ``topic`` (subscribers at the profile's QoS, delivery-checked
        publishers at QoS 1), within the pending-connects bound; each step is bounded by
        ``connect_timeout``.  False, with the failure counted by reason, if a step failed."""
        try:
            async with self.pending:
                await conn.connect(self.w.connect_timeout)
                if profile.role == "sub":
                    await conn.subscribe(topic, profile.qos, self.w.connect_timeout)
                elif profile.checks_delivery:
                    await conn.subscribe(topic, 1, self.w.connect_timeout)
        except ConnectError as exc:
            self.connect_failures[exc.reason] += 1
            conn.abort()
            return False
        except asyncio.CancelledError:
            conn.abort()
            raise
        return True

    def _connected(self, conn: Connection) -> None:
        """Count a successful connect (in total and in its second of the run) and track ``conn`` as live."""
        self.connects_ok += 1
        second = int(time.monotonic() - self.start)
        self.connects_by_second.extend([0] * (second + 1 - len(self.connects_by_second)))
        self.connects_by_second[second] += 1
        self.live.add(conn)
        self.peak_connected = max(self.peak_connected, len(self.live))

    async def _until_stopped(self, conn: Connection, work: Coroutine[Any, Any, None]) -> None:
        """Await ``work`` (idling or publishing on ``conn``).  A cancel while the run is stopping ends
        it gracefully (the session then drains and disconnects); any other cancel propagates."""
        try:
            await work
        except asyncio.CancelledError:
            if not self.stopping:
                raise
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()
        finally:
            if conn.closed.done():
                self.live.discard(conn)

    async def _idle(self, conn: Connection, session_end: float) -> None:
        timeout = session_end - time.monotonic()
        if timeout > 0:
            await asyncio.wait({conn.closed}, timeout=timeout)

    async def _publish(
        self,
        conn: Connection,
        profile: Profile,
        client_id: str,
        session: int,
        session_end: float,
        rng: random.Random,
        mid_to_seq: dict[int, int],
    ) -> None:
        interval = 1.0 / profile.rate
        # Random phase so that thousands of slow sensors do not publish in lock step.
        origin = time.monotonic() + rng.random() * min(interval, 5.0)
        qos, key, checked = profile.qos, str(profile.qos), profile.checks_delivery
        topic = profile.topic or f"{self.w.topic_prefix}/{profile.name}/{client_id}"
        seq = 0
        while not conn.closed.done():
            now = time.monotonic()
            if now >= session_end:
                return
            due = min(int((now - origin) * profile.rate) + 1 - seq, MAX_BATCH) if now >= origin else 0
            if due > 0 and conn.backlogged:
                self.publish_refused += due  # socket buffer full: drop this tick, do not queue unboundedly
                seq += due
                due = 0
            for _ in range(due):
                payload = encode(Stamp(client_id, session, seq, time.time_ns()), profile.size)
                mid = conn.publish(topic, payload, qos)
                if mid is None:
                    self.publish_refused += 1
                else:
                    self.published[key] += 1
                    if checked:
                        mid_to_seq[mid] = seq
                seq += 1
            next_due = origin + seq * interval
            wait = min(max(next_due - time.monotonic(), TICK_S), session_end - time.monotonic())
            if wait > 0:
                await asyncio.wait({conn.closed}, timeout=wait)

    async def _drain(
        self, conn: Connection, client_id: str, session: int, mid_to_seq: dict[int, int]
    ) -> None:
        limit = time.monotonic() + self.w.drain
        while time.monotonic() < limit and not conn.closed.done():
            if not mid_to_seq and self.tracker.missing(client_id, session) == 0:
                return
            await asyncio.sleep(DRAIN_POLL_S)

    # --- housekeeping -------------------------------------------------------------------------------
    async def keepalive_ticker(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            for conn in list(self.live):
                conn.tick()

    def snapshot(self) -> dict[str, Any]:
        return {
            "t": round(time.monotonic() - self.start, 2),
            "connected": len(self.live),
            "connects_ok": self.connects_ok,
            "connect_failures": sum(self.connect_failures.values()),
            "published": sum(self.published.values()),
            "received": self.received,
            "unexpected_disconnects": self.unexpected_disconnects,
        }

    async def progress_reporter(self) -> None:
        previous = self.snapshot()
        while True:
            await asyncio.sleep(self.w.progress_interval)
            current = self.snapshot()
            dt = max(current["t"] - previous["t"], 1e-9)
            current["publish_rate"] = round((current["published"] - previous["published"]) / dt, 1)
            current["receive_rate"] = round((current["received"] - previous["received"]) / dt, 1)
            current["connect_rate"] = round((current["connects_ok"] - previous["connects_ok"]) / dt, 1)
            self.timeline.append(current)
            if self.progress is not None:
                self.progress(current)
            previous = current

    def report(self, stopped_early: bool) -> Report:
        return Report(
            workload=self.w.describe(),
            seed=self.w.seed,
            elapsed_s=round(time.monotonic() - self.start, 3),
            clients=self.clients,
            connect_attempts=self.connect_attempts,
            connects_ok=self.connects_ok,
            connect_failures=dict(self.connect_failures),
            unexpected_disconnects=self.unexpected_disconnects,
            peak_connected=self.peak_connected,
            published=dict(self.published),
            publish_refused=self.publish_refused,
            received=self.received,
            qos1=self.tracker.counts(),
            latency_ms=self.latency.summary_ms(),
            timeline=self.timeline,
            connects_by_second=self.connects_by_second,
            stopped_early=stopped_early,
            latency_state=self.latency.state(),
        )


def shard_members(workload: Workload, shard: int, shards: int) -> list[tuple[Profile, int]]:
    """The (profile, index) pairs one shard runs: every ``shards``-th client, so each shard gets a
    slice of every profile and client ids (hence their random streams) do not depend on sharding."""
    if not 0 <= shard < shards:
        raise ValueError(f"shard {shard} of {shards}")
    members = [(profile, i) for profile in workload.profiles for i in range(profile.count)]
    return members[shard::shards]


async def run(
    workload: Workload,
    *,
    stop: asyncio.Event | None = None,
    progress: ProgressCallback | None = None,
    shard: tuple[int, int] = (0, 1),
) -> Report:
    """Run ``workload`` to its end (or until ``stop`` is set) and return the report.

    ``shard=(k, n)`` runs only the k-th of n slices of the clients at 1/n of the connect rate
    (``mqttlb.loadgen.shard`` runs n such slices in n processes and merges their reports).
    """
    members = shard_members(workload, *shard)
    state = _Run(workload, progress, shard[1])
    log.info("load run starting: %s", workload.describe().replace("\n", "; "))
    clients = [
        asyncio.create_task(state.client(profile, i), name=f"lg-{profile.name}-{i}") for profile, i in members
    ]
    helpers = [asyncio.create_task(state.keepalive_ticker()), asyncio.create_task(state.progress_reporter())]
    stopped_early = False
    all_done = asyncio.gather(*clients, return_exceptions=True)
    # Hard bound: the deadline, plus drain and disconnect time, plus slack for a busy machine.
    hard_limit = workload.duration + workload.drain + workload.connect_timeout + 10
    waiters: set[asyncio.Future[Any]] = {all_done}
    stop_task = asyncio.create_task(stop.wait()) if stop is not None else None
    if stop_task is not None:
        waiters.add(stop_task)
    try:
        await asyncio.wait(waiters, timeout=hard_limit, return_when=asyncio.FIRST_COMPLETED)
        if not all_done.done():
            stopped_early = True
            state.stopping = True
            state.deadline = time.monotonic()
            for task in clients:
                task.cancel()
            await asyncio.wait({all_done}, timeout=workload.drain + 5)
    finally:
        for helper in helpers:
            helper.cancel()
        if stop_task is not None:
            stop_task.cancel()
        for conn in list(state.live):
            conn.abort()
        if not all_done.done():
            all_done.cancel()
        await asyncio.gather(*helpers, return_exceptions=True)
    for result in all_done.result() if all_done.done() and not all_done.cancelled() else []:
        if isinstance(result, BaseException) and not isinstance(result, asyncio.CancelledError):
            log.error("client task failed: %r", result)
    state.clients = len(members)
    report = state.report(stopped_early)
    log.info("load run finished after %.1f s", report.elapsed_s)
    return report
