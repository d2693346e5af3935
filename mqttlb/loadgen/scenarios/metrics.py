"""Figures of one scenario run and their summary over seeds, pure (no I/O, no clock).

Per run (:class:`RunFigures`): the mean CPU max squared deviation over the measured window, the settling
time (imbalance onset -> the deviation below the alert threshold for good), weight reversals
(oscillation), QoS 1 loss, eviction batches and the CPU the load generator took.  Over seeds
(:class:`SeedSpread`, :func:`ratio_spread`): median and range, and ratios of one policy's figure to another's
per seed.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from mqttlb.loadgen.balance import Sample, cpu_msd_series
from mqttlb.loadgen.scenarios import analysis


@dataclass(frozen=True)
class Settle:
    """``onset``: first sample at or after the scenario's ``onset_from`` whose CPU max squared deviation
    reaches ``threshold`` (None: never imbalanced); ``seconds``: from ``onset`` until it stays below
    ``threshold`` to the end of the run (0 when never imbalanced, None when it never settles)."""

    threshold: float
    onset: float | None
    seconds: float | None

    def describe(self) -> str:
        """``never imbalanced``, ``onset 30 s, never below`` or ``onset 30 s, 12 s`` (never "0 s" for a run
        that was never above the threshold)."""
        if self.onset is None:
            return "never imbalanced"
        return f"onset {self.onset:.0f} s, " + ("never below" if self.seconds is None else f"{self.seconds:.0f} s")


def settle(times: Sequence[float], msd: Sequence[float], *, onset_from: float, threshold: float) -> Settle:
    """:class:`Settle` of the series ``msd`` at ``times`` (ascending, seconds).  ValueError when the lengths
    differ."""
    if len(times) != len(msd):
        raise ValueError(f"{len(times)} times but {len(msd)} values")
    onset = next((t for t, v in zip(times, msd, strict=True) if t >= onset_from and v >= threshold), None)
    if onset is None:
        return Settle(threshold, None, 0.0)
    result = analysis.settling(times, msd, start=onset, threshold=threshold, within=float("inf"))
    return Settle(threshold, onset, result.settle_seconds)


def weight_reversals(samples: Sequence[Sample], nodes: Sequence[str]) -> int:
    """How often a node's Envoy weight changed direction (up then down, or down then up), summed over
    ``nodes``; repeated equal values are skipped.  0 for weights that move one way or not at all."""
    reversals = 0
    for node in nodes:
        last_direction = 0
        previous: int | None = None
        for s in samples:
            weight = s.weights.get(node)
            if weight is None or weight == previous:
                continue
            if previous is not None:
                direction = 1 if weight > previous else -1
                if last_direction and direction != last_direction:
                    reversals += 1
                last_direction = direction
            previous = weight
    return reversals


@dataclass(frozen=True)
class RunFigures:
    """One policy under one seed.  ``msd``: mean CPU max squared deviation over ``[measure_from, end)``;
    ``msd_max``: its largest sample there; ``mean_cpu``: per node over that window; ``settle``: see
    :class:`Settle`; ``reversals``: :func:`weight_reversals`; ``qos1_lost`` / ``qos1_published``: the load
    generator's QoS 1 accounting; ``generator_cpu_share``: the CPU the generator process (load and samplers)
    took, as a share of the machine's cores over the run; ``machine_cpu_share``: the whole machine's busy
    share meanwhile."""

    scenario: str
    policy: str
    seed: int
    measure_from: float
    msd: float
    msd_max: float
    mean_cpu: dict[str, float]
    settle: Settle
    reversals: int
    weight_changes: int
    qos1_published: int
    qos1_lost: int
    connect_failures: int
    evicted: int
    evict_batches: int
    evict_bounds_hold: bool
    generator_cpu_share: float
    machine_cpu_share: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunFigures:
        fields = dict(data)
        fields["settle"] = Settle(**fields["settle"])
        return cls(**fields)


def weight_changes(samples: Sequence[Sample], nodes: Sequence[str]) -> int:
    """Sampled changes of any node's Envoy weight, summed over ``nodes``."""
    changes = 0
    for node in nodes:
        values = [s.weights.get(node) for s in samples if s.weights.get(node) is not None]
        changes += sum(1 for a, b in zip(values, values[1:], strict=False) if a != b)
    return changes


def balance_figures(
    samples: Sequence[Sample], nodes: Sequence[str], *, measure_from: float, onset_from: float, threshold: float
) -> tuple[float, float, dict[str, float], Settle]:
    """(mean and max CPU max squared deviation over ``[measure_from, end)``, mean CPU per node there,
    :class:`Settle`).  ValueError when no sample is in the window."""
    times = [s.t for s in samples]
    msd = cpu_msd_series(samples, nodes)
    window = [(s, v) for s, v in zip(samples, msd, strict=True) if s.t >= measure_from]
    if not window:
        raise ValueError(f"no sample at or after t={measure_from:g} s")
    mean_cpu = {n: sum(s.cpu.get(n, 0.0) for s, _ in window) / len(window) for n in nodes}
    return (
        sum(v for _, v in window) / len(window),
        max(v for _, v in window),
        mean_cpu,
        settle(times, msd, onset_from=onset_from, threshold=threshold),
    )


@dataclass(frozen=True)
class SeedSpread:
    """Median, lowest and highest of a figure over seeds (``n`` values)."""

    median: float
    low: float
    high: float
    n: int


def spread(values: Sequence[float]) -> SeedSpread:
    """:class:`SeedSpread` of ``values``; ValueError for none."""
    if not values:
        raise ValueError("spread of no values")
    return SeedSpread(float(statistics.median(values)), min(values), max(values), len(values))


def ratio_spread(reference: Mapping[int, float], other: Mapping[int, float]) -> tuple[float, SeedSpread] | None:
    """How many times lower ``other`` is than ``reference`` (seed -> figure): the ratio of the medians over the
    seeds both have, and the :class:`SeedSpread` of the per-seed ratios.  None when no seed is shared or a figure is
    0."""
    seeds = sorted(set(reference) & set(other))
    if not seeds or any(other[s] <= 0 for s in seeds):
        return None
    medians = statistics.median(reference[s] for s in seeds) / statistics.median(other[s] for s in seeds)
    return float(medians), spread([reference[s] / other[s] for s in seeds])
