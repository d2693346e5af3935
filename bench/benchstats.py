"""Percentile lines for the benchmarks' output (imported by the ``bench_*.py`` scripts beside it)."""

from __future__ import annotations


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (0 <= q <= 100) of a non-empty list."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def describe(name: str, values: list[float], *, width: int = 52, unit: str = "ms") -> str:
    """One line: ``name`` padded to ``width``, the count, p50/p90/p99 and max of ``values`` in ``unit``."""
    if not values:
        return f"{name:<{width}} no samples"
    figures = "  ".join(f"p{q}={percentile(values, q):8.2f} {unit}" for q in (50, 90, 99))
    return f"{name:<{width}} n={len(values):<5} {figures}  max={max(values):8.2f} {unit}"
