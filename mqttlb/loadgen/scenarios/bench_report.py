"""A scenario's ``report.md`` from its run records (``runner.load_runs``), pure: medians and ranges over seeds,
ratios against round robin and least request with their spread, settling, reversals, QoS 1, CPU budget, and
the verdict against issue 15's targets (weighted CPU on its best base >= 2x better than least request and
>= 3x better than round robin, median over seeds; no QoS 1 loss without eviction)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from mqttlb.loadgen.scenarios import metrics
from mqttlb.loadgen.scenarios.catalog import Scenario
from mqttlb.loadgen.scenarios.policies import (
    LEAST_REQUEST,
    POLICIES,
    ROUND_ROBIN,
    WEIGHTED,
    WEIGHTED_EVICT,
)

TARGET_VS_LR = 2.0
TARGET_VS_RR = 3.0
MIN_SEEDS = 3


def _table(head: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    return ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head), *("| " + " | ".join(r) + " |" for r in rows)]


def _f(value: float) -> str:
    return f"{value:.4f}"


def _range(s: metrics.SeedSpread, fmt: str = "{:.4f}") -> str:
    return f"{fmt.format(s.median)} [{fmt.format(s.low)}-{fmt.format(s.high)}]"


def _ratio(reference: Mapping[int, float], other: Mapping[int, float]) -> str:
    got = metrics.ratio_spread(reference, other)
    if got is None:
        return "-"
    of_medians, per_seed = got
    return f"{of_medians:.2f}x [{per_seed.low:.2f}-{per_seed.high:.2f}x]"


def by_policy(figures: Sequence[metrics.RunFigures]) -> dict[str, dict[int, metrics.RunFigures]]:
    """policy -> seed -> figures, policies in :data:`POLICIES` order."""
    grouped: dict[str, dict[int, metrics.RunFigures]] = {}
    for name in POLICIES:
        runs = {f.seed: f for f in figures if f.policy == name}
        if runs:
            grouped[name] = runs
    return grouped


def _settle_cell(runs: Mapping[int, metrics.RunFigures]) -> str:
    """Settling over the seeds of the runs that were imbalanced: ``12 [10-14] s``, then how many never went back
    below the threshold and how many were never above it; ``never imbalanced`` when no run was."""
    imbalanced = [r.settle for r in runs.values() if r.settle.onset is not None]
    if not imbalanced:
        return "never imbalanced"
    settled = [s.seconds for s in imbalanced if s.seconds is not None]
    text = _range(metrics.spread(settled), "{:.0f}") + " s" if settled else "-"
    never_below, never_above = len(imbalanced) - len(settled), len(runs) - len(imbalanced)
    text += f"; never below: {never_below} of {len(runs)}" if never_below else ""
    return text + (f"; never imbalanced: {never_above} of {len(runs)}" if never_above else "")


def summary_rows(grouped: Mapping[str, Mapping[int, metrics.RunFigures]]) -> list[list[str]]:
    """One row per policy: the report's main table."""
    msd = {name: {seed: r.msd for seed, r in runs.items()} for name, runs in grouped.items()}
    rows = []
    for name, runs in grouped.items():
        values = list(runs.values())
        rows.append([
            f"`{name}`",
            str(len(runs)),
            _range(metrics.spread([r.msd for r in values])),
            _ratio(msd[ROUND_ROBIN], msd[name]) if ROUND_ROBIN in msd and name != ROUND_ROBIN else "-",
            _ratio(msd[LEAST_REQUEST], msd[name]) if LEAST_REQUEST in msd and name != LEAST_REQUEST else "-",
            _settle_cell(runs),
            _range(metrics.spread([float(r.reversals) for r in values]), "{:.0f}"),
            f"{sum(r.qos1_lost for r in values)} / {sum(r.qos1_published for r in values)}",
            str(sum(r.connect_failures for r in values)),
            str(sum(r.evicted for r in values)),
            _range(metrics.spread([r.generator_cpu_share * 100 for r in values]), "{:.0f}") + " %",
            _range(metrics.spread([r.machine_cpu_share * 100 for r in values]), "{:.0f}") + " %",
        ])
    return rows


SUMMARY_HEAD = [
    "policy", "seeds", "CPU max sq. dev.: median [range]", "x lower than round robin: of medians [per seed]",
    "x lower than least request: of medians [per seed]", "settling (onset -> below threshold): median [range]",
    "weight reversals: median [range]", "QoS 1 lost / published", "connect failures", "evicted",
    "generator CPU (share of all cores): median [range]", "machine busy: median [range]",
]


