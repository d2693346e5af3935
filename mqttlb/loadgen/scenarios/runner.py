"""One runner for every named scenario: each seed, each policy, one fresh stack, figures written as they come.

For every (seed, policy) the runner starts a stack with the policy's Envoy ``lb_policy`` and webhook mode
(:mod:`policies`), runs the scenario's workload and node events through it (:func:`arm.run_arm`), and writes
under ``out/runs/``: ``<seed>-<policy>.json`` (:class:`metrics.RunFigures`), the samples, Envoy's per-node
connects, the load report and the evict audit entries.  A run already on disk of the same identity (scenario,
parameter set, nodes, credited cores, length: :func:`run_identity`) can be kept (:func:`kept_runs` finds it;
:func:`run_all` skips what it is given), so an interrupted benchmark resumes and seeds can be added
later; the report (:mod:`bench_report`) is drawn from whatever ``out/runs/`` holds.
"""

from __future__ import annotations

import csv
import functools
import io
import json
import logging
from collections.abc import Callable, Collection, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mqttlb.atomic import atomic_write_text
from mqttlb.loadgen.balance import cpu_msd_series
from mqttlb.loadgen.scenarios import analysis, metrics
from mqttlb.loadgen.scenarios.arm import ArmRun, run_arm
from mqttlb.loadgen.scenarios.catalog import Scenario
from mqttlb.loadgen.scenarios.policies import POLICIES
from mqttlb.loadgen.workload import Workload
from mqttlb.params import SHORT_LIVED_STACK_PARAMS
from mqttlb.yamlfile import deep_merge

if TYPE_CHECKING:
    from mqttlb.stack.config import StackConfig

log = logging.getLogger(__name__)

# The ``fast`` set: the short-lived stacks' parameters (``mqttlb.params.SHORT_LIVED_STACK_PARAMS``) with the
# named differences of the first experiment: the loop must steer clients that reconnect every 20-60 s, so a
# 12 s rate window (6 scrapes at 2 s), alerts `for` 6 s, faster Alertmanager grouping and a 4 s step interval.
# The imbalance alert fires from 7 points of deviation (default 20): with the default the alert resolved at
# ~15 points, the weights went back to neutral and the imbalance crept back (2.4x lower than round robin in
# a 180 s run, seed 1, before the weights were held while the spread persists).  Slower recovery likewise.
FAST_DELTAS: dict[str, Any] = {
    "rate_window": "12s",
    "cpu_high_for": "6s",
    "imbalance_for": "6s",
    "imbalance_max_squared_deviation": 0.005,
    "alertmanager": {"group_wait": "1s", "group_interval": "3s", "repeat_interval": "6s"},
    "policy": {"cooldown_seconds": 4, "recover_step": 10},
}
FAST_PARAMS: dict[str, Any] = deep_merge(SHORT_LIVED_STACK_PARAMS, FAST_DELTAS)

# Stack overrides per parameter set: ``shipped`` = the stack file and mqttlb/params.yaml as users get them;
# ``fast`` = the accelerated alert loop above (rate window 12 s, imbalance threshold 0.005, step interval
# 4 s, scrape 2 s) with Envoy slow start off.
PARAM_SETS: dict[str, dict[str, Any]] = {
    "shipped": {},
    "fast": {"params": FAST_PARAMS, "scrape_interval": "2s", "slow_start_window": "0s"},
}


def slug(seed: int, policy: str) -> str:
    """File name stem of one run: ``seed1-weighted-cpu-evict``."""
    return f"seed{seed}-{policy.replace('+', '-')}"


def figures_of(run: ArmRun, scenario: Scenario, seed: int) -> metrics.RunFigures:
    """The :class:`metrics.RunFigures` of ``run``; the alert threshold is the run's own
    ``imbalance_max_squared_deviation``.  Raises ValueError when no sample is in the measured window."""
    threshold = float(run.stack_params["imbalance_max_squared_deviation"])
    msd, msd_max, mean_cpu, settle = metrics.balance_figures(
        run.samples, run.nodes, measure_from=scenario.measure_from, onset_from=scenario.onset_from,
        threshold=threshold,
    )
    batches = analysis.batches_from_audit(run.audit, run.wall_start)
    return metrics.RunFigures(
        scenario=scenario.name,
        policy=run.setup.name,
        seed=seed,
        measure_from=scenario.measure_from,
        msd=round(msd, 6),
        msd_max=round(msd_max, 6),
        mean_cpu={n: round(v, 4) for n, v in mean_cpu.items()},
        settle=settle,
        reversals=metrics.weight_reversals(run.samples, run.nodes),
        weight_changes=metrics.weight_changes(run.samples, run.nodes),
        qos1_published=int(run.load.published.get("1", 0)),
        qos1_lost=int(run.load.qos1.get("lost", 0)),
        connect_failures=run.load.connect_failures_total,
        evicted=sum(b.count for b in batches),
        evict_batches=len(batches),
        evict_bounds_hold=analysis.check_bounds(batches, float(run.stack_params["eviction"]["max_per_second"])).holds,
        generator_cpu_share=run.cpu_budget.generator,
        machine_cpu_share=run.cpu_budget.machine,
    )


def _samples_csv(run: ArmRun) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    nodes = run.nodes
    writer.writerow(["t", "cpu_max_sq_dev", *(f"cpu_{n}" for n in nodes), *(f"connections_{n}" for n in nodes),
                     *(f"weight_{n}" for n in nodes)])
    for s, msd in zip(run.samples, cpu_msd_series(run.samples, nodes), strict=True):
        writer.writerow([s.t, round(msd, 5), *(round(s.cpu.get(n, 0.0), 4) for n in nodes),
                         *(s.connections.get(n, 0) for n in nodes), *(s.weights.get(n, 0) for n in nodes)])
    return buffer.getvalue()


