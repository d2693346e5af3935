"""Balance figures of one experiment run, from per-node samples over time.  Pure: no I/O.

The definitions match the recording rules in ``mqttlb/contract.py``: CPU deviation is a node's
utilisation minus the cluster mean, connection deviation is a node's share of connections minus
1/N, and "max squared deviation" is the largest square over the nodes at one instant.
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
    if not values:
        return 0.0
    mean = sum(values) / len(values)
    return max((v - mean) ** 2 for v in values)


def connection_share_msd(connections: Sequence[int]) -> float:
    total = sum(connections)
    if total == 0 or not connections:
        return 0.0
    fair = 1 / len(connections)
    return max((c / total - fair) ** 2 for c in connections)


def cpu_msd_series(samples: Sequence[Sample], nodes: Sequence[str]) -> list[float]:
    return [max_squared_deviation([s.cpu.get(n, 0.0) for n in nodes]) for s in samples]


def connection_msd_series(samples: Sequence[Sample], nodes: Sequence[str]) -> list[float]:
    return [connection_share_msd([s.connections.get(n, 0) for n in nodes]) for s in samples]


def time_to_settle(times: Sequence[float], values: Sequence[float], threshold: float) -> float | None:
    """First time from which ``values`` stay at or below ``threshold`` to the end; None if never.

    A run that ends above the threshold has not settled, however often it dipped below.
    """
    settle: float | None = None
    for t, v in zip(times, values, strict=True):
        if v > threshold:
            settle = None
        elif settle is None:
            settle = t
    return settle


@dataclass(frozen=True)
class BalanceSummary:
    mean_cpu: dict[str, float]
    cpu_msd_mean: float  # mean over the measurement window
    cpu_msd_max: float
    connections_msd_mean: float
    connections_msd_max: float
    final_connections: dict[str, int]
    settle_s: float | None
    window_start_s: float
    samples: int


def summarise(
    samples: Sequence[Sample], nodes: Sequence[str], threshold: float, window_start: float = 0.0
) -> BalanceSummary:
    """Figures over the samples from ``window_start`` on (skip the ramp); time to settle uses all."""
    if not samples:
        raise ValueError("no samples to summarise")
    window = [s for s in samples if s.t >= window_start] or list(samples)
    cpu_msd = cpu_msd_series(window, nodes)
    conn_msd = connection_msd_series(window, nodes)
    all_msd = cpu_msd_series(samples, nodes)
    return BalanceSummary(
        mean_cpu={n: sum(s.cpu.get(n, 0.0) for s in window) / len(window) for n in nodes},
        cpu_msd_mean=sum(cpu_msd) / len(cpu_msd),
        cpu_msd_max=max(cpu_msd),
        connections_msd_mean=sum(conn_msd) / len(conn_msd),
        connections_msd_max=max(conn_msd),
        final_connections={n: samples[-1].connections.get(n, 0) for n in nodes},
        settle_s=time_to_settle([s.t for s in samples], all_msd, threshold),
        window_start_s=window[0].t,
        samples=len(window),
    )