def seed_rows(figures: Sequence[metrics.RunFigures]) -> list[list[str]]:
    rows = []
    for f in sorted(figures, key=lambda f: (f.seed, list(POLICIES).index(f.policy))):
        rows.append([str(f.seed), f"`{f.policy}`", _f(f.msd), _f(f.msd_max),
                     " / ".join(f"{v:.2f}" for v in f.mean_cpu.values()), f.settle.describe(), str(f.reversals),
                     str(f.weight_changes), f"{f.qos1_lost} / {f.qos1_published}", str(f.evicted),
                     f"{f.generator_cpu_share * 100:.0f} %"])
    return rows


def verdict(grouped: Mapping[str, Mapping[int, metrics.RunFigures]], steerable: str) -> list[str]:
    """The verdict lines: the best weighted policy by median against both baselines, and QoS 1."""
    lines = []
    msd = {name: {seed: r.msd for seed, r in runs.items()} for name, runs in grouped.items()}
    weighted = [name for name in WEIGHTED if name in msd]
    if weighted and ROUND_ROBIN in msd and LEAST_REQUEST in msd:
        best = min(weighted, key=lambda n: metrics.spread(list(msd[n].values())).median)
        vs_lr = metrics.ratio_spread(msd[LEAST_REQUEST], msd[best])
        vs_rr = metrics.ratio_spread(msd[ROUND_ROBIN], msd[best])
        seeds = min(len(msd[best]), len(msd[LEAST_REQUEST]), len(msd[ROUND_ROBIN]))
        if vs_lr is not None and vs_rr is not None:
            met = vs_lr[0] >= TARGET_VS_LR and vs_rr[0] >= TARGET_VS_RR
            lines.append(
                f"- Best weighted policy by median: `{best}`: {vs_lr[0]:.2f}x lower than least request (target "
                f">= {TARGET_VS_LR:g}x) and {vs_rr[0]:.2f}x lower than round robin (target >= {TARGET_VS_RR:g}x): "
                f"**{'met' if met else 'not met'}**" + ("" if seeds >= MIN_SEEDS else
                                                       f" (only {seeds} seed(s): no claim rests on this)"))
    lines.append(f"- Can weights steer this load? {steerable}.")
    without = [r for name, runs in grouped.items() if name != WEIGHTED_EVICT for r in runs.values()]
    lost = sum(r.qos1_lost for r in without)
    lines.append(f"- QoS 1 lost in the runs without eviction: {lost} ({'none' if lost == 0 else '**not zero**'}).")
    return lines


def render(scenario: Scenario, records: Sequence[Mapping[str, Any]], settings: Mapping[str, str]) -> str:
    """The Markdown report of ``scenario`` from its run ``records``; ValueError when there is none."""
    if not records:
        raise ValueError(f"no run of scenario {scenario.name} to report")
    figures = [metrics.RunFigures.from_dict(r["figures"]) for r in records]
    grouped = by_policy(figures)
    threshold = figures[0].settle.threshold
    lines = [
        f"# Scenario `{scenario.name}`",
        "",
        f"**Workload.** {scenario.description}.",
        "",
        f"**Can it be steered?** {scenario.steerable}.",
        "",
        "Balance figure: the CPU max squared deviation (the largest squared distance of a node's utilisation "
        f"from the cluster mean) averaged over t >= {scenario.measure_from:g} s of each run. Ratios are how many "
        "times lower a policy's figure is than the baseline's: of the medians over seeds, and per seed [lowest-"
        f"highest]. Settling: from the first sample at or after t = {scenario.onset_from:g} s at or above the "
        f"alert threshold ({threshold:g}) until the figure stays below it. Weight reversals: how often a node's "
        "Envoy weight changed direction (oscillation).",
        "",
        "## Verdict",
        "",
        *verdict(grouped, scenario.steerable),
        "",
        "## Per policy (over seeds)",
        "",
        *_table(SUMMARY_HEAD, summary_rows(grouped)),
        "",
        "## Per run",
        "",
        *_table(["seed", "policy", "CPU max sq. dev.", "max", "mean CPU per node", "settling", "reversals",
                 "weight changes", "QoS 1 lost / published", "evicted", "generator CPU"], seed_rows(figures)),
        "",
        "## Settings",
        "",
        *_table(["setting", "value"], [[k, v] for k, v in settings.items()]),
        "",
    ]
    return "\n".join(lines)
