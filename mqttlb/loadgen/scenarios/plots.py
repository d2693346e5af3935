"""The scenarios' charts (matplotlib, no display): CPU max squared deviation over time, evictions and
connects around eviction batches."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

from mqttlb.loadgen.scenarios.analysis import Batch  # noqa: E402

Series = tuple[Sequence[float], Sequence[float]]  # times (s since load start), values


def _save(fig: Figure, path: Path) -> Path:
    """Lay ``fig`` out, write it to ``path`` as PNG (90 dpi), close it; returns ``path``."""
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def msd_over_time(
    series: Mapping[str, Series],
    path: Path,
    *,
    threshold: float,
    threshold_label: str = "target",
    marks: Sequence[tuple[float, str]] = (),
    target_window: tuple[float, float] | None = None,
) -> Path:
    """CPU max squared deviation per arm over time, log scale, a dashed line at ``threshold`` (labelled
    ``threshold_label``), a dotted
    vertical line per mark (time, label) and ``target_window`` (start, end) shaded."""
    fig, ax = plt.subplots(figsize=(10, 4))
    for arm, (times, values) in series.items():
        ax.plot(times, [max(v, 1e-5) for v in values], label=arm)
    ax.axhline(threshold, color="grey", linestyle="--", linewidth=1, label=f"{threshold_label} {threshold:g}")
    for t, label in marks:
        ax.axvline(t, color="black", linestyle=":", linewidth=1)
        ax.annotate(label, (t, 1.0), xycoords=("data", "axes fraction"), fontsize="small", va="top", ha="left")
    if target_window is not None:
        ax.axvspan(*target_window, color="green", alpha=0.08, label="within 3 min of the return")
    ax.set_yscale("log")
    ax.set_xlabel("seconds since load start")
    ax.set_ylabel("CPU max squared deviation")
    ax.set_title("CPU max squared deviation from the mean (psutil, over the rate window)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize="small", loc="lower left")
    return _save(fig, path)


def evictions_and_connects(
    rates: Sequence[tuple[float, Mapping[str, float]]],
    batches: Sequence[Batch],
    nodes: Sequence[str],
    path: Path,
    *,
    max_per_second: float,
) -> Path:
    """Top: connects/s per node at Envoy; bottom: each batch's eviction rate per node (clients per second of
    the batch) as a bar over the batch's duration, with the rate bound dashed."""
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 5.5), sharex=True)
    times = [t for t, _ in rates]
    for i, node in enumerate(nodes):
        top.step(times, [r.get(node, 0.0) for _, r in rates], where="pre", label=node, color=f"C{i}",
                 linewidth=2.5 - i * 0.6)
    top.set_ylabel("connects/s at the node")
    top.set_title("Connects per second at each node (Envoy cx_total) and eviction batches")
    top.grid(alpha=0.3)
    top.legend(fontsize="small", loc="upper right")
    colours = {node: f"C{i}" for i, node in enumerate(nodes)}
    for b in batches:
        n = b.broker_evicted if b.broker_evicted is not None else b.count
        width = max(b.seconds, 0.5)
        bottom.bar(b.started, n / width, width=width, align="edge", color=colours.get(b.node, "grey"), alpha=0.7)
    bound = bottom.axhline(max_per_second, color="grey", linestyle="--", linewidth=1)
    handles = [Patch(color=colours[node], alpha=0.7) for node in nodes] + [bound]
    labels = [f"evicted from {node}" for node in nodes] + [f"bound {max_per_second:g}/s"]
    bottom.set_ylabel("evicted clients/s")
    bottom.set_xlabel("seconds since load start")
    bottom.grid(alpha=0.3)
    bottom.legend(handles, labels, fontsize="small", loc="upper right")
    return _save(fig, path)
