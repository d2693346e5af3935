"""The scenarios' ``report.md`` text, pure: tables from the arm summaries, chart links, how to read them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from mqttlb.loadgen.scenarios import heterogeneous, restart_pileup


def _pct(value: float) -> str:
    return f"{value * 100:.0f} %"


def _table(head: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    return ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head), *("| " + " | ".join(r) + " |" for r in rows)]


def _settings(settings: Mapping[str, str]) -> list[str]:
    return _table(["setting", "value"], [[k, v] for k, v in settings.items()])


def _charts(charts: Mapping[str, str]) -> list[str]:
    lines = []
    for title, name in charts.items():
        lines += [f"### {title}", "", f"![{title}]({name})", ""]
    return lines


Summary = restart_pileup.RestartSummary | heterogeneous.HeterogeneousSummary


def _bounds_rows(items: Sequence[tuple[str, Summary]]) -> list[list[str]]:
    rows = []
    for label, s in items:
        b, r = s.bounds, s.reconnects
        rows.append(
            [
                label,
                str(b.batches),
                str(b.evicted),
                f"{b.max_paced_rate:.1f} / {b.max_per_second:g}",
                str(max(b.max_count_over_bound, 0)),
                f"{b.counter_mismatches} / {b.without_counters}",
                "yes" if b.holds else "**no**",
                f"{r.peak_node:.0f} / {r.peak_total:.0f} / {r.mean_total:.1f}",
                f"{r.reference_peak:.0f}",
            ]
        )
    return rows


BOUNDS_HEAD = [
    "run",
    "batches",
    "evicted (plugin's evictedTotal)",
    "fastest batch, clients/s / bound",
    "most clients over a batch's bound",
    "count mismatches / batches without counters",
    "bounds hold",
    "connects/s during evictions: peak node / peak all / mean all",
    "peak connects/s outside the batches (all nodes)",
]

BOUNDS_TEXT = (
    "Every batch's figures come from the Mosquitto plugin's own counters, which the evict lever reads "
    "(`listClients`) just before and just after each batch and records in the batch's audit entry with the "
    "batch's start and end: *evicted* is the sum of `evictedTotal` after minus before; the fastest batch's "
    "rate is (n - 1) / (end - start), the pace between its first and last disconnect, against "
    "`eviction.max_per_second` (the plugin paces client i of a batch no earlier than i / maxPerSecond s "
    "after the command); a batch's bound is `max_per_second` x the pass interval and `max_fraction` of the "
    "node's clients. Connects per second are Envoy's per-node `cx_total` differences, sampled every second, "
    "while a batch ran and up to 4 s after (the clients' reconnect pause is 0.5 s); outside the batches: "
    "restart-pileup from the node stop on (its clients' reconnect wave), heterogeneous from the start "
    "(the connect ramp)."
)


RESTART_HEAD = [
    "arm",
    "node back at",
    "max sq. dev. in the 30 s after",
    "first below 0.01 after",
    "below 0.01 for good after",
    "within 3 min and stays",
    "max sq. dev., last minute (mean)",
    "mean CPU last minute",
    "final connections",
    "evicted (batches)",
    "connect failures",
]

QOS_HEAD = [
    "arm",
    "QoS 1 published",
    "acked",
    "in flight at a disconnect (not resent)",
    "lost",
    "redelivered",
    "sensors evicted",
    "unexpected disconnects (all clients)",
]

QOS_TEXT = (
    "The sensors publish QoS 1 and check delivery by subscribing to their own topic on the same "
    "connection. A client that is disconnected (node stop, eviction) reconnects with a clean session: "
    "messages it had sent without a PUBACK yet are *in flight, not resent*; messages the broker had "
    "acknowledged but not yet echoed are *lost*; an echo received twice is *redelivered*. The evict off "
    "arm has the node stop's share alone; the difference is what the evictions add."
)

Restarts = Mapping[int, Sequence[restart_pileup.RestartSummary]]


def _restart_row(seed: int, s: restart_pileup.RestartSummary) -> list[str]:
    st = s.settling
    nodes = list(s.mean_cpu_last_minute)
    return [
        f"{s.arm} (seed {seed})",
        f"{s.returned_at:.0f} s",
        f"{s.msd_at_return:.3f}",
        "never" if st.first_below is None else f"{st.first_below - st.start:.0f} s",
        "not settled" if st.settle_seconds is None else f"{st.settle_seconds:.0f} s",
        "yes" if st.met else "no",
        f"{s.msd_last_minute:.4f}",
        " / ".join(_pct(s.mean_cpu_last_minute[n]) for n in nodes),
        " / ".join(str(s.final_connections[n]) for n in nodes),
        f"{s.evicted} in {s.batches}",
        str(s.connect_failures),
    ]


def _qos_row(seed: int, s: restart_pileup.RestartSummary) -> list[str]:
    q = s.qos1
    return [
        f"{s.arm} (seed {seed})",
        *(str(v) for v in (q.published, q.acked, q.unacked, q.lost, q.redelivered)),
        str(s.evicted_sensors),
        str(s.unexpected_disconnects),
    ]


def restart_report(
    summaries: Restarts, workload: str, settings: Mapping[str, str], charts: Mapping[str, str]
) -> str:
    """The restart pile-up report for ``summaries`` (seed -> the arms' summaries, evict on first)."""
    met = {seed: restart_pileup.target_met(arms[0], arms[1]) for seed, arms in summaries.items()}
    every = [(seed, s) for seed, arms in summaries.items() for s in arms]
    lines = [
        "# Scenario restart-pileup: a node stops and comes back under long-lived clients (issue 14)",
        "",
        f"**Target** (CPU max squared deviation below {restart_pileup.THRESHOLD:g} within "
        f"{restart_pileup.WITHIN_S:.0f} s of the node's return and staying below to the end of the run with "
        "evict on; not with evict off): "
        + ", ".join(f"seed {seed} **{'met' if ok else 'not met'}**" for seed, ok in met.items())
        + ".",
        "",
        "## Workload",
        "",
        "```",
        workload,
        "```",
        "",
        "## Settings",
        "",
        *_settings(settings),
        "",
        "## Balance after the return",
        "",
        *_table(RESTART_HEAD, [_restart_row(seed, s) for seed, s in every]),
        "",
        "## Bounds",
        "",
        BOUNDS_TEXT,
        "",
        *_table(BOUNDS_HEAD, _bounds_rows([(f"{s.arm} (seed {seed})", s) for seed, s in every])),
        "",
        "## QoS 1 messages in flight",
        "",
        QOS_TEXT,
        "",
        *_table(QOS_HEAD, [_qos_row(seed, s) for seed, s in every]),
        "",
        "## Charts",
        "",
        *_charts(charts),
    ]
    return "\n".join(lines) + "\n"


def heterogeneous_report(
    summaries: Sequence[heterogeneous.HeterogeneousSummary],
    verdict: heterogeneous.Verdict,
    workloads: Mapping[int, str],
    settings: Mapping[str, str],
    charts: Mapping[str, str],
) -> str:
    """The heterogeneous report: one row per seed and arm, the medians and the target."""
    lines = [
        "# Scenario heterogeneous: heavy publishers scattered among light ones, no churn",
        "",
        f"**Target** (median over the seeds of weighted-cpu+evict's steady CPU max squared deviation at least "
        f"{heterogeneous.TARGET_RATIO:g}x lower than least-request's): **{'met' if verdict.met else 'not met'}**"
        f" — medians {verdict.median_least_request:.4f} (least-request) and "
        f"{verdict.median_weighted_evict:.4f} (weighted-cpu+evict), {verdict.ratio:.1f}x; per seed "
        + ", ".join(f"{seed}: {ratio:.1f}x" for seed, ratio in verdict.ratios.items())
        + ".",
        "",
        "## Workload",
        "",
    ]
    for seed, text in workloads.items():
        lines += [f"Seed {seed}:", "", "```", text, "```", ""]
    lines += ["## Settings", "", *_settings(settings), "", "## Balance over the steady part", ""]
    rows = []
    for s in summaries:
        nodes = list(s.mean_cpu_steady)
        rows.append(
            [
                s.arm,
                str(s.seed),
                f"from {s.steady_from:.0f} s",
                f"{s.msd_steady:.4f} / {s.msd_steady_max:.4f}",
                " / ".join(_pct(s.mean_cpu_steady[n]) for n in nodes),
                " / ".join(str(s.final_connections[n]) for n in nodes),
                f"{s.evicted} in {s.batches}",
                str(s.connect_failures),
            ]
        )
    lines += _table(
        ["arm", "seed", "steady part", "CPU max sq. dev. (mean / max)", "mean CPU per node", "final connections",
         "evicted (batches)", "connect failures"],
        rows,
    )
    lines += ["", "## Bounds", "", BOUNDS_TEXT, ""]
    lines += _table(BOUNDS_HEAD, _bounds_rows([(f"{s.arm} (seed {s.seed})", s) for s in summaries
                                               if s.arm == heterogeneous.WEIGHTED_EVICT]))
    lines += ["", "## Charts", "", *_charts(charts)]
    return "\n".join(lines) + "\n"
