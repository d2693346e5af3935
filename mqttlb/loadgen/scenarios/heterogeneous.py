"""Scenario ``heterogeneous``: heavy publishers scattered among light ones, no churn.

Local stack, 3 Mosquitto nodes, the stack file's parameters; a few heavy publishers connect at seeded
places among many light ones and nobody disconnects.  Envoy's least request balances connection
counts, so where the heavy ones land is chance and stays so.  Two arms per seed, one fresh stack each:

* ``least-request``: Envoy LEAST_REQUEST, the webhook in dry run (decides and logs, moves nothing);
* ``weighted-cpu+evict``: Envoy LEAST_REQUEST with the webhook acting (weights by spare CPU and the
  evict lever, the stack's defaults).

Measure: the CPU max squared deviation averaged over the steady part (the last ``steady`` seconds).
Target: the median over the seeds of weighted-cpu+evict's is at least 3x lower than least-request's.
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mqttlb.loadgen.balance import cpu_msd_series
from mqttlb.loadgen.scenarios import analysis
from mqttlb.loadgen.scenarios.arm import ArmRun, ArmSetup, run_arm
from mqttlb.loadgen.scenarios.workloads import heterogeneous_workload
from mqttlb.loadgen.workload import Workload

if TYPE_CHECKING:
    from mqttlb.stack.config import StackConfig

log = logging.getLogger(__name__)

NAME = "heterogeneous"
TARGET_RATIO = 3.0
LEAST_REQUEST = "least-request"
WEIGHTED_EVICT = "weighted-cpu+evict"

ARMS = (
    ArmSetup(LEAST_REQUEST, "Envoy LEAST_REQUEST; webhook dry-run", "LEAST_REQUEST", False),
    ArmSetup(WEIGHTED_EVICT, "Envoy LEAST_REQUEST + webhook weights by spare CPU and the evict lever",
             "LEAST_REQUEST", True),
)


@dataclass(frozen=True)
class HeterogeneousSummary:
    """One arm of one seed: ``msd_steady`` (mean CPU max squared deviation over the steady part, from
    ``steady_from`` s), ``msd_steady_max``, mean CPU per node then, final connections, evict batches and
    their bound check, QoS 1 figures."""

    arm: str
    seed: int
    steady_from: float
    msd_steady: float
    msd_steady_max: float
    mean_cpu_steady: dict[str, float]
    final_connections: dict[str, int]
    batches: int
    evicted: int
    bounds: analysis.BoundCheck
    reconnects: analysis.ReconnectSpread
    connect_failures: int

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["bounds"]["holds"] = self.bounds.holds
        return data


def summarise_arm(run: ArmRun, seed: int, steady: float) -> HeterogeneousSummary:
    """The figures of ``run`` over its last ``steady`` seconds.  Raises ValueError when no sample is there."""
    times = [s.t for s in run.samples]
    msd = cpu_msd_series(run.samples, run.nodes)
    start = times[-1] - steady
    window = [s for s in run.samples if s.t >= start]
    batches = analysis.batches_from_audit(run.audit, run.wall_start)
    return HeterogeneousSummary(
        arm=run.setup.name,
        seed=seed,
        steady_from=round(start, 1),
        msd_steady=analysis.window_mean(times, msd, start),
        msd_steady_max=max(v for t, v in zip(times, msd, strict=True) if t >= start),
        mean_cpu_steady={n: sum(s.cpu.get(n, 0.0) for s in window) / len(window) for n in run.nodes},
        final_connections={n: run.samples[-1].connections.get(n, 0) for n in run.nodes},
        batches=len(batches),
        evicted=sum(b.count for b in batches),
        bounds=analysis.check_bounds(batches, float(run.stack_params["eviction"]["max_per_second"])),
        reconnects=analysis.reconnect_spread(analysis.connects_per_second(run.connects), batches),
        connect_failures=run.load.connect_failures_total,
    )


@dataclass(frozen=True)
class Verdict:
    """The medians over the seeds of each arm's steady CPU max squared deviation, their ratio
    (least-request / weighted-cpu+evict) and whether it reaches :data:`TARGET_RATIO`; ``ratios``: per seed."""

    median_least_request: float
    median_weighted_evict: float
    ratio: float
    ratios: dict[int, float]
    met: bool


def verdict(summaries: list[HeterogeneousSummary]) -> Verdict:
    """:class:`Verdict` over every seed that has both arms; ValueError when none has."""
    by_seed: dict[int, dict[str, float]] = {}
    for s in summaries:
        by_seed.setdefault(s.seed, {})[s.arm] = s.msd_steady
    complete = {seed: arms for seed, arms in by_seed.items() if LEAST_REQUEST in arms and WEIGHTED_EVICT in arms}
    if not complete:
        raise ValueError("no seed has both arms")
    lr = analysis.median([arms[LEAST_REQUEST] for arms in complete.values()])
    we = analysis.median([arms[WEIGHTED_EVICT] for arms in complete.values()])
    ratio = lr / we if we > 0 else float("inf")
    ratios = {
        seed: (arms[LEAST_REQUEST] / arms[WEIGHTED_EVICT] if arms[WEIGHTED_EVICT] > 0 else float("inf"))
        for seed, arms in sorted(complete.items())
    }
    return Verdict(lr, we, ratio, ratios, ratio >= TARGET_RATIO)


def make_workload_factory(args: argparse.Namespace, seed: int) -> Any:
    def make(port: int) -> Workload:
        return heterogeneous_workload(
            port,
            args.duration,
            seed,
            heavies=args.heavies,
            heavy_rate=args.heavy_rate,
            lights=args.lights,
            light_rate=args.light_rate,
            ramp=args.ramp,
        )

    return make


def run_seed(
    args: argparse.Namespace, seed: int, state_root: Path, base: StackConfig
) -> tuple[list[ArmRun], list[HeterogeneousSummary]]:
    """Both arms for ``seed`` on the ``base`` stack settings; raises what :func:`run_arm` raises."""
    make = make_workload_factory(args, seed)
    runs, summaries = [], []
    for setup in ARMS:
        run = run_arm(
            setup,
            make,
            (),
            state_dir=state_root / f"seed{seed}-{setup.name.replace('+', '-')}",
            base=base,
        )
        summary = summarise_arm(run, seed, args.steady)
        log.info(
            "seed %d, %s: steady CPU max sq. dev. %.4f (max %.4f), evicted %d in %d batches",
            seed,
            setup.name,
            summary.msd_steady,
            summary.msd_steady_max,
            summary.evicted,
            summary.batches,
        )
        runs.append(run)
        summaries.append(summary)
    return runs, summaries
