"""Per-node samples of a scenario run and their CPU balance figure over time.  Pure: no I/O.

The definition matches the recording rules in ``mqttlb/contract.py``: CPU deviation is a node's
utilisation minus the cluster mean, and "max squared deviation" is the largest square over the nodes
at one instant.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Sample:
    """One sampling instant: seconds since the load started, and per-node values."""

    t: float
    cpu: Mapping[str, float]  # utilisation of the node's configured cores (0..1, may exceed 1)
    connections: Mapping[str, int]  # active connections Envoy holds to the node
    weights: Mapping[str, int]  # Envoy load_balancing_weight of the node


def max_squared_deviation(values: Sequence[float]) -> float:
    """Largest squared distance of a value from their mean; 0 for no values."""
    if not values:
        return 0.0
    mean = sum(values) / len(values)
    return max((v - mean) ** 2 for v in values)


def cpu_msd_series(samples: Sequence[Sample], nodes: Sequence[str]) -> list[float]:
    """The CPU max squared deviation over ``nodes`` at each sample (a node missing from one counts 0)."""
    return [max_squared_deviation([s.cpu.get(n, 0.0) for n in nodes]) for s in samples]
