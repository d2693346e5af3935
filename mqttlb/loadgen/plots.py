"""PNG charts of an experiment: one panel per policy, one line per node (matplotlib, no display)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from mqttlb.loadgen.balance import Sample, connection_msd_series, cpu_msd_series  # noqa: E402

Runs = Mapping[str, Sequence[Sample]]


def _save(fig: Figure, path: Path) -> Path:
    """Lay ``fig`` out, write it to ``path`` as PNG (90 dpi), close it; returns ``path``."""
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def _panels(
    runs: Runs,
    nodes: Sequence[str],
    path: Path,
    title: str,
    ylabel: str,
    value: Callable[[Sample, str], float],
    step: bool = False,
    hline: float | None = None,
) -> Path:
    fig, axes = plt.subplots(1, len(runs), figsize=(5 * len(runs), 3.6), sharey=True, squeeze=False)
    for ax, (policy, samples) in zip(axes[0], runs.items(), strict=True):
        times = [s.t for s in samples]
        for node in nodes:
            ys = [value(s, node) for s in samples]
            if step:
                ax.step(times, ys, where="post", label=node)
            else:
                ax.plot(times, ys, label=node)
        if hline is not None:
            ax.axhline(hline, color="grey", linestyle="--", linewidth=1)
        ax.set_title(policy)
        ax.set_xlabel("seconds since load start")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel(ylabel)
    axes[0][-1].legend(loc="upper right", fontsize="small")
    fig.suptitle(title)
    return _save(fig, path)


def cpu_per_node(runs: Runs, nodes: Sequence[str], path: Path, cpu_high: float) -> Path:
    """Each node's CPU utilisation (0..1 of its credited cores) over time, a dashed line at ``cpu_high``."""
    title, ylabel = "Broker CPU utilisation per node", "utilisation of node cores"
    return _panels(runs, nodes, path, title, ylabel, lambda s, n: s.cpu.get(n, 0.0), hline=cpu_high)


def connections_per_node(runs: Runs, nodes: Sequence[str], path: Path) -> Path:
    """Each node's active connections as Envoy counts them, as a staircase."""
    return _panels(runs, nodes, path, "Active connections per node (Envoy)", "connections", _connections, step=True)


def weights_per_node(runs: Runs, nodes: Sequence[str], path: Path) -> Path:
    """Each node's Envoy endpoint weight (EDS ``load_balancing_weight``), as a staircase."""
    return _panels(runs, nodes, path, "Envoy endpoint weight per node", "load_balancing_weight", _weight, step=True)


def _connections(sample: Sample, node: str) -> float:
    return float(sample.connections.get(node, 0))


def _weight(sample: Sample, node: str) -> float:
    return float(sample.weights.get(node, 0))


def deviation(runs: Runs, nodes: Sequence[str], path: Path, threshold: float) -> Path:
    """Max squared deviation from the mean: CPU utilisation and connection share, per policy."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6), squeeze=False)
    cpu_ax, conn_ax = axes[0]
    for policy, samples in runs.items():
        times = [s.t for s in samples]
        cpu_ax.plot(times, cpu_msd_series(samples, nodes), label=policy)
        conn_ax.plot(times, connection_msd_series(samples, nodes), label=policy)
    cpu_ax.axhline(threshold, color="grey", linestyle="--", linewidth=1, label="imbalance threshold")
    cpu_ax.set_title("CPU: max squared deviation from mean")
    conn_ax.set_title("Connections: max squared deviation of share from 1/N")
    for ax in (cpu_ax, conn_ax):
        ax.set_xlabel("seconds since load start")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    return _save(fig, path)
