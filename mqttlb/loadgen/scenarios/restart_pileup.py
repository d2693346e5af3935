"""Scenario ``restart-pileup`` (issue 14): a broker node stops and comes back under long-lived clients.

Local stack, 3 Mosquitto nodes, the stack file's parameters; long-lived publishers and QoS 1 sensors
through Envoy, no churn.  After ``warmup`` s the last node is stopped for ``down`` s: its clients
reconnect to the others, and when it returns nothing moves them back, since weights steer only new
connections.  Two arms, one fresh stack each, the same seeded workload:

* ``evict on``: the stack's defaults (weights and the evict lever);
* ``evict off``: the same with ``eviction.enabled: false``.

Target: with evict on the CPU max squared deviation falls below ``threshold`` (0.01) within ``within``
(180 s) of the node's return and stays below to the end of the run; with evict off it does not.
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mqttlb.loadgen.balance import cpu_msd_series
from mqttlb.loadgen.scenarios import analysis
from mqttlb.loadgen.scenarios.arm import ArmRun, ArmSetup, NodeEvent, run_arm
from mqttlb.loadgen.scenarios.workloads import restart_workload
from mqttlb.loadgen.workload import Workload

if TYPE_CHECKING:
    from mqttlb.stack.config import StackConfig

log = logging.getLogger(__name__)

NAME = "restart-pileup"
THRESHOLD = 0.01
WITHIN_S = 180.0

ARMS = (
    ArmSetup("evict on", "the stack's defaults: weights and the evict lever", None, True),
    ArmSetup("evict off", "the same with eviction.enabled: false", None, True, {"eviction": {"enabled": False}}),
)


@dataclass(frozen=True)
class Timeline:
    """Seconds after the load starts: the node stops at ``stop_at`` and is started at ``start_at``; the
    load ends at ``duration``."""

    stop_at: float
    start_at: float
    duration: float


def timeline(warmup: float, down: float, after: float) -> Timeline:
    """The run's timeline; ValueError unless warmup >= 10, down >= 5 and after >= 10 seconds."""
    if warmup < 10 or down < 5 or after < 10:
        raise ValueError("--warmup must be >= 10 s, --down >= 5 s and --after >= 10 s")
    return Timeline(warmup, warmup + down, warmup + down + after)


@dataclass(frozen=True)
class RestartSummary:
    """One arm's figures.  ``returned_at``: when the node was back (run time, s); ``settling``: the CPU max
    squared deviation against the target from then on; ``msd_at_return``: its largest value in the first
    30 s after the return; ``msd_last_minute``: its mean over the last 60 s; ``bounds``, ``reconnects``,
    ``qos1``: see :mod:`mqttlb.loadgen.scenarios.analysis`."""

    arm: str
    returned_at: float
    settling: analysis.Settling
    msd_at_return: float
    msd_last_minute: float
    mean_cpu_last_minute: dict[str, float]
    final_connections: dict[str, int]
    batches: int
    evicted: int
    evicted_sensors: int
    bounds: analysis.BoundCheck
    reconnects: analysis.ReconnectSpread
    qos1: analysis.Qos1InFlight
    connect_failures: int
    unexpected_disconnects: int

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["settling"]["settle_seconds"] = self.settling.settle_seconds
        data["bounds"]["holds"] = self.bounds.holds
        return data


def summarise_arm(
    run: ArmRun, *, returned_at: float, threshold: float, within: float, stopped_at: float = 0.0
) -> RestartSummary:
    """The figures of ``run`` for a node stopped at ``stopped_at`` and back at ``returned_at``.  Raises
    ValueError when the run has no sample after the return."""
    times = [s.t for s in run.samples]
    msd = cpu_msd_series(run.samples, run.nodes)
    end = times[-1]
    last = [s for s in run.samples if s.t >= end - 60]
    batches = analysis.batches_from_audit(run.audit, run.wall_start)
    max_per_second = float(run.stack_params["eviction"]["max_per_second"])
    return RestartSummary(
        arm=run.setup.name,
        returned_at=returned_at,
        settling=analysis.settling(times, msd, start=returned_at, threshold=threshold, within=within),
        msd_at_return=max(v for t, v in zip(times, msd, strict=True) if returned_at <= t <= returned_at + 30),
        msd_last_minute=analysis.window_mean(times, msd, end - 60),
        mean_cpu_last_minute={n: sum(s.cpu.get(n, 0.0) for s in last) / len(last) for n in run.nodes},
        final_connections={n: run.samples[-1].connections.get(n, 0) for n in run.nodes},
        batches=len(batches),
        evicted=sum(b.count for b in batches),
        evicted_sensors=sum(1 for b in batches for c in b.clients if "-sensor-" in c),
        bounds=analysis.check_bounds(batches, max_per_second),
        reconnects=analysis.reconnect_spread(
            analysis.connects_per_second(run.connects), batches, reference_from=stopped_at
        ),
        qos1=analysis.qos1_in_flight(run.load.published.get("1", 0), run.load.qos1),
        connect_failures=run.load.connect_failures_total,
        unexpected_disconnects=run.load.unexpected_disconnects,
    )


def target_met(on: RestartSummary, off: RestartSummary) -> bool:
    """Issue 14's target: evict on settles below the threshold in time and stays; evict off does not."""
    return on.settling.met and not off.settling.met


def make_workload_factory(args: argparse.Namespace, duration: float, seed: int) -> Any:
    def make(port: int) -> Workload:
        return restart_workload(
            port,
            duration,
            seed,
            publishers=args.publishers,
            publisher_rate=args.publisher_rate,
            sensors=args.sensors,
            sensor_rate=args.sensor_rate,
        )

    return make


def run_seed(
    args: argparse.Namespace, seed: int, state_root: Path, base: StackConfig
) -> tuple[list[ArmRun], list[RestartSummary]]:
    """Both arms for ``seed`` on the ``base`` stack settings; raises what :func:`run_arm` raises."""
    line = timeline(args.warmup, args.down, args.after)
    node = f"node{args.nodes}"
    events = [NodeEvent(line.stop_at, "stop", node), NodeEvent(line.start_at, "start", node)]
    make = make_workload_factory(args, line.duration, seed)
    runs, summaries = [], []
    for setup in ARMS:
        slug = setup.name.replace(" ", "-")
        run = run_arm(
            setup,
            make,
            events,
            state_dir=state_root / f"seed{seed}-{slug}",
            base=base,
        )
        returned = next((t for t, action, _ in run.events if action == "start"), line.start_at)
        stopped = next((t for t, action, _ in run.events if action == "stop"), line.stop_at)
        summary = summarise_arm(run, returned_at=returned, threshold=THRESHOLD, within=WITHIN_S, stopped_at=stopped)
        log.info(
            "seed %d, %s: settled %s s after the return (met %s), msd last minute %.4f, evicted %d in %d batches",
            seed,
            setup.name,
            summary.settling.settle_seconds,
            summary.settling.met,
            summary.msd_last_minute,
            summary.evicted,
            summary.batches,
        )
        runs.append(run)
        summaries.append(summary)
    return runs, summaries