def write_run(runs_dir: Path, run: ArmRun, figures: metrics.RunFigures, meta: Mapping[str, Any]) -> None:
    """``runs_dir/<slug>.json`` (figures and ``meta``), ``.samples.csv``, ``.connects.csv``, ``.loadgen.json``,
    ``.evictions.jsonl``."""
    stem = runs_dir / slug(figures.seed, figures.policy)
    run.load.write_json(stem.with_suffix(".loadgen.json"))
    atomic_write_text(stem.with_suffix(".samples.csv"), _samples_csv(run))
    connects = io.StringIO()
    writer = csv.writer(connects)
    writer.writerow(["t", *(f"cx_total_{n}" for n in run.nodes)])
    for c in run.connects:
        writer.writerow([c.t, *(c.cx_total.get(n, 0) for n in run.nodes)])
    atomic_write_text(stem.with_suffix(".connects.csv"), connects.getvalue())
    evicts = [json.dumps(e, sort_keys=True) for e in run.audit if e.get("kind") == "evict"]
    atomic_write_text(stem.with_suffix(".evictions.jsonl"), "".join(line + "\n" for line in evicts))
    record = {"figures": figures.as_dict(), **meta}
    atomic_write_text(stem.with_suffix(".json"), json.dumps(record, indent=2, sort_keys=True, default=str) + "\n")


def load_runs(runs_dir: Path) -> list[dict[str, Any]]:
    """Every run record (``{"figures": ..., "meta"...}``) under ``runs_dir``, by seed then file name."""
    records = []
    for path in sorted(runs_dir.glob("seed*.json")):
        if path.name.endswith(".loadgen.json"):
            continue
        records.append(json.loads(path.read_text()))
    return sorted(records, key=lambda r: (r["figures"]["seed"], r["figures"]["policy"]))


def run_identity(scenario: Scenario, param_set: str, base: StackConfig) -> dict[str, Any]:
    """What must match for a run on disk to stand for a run asked for now: the scenario, the parameter set, the
    number of nodes, the cores credited to each and the seconds of load (a ``--short`` run lasts far less)."""
    return {
        "scenario": scenario.name,
        "param_set": param_set,
        "nodes": base.nodes,
        "node_cpu_cores": base.node_cpu_cores,
        "duration": scenario.duration,
    }


def record_meta(scenario: Scenario, param_set: str, run: ArmRun, base: StackConfig) -> dict[str, Any]:
    """What a run's record keeps beside its figures: its identity (:func:`run_identity`), workload, the stack's
    parameters and settings as the run had them, node events and the machine's cores."""
    return {
        **run_identity(scenario, param_set, base),
        "workload": run.load.workload,
        "stack_params": run.stack_params,
        "stack_settings": run.stack_settings,
        "events": run.events,
        "cores": run.cpu_budget.cores,
    }


def identity_differences(record: Mapping[str, Any], identity: Mapping[str, Any]) -> dict[str, Any]:
    """The keys of ``identity`` (:func:`run_identity`) on which a run ``record`` differs, with the record's value.
    A key the record predates (runs before 2026-12-01 lack ``nodes`` and ``duration``) is not compared."""
    return {key: record[key] for key, value in identity.items() if key in record and record[key] != value}


def kept_runs(
    runs_dir: Path, identity: Mapping[str, Any], seeds: Sequence[int], policies: Sequence[str]
) -> list[tuple[int, str]]:
    """The ``(seed, policy)`` pairs, seed-major, whose record in ``runs_dir`` has the same ``identity``
    (:func:`run_identity`): :func:`run_all` keeps them rather than run them again (any other record is run
    again and overwritten); see :func:`identity_differences`."""
    kept = []
    for seed in seeds:
        for name in policies:
            record = runs_dir / f"{slug(seed, name)}.json"
            if record.exists():
                meta = json.loads(record.read_text())
                if not identity_differences(meta, identity):
                    kept.append((seed, name))
    return kept


def _build(scenario: Scenario, seed: int, port: int) -> Workload:
    return scenario.build(port, seed)


def run_all(
    scenario: Scenario,
    seeds: Sequence[int],
    policies: Sequence[str],
    *,
    param_set: str,
    base: StackConfig,
    out: Path,
    state_root: Path,
    kept: Collection[tuple[int, str]] = (),
    on_run: Callable[[metrics.RunFigures], None] = lambda _f: None,
) -> list[metrics.RunFigures]:
    """Run ``scenario`` for every seed and policy (seed-major) on the ``base`` stack settings, skipping the
    ``(seed, policy)`` pairs in ``kept`` (their records in ``out/runs`` stay: :func:`kept_runs` finds them);
    the figures of the runs done now.  Raises what :func:`arm.run_arm` raises (RuntimeError,
    OSError, ValueError)."""
    runs_dir = out / "runs"
    runs_dir.mkdir(parents=True, exist_ok=True)
    done: list[metrics.RunFigures] = []
    for seed in seeds:
        for name in policies:
            if (seed, name) in kept:
                log.info("seed %d, %s: already on disk, kept", seed, name)
                continue
            run = run_arm(POLICIES[name], functools.partial(_build, scenario, seed), scenario.events,
                          base=base, state_dir=state_root / slug(seed, name))
            figures = figures_of(run, scenario, seed)
            write_run(runs_dir, run, figures, record_meta(scenario, param_set, run, base))
            log.info("seed %d, %s: CPU max sq. dev. %.4f, settling %s, reversals %d, QoS1 lost %d, generator CPU "
                     "%.0f %%", seed, name, figures.msd, figures.settle.describe(), figures.reversals,
                     figures.qos1_lost, figures.generator_cpu_share * 100)
            on_run(figures)
            done.append(figures)
    return done
