"""The experiment's ``report.md``: workload, one table row per policy, charts, and how to read them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from mqttlb.loadgen.balance import BalanceSummary
from mqttlb.loadgen.report import Report


@dataclass(frozen=True)
class PolicyResult:
    name: str
    description: str
    load: Report
    balance: BalanceSummary
    actions: dict[str, int]  # webhook audit log entries by kind (rebalance, noop, shed, ...)
    sampler_errors: int


def _pct(value: float) -> str:
    return f"{value * 100:.0f} %"


def _settle(value: float | None) -> str:
    return "not settled" if value is None else f"{value:.0f} s"


def policy_table(results: Sequence[PolicyResult], nodes: Sequence[str]) -> str:
    head = (
        ["policy"]
        + [f"mean CPU {n}" for n in nodes]
        + [
            "CPU max sq. dev. (mean / max)",
            "conn. share max sq. dev. (mean / max)",
            "time to settle",
            "final connections",
            "QoS1 lost / dup",
            "connect failures",
            "webhook weight changes",
        ]
    )
    rows = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for r in results:
        b, q = r.balance, r.load.qos1
        cells = (
            [r.name]
            + [_pct(b.mean_cpu[n]) for n in nodes]
            + [
                f"{b.cpu_msd_mean:.4f} / {b.cpu_msd_max:.4f}",
                f"{b.connections_msd_mean:.4f} / {b.connections_msd_max:.4f}",
                _settle(b.settle_s),
                " / ".join(str(b.final_connections[n]) for n in nodes),
                f"{q.get('lost', 0)} / {q.get('duplicates', 0)}",
                str(r.load.connect_failures_total),
                str(r.actions.get("rebalance", 0)),
            ]
        )
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def improvement(results: Sequence[PolicyResult], baseline: str, candidate: str) -> float | None:
    """How many times lower ``candidate``'s mean CPU max squared deviation is than ``baseline``'s."""
    by_name = {r.name: r.balance.cpu_msd_mean for r in results}
    if baseline not in by_name or candidate not in by_name:
        return None
    base, cand = by_name[baseline], by_name[candidate]
    if cand <= 0:
        return float("inf") if base > 0 else None
    return base / cand


def comparison_lines(results: Sequence[PolicyResult]) -> list[str]:
    lines = []
    for other in ("round-robin", "least-request"):
        ratio = improvement(results, other, "weighted-cpu")
        if ratio is not None:
            factor = f"{ratio:.1f}x lower" if ratio >= 1 else f"{1 / ratio:.1f}x higher"
            lines.append(
                f"- weighted-cpu vs {other}: mean CPU max squared deviation {factor} "
                f"({_msd(results, other)} -> {_msd(results, 'weighted-cpu')})."
            )
    return [*lines, ""] if lines else []


def _msd(results: Sequence[PolicyResult], name: str) -> str:
    return next(f"{r.balance.cpu_msd_mean:.4f}" for r in results if r.name == name)


def render(
    results: Sequence[PolicyResult],
    nodes: Sequence[str],
    workload: str,
    settings: dict[str, str],
    charts: dict[str, str],
    threshold: float,
) -> str:
    first = results[0].balance
    lines = [
        "# mqttlb policy experiment",
        "",
        "The same seeded workload, run once per balancing policy against a fresh local stack "
        "(Envoy + Mosquitto nodes + exporters + Prometheus + Alertmanager + webhook).",
        "",
        "## Settings",
        "",
        *[f"- {key}: {value}" for key, value in settings.items()],
        "",
        "## Workload",
        "",
        "```",
        workload,
        "```",
        "",
        "Weights only steer *new* connections, so the workload needs clients that arrive or reconnect "
        "while the load is unequal. In the built-in workload the gateway sites connect first, one after "
        "the other, each opening its heavy uplink and then two light links: with 3 nodes, round robin "
        "gives every uplink the same node, reproducibly. The uplinks stay connected, so no policy can "
        "move them; what a policy can steer is where the mobile gateways (which join later and reconnect "
        "every 20-60 s) and the churning sensors go.",
        "",
        "## Results",
        "",
        f"Means are over the settled second half of each run, the samples from t = "
        f"{first.window_start_s:.0f} s to the end ({first.samples} "
        f"samples of the first policy); max squared deviation is computed per sample as in the recording "
        f"rules; *time to settle* is when the CPU max squared deviation last went below the imbalance "
        f"threshold ({threshold:g}) and stayed there.",
        "",
        policy_table(results, nodes),
        "",
        *comparison_lines(results),
        "| policy | what it is | QoS1 acked | publish rate | latency p50 / p95 / p99 (ms) "
        "| webhook actions |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in results:
        lat = r.load.latency_ms
        actions = ", ".join(f"{k} {v}" for k, v in sorted(r.actions.items())) or "none"
        lines.append(
            f"| {r.name} | {r.description} | {r.load.qos1.get('acked', 0)} "
            f"| {r.load.publish_rate:.0f} msg/s | "
            f"{lat.get('p50')} / {lat.get('p95')} / {lat.get('p99')} | {actions} |"
        )
    lines += ["", "## Charts", ""]
    for title, file in charts.items():
        lines += [f"### {title}", "", f"![{title}]({file})", ""]
    return "\n".join(lines) + "\n"
