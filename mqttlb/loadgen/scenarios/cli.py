"""``mqttlb experiment [--scenario NAME]``: run a named scenario (default gateway-sites) under each policy and
seed, write its report.

Scenarios (``catalog.py``): gateway-sites, heterogeneous, pareto, slow-churn, restart-pileup, restart-pileup-long,
flash-crowd, and the control even-load.
Policies (``policies.py``): round-robin, least-request, weighted-cpu-rr, weighted-cpu-lr, weighted-cpu+evict.
Each (seed, policy) runs on a fresh stack (``runner.py``); ``--out`` gets ``runs/`` (one record, samples,
connects, load report and evict audit per run, kept across invocations so seeds can be added: a run already there
for the same scenario, parameters, nodes, cores and length is reused, one warning line says which, ``--fresh``
runs them again; one of the same seed and policy made otherwise is overwritten),
``report.md`` (``bench_report.py``), ``summary.json`` and ``msd.png``.  ``--report-only`` redraws the report from
``runs/``.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import signal
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mqttlb.atomic import atomic_write_text
from mqttlb.commandline import parse_args, plural, refuse
from mqttlb.loadgen.limits import raise_nofile_limit
from mqttlb.loadgen.scenarios import bench_report, catalog, metrics, runner
from mqttlb.loadgen.scenarios.arm import base_config
from mqttlb.loadgen.scenarios.policies import POLICIES, parse_policies
from mqttlb.logs import add_log_flags
from mqttlb.params import duration_seconds, measurement_lag_seconds

if TYPE_CHECKING:
    from mqttlb.stack.config import StackConfig

log = logging.getLogger("mqttlb.loadgen.scenarios")

DEFAULT_SCENARIO = "gateway-sites"
EXIT_FAILED = 1
EXIT_INTERRUPTED = 130


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mqttlb experiment",
        description="Run a named scenario under each balancing policy and seed, one fresh local stack per run, "
        "and write a report (median and range over seeds, ratios against round robin and least request, "
        "settling, weight reversals, QoS 1, CPU budget). Scenarios: " + ", ".join(catalog.NAMES)
        + ". Policies: " + ", ".join(POLICIES) + ".",
    )
    p.add_argument("--scenario", default=DEFAULT_SCENARIO, choices=catalog.NAMES,
                   help=f"the scenario to run (default {DEFAULT_SCENARIO})")
    p.add_argument("--out", type=Path,
                   help="report directory (default reports/experiment-<scenario>, as make experiment)")
    p.add_argument("--seeds", default="1,2,3", help="comma-separated workload seeds (default 1,2,3)")
    p.add_argument("--policies", default=",".join(POLICIES),
                   help=f"comma-separated subset of {', '.join(POLICIES)} (default: all, in that order)")
    p.add_argument("--params", choices=sorted(runner.PARAM_SETS), default="shipped",
                   help="shipped: the stack file's and params.yaml's parameters, as users get them (default); "
                   "fast: the accelerated alert loop (rate window 12 s, imbalance threshold 0.005, step 4 s, "
                   "scrape 2 s)")
    p.add_argument("--nodes", type=int, default=3, help="Mosquitto nodes (default 3)")
    p.add_argument("--node-cpu-cores", type=float, default=None,
                   help="CPU capacity credited to each node (default: the scenario's)")
    p.add_argument("--short", action="store_true",
                   help="smoke run: seconds per run and a small load; proves the pipeline, not the figures")
    once = p.add_mutually_exclusive_group()
    once.add_argument("--report-only", action="store_true",
                      help="redraw the report from every run in --out/runs (--seeds and --policies do not pick; "
                      "--params, --nodes, --node-cpu-cores and --short must match how they were run), run nothing")
    once.add_argument("--fresh", action="store_true",
                      help="run every requested seed and policy again, overwriting its run in --out/runs (default: a "
                      "run already there for the same scenario, --params, --nodes, --node-cpu-cores and length is "
                      "reused, and a line says which; a run of the same seed and policy made with other settings is "
                      "run again and overwritten)")
    p.add_argument("--keep-state", action="store_true", help="keep each stack's state dir under --out/state")
    add_log_flags(p)
    return p


def parse_seeds(text: str) -> list[int]:
    """``1,2,3`` -> [1, 2, 3]; ValueError for an empty list, a non-integer or a repeat."""
    try:
        seeds = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ValueError(f"--seeds must be comma-separated integers, got {text!r}") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"--seeds must name distinct seeds, got {text!r}")
    return seeds


def _check(args: argparse.Namespace) -> tuple[catalog.Scenario, list[int], list[str]]:
    """The scenario, seeds and policies; ValueError naming the flag."""
    seeds = parse_seeds(args.seeds)
    policies = parse_policies(args.policies)
    if not 2 <= args.nodes <= 16:
        raise ValueError("--nodes must be 2..16")
    if args.node_cpu_cores is not None and not 0 < args.node_cpu_cores <= 64:
        raise ValueError("--node-cpu-cores must be in (0, 64]")
    if args.out is None:
        args.out = Path("reports") / f"experiment-{args.scenario}"
    return catalog.scenario(args.scenario, short=args.short, nodes=args.nodes), seeds, policies


def settings_of(scenario: catalog.Scenario, records: list[dict[str, Any]], took: float | None) -> dict[str, str]:
    """The report's settings table, from the first record's stack parameters; a parameter the record predates
    (a key added since) shows as ``-``."""
    first = records[0]
    params, stack = first["stack_params"], first["stack_settings"]
    ev, policy = params["eviction"], params["policy"]
    seeds = sorted({r["figures"]["seed"] for r in records})
    cores = {r["cores"] for r in records}
    settings = {
        "parameter set": f"{first['param_set']} (`--params {first['param_set']}`)",
        "nodes": f"{len(first['figures']['mean_cpu'])} Mosquitto with the mqttlb plugin, "
        f"{scenario_cores(records):g} CPU cores credited to each; one machine with {', '.join(map(str, cores))} "
        "cores runs brokers, Envoy, Prometheus, Alertmanager, webhook and the load generator",
        "stack": f"a fresh stack per run; scrape {stack['scrape_interval']}, Envoy slow start "
        f"{stack['slow_start_window']}; rate_window {params['rate_window']}, imbalance threshold "
        f"{params['imbalance_max_squared_deviation']} for {params['imbalance_for']}, cpu_high {params['cpu_high']}",
        "weights": _listed(policy, ["neutral_weight", "min_weight", "max_weight", "spare_exponent",
                                    "active_request_bias", "max_step", "hysteresis", "ewma_alpha", "steer_target",
                                    "count_gain", "steer_below_alert"])
        + f", step interval {_step_interval(policy, stack, params)}",
        "evict lever (the arms with evict)": _listed(ev, ["after", "idle_after", "min_improvement", "spread_target",
                                                          "min_recipient_share", "max_per_second", "max_fraction",
                                                          "cooldown_seconds", "allow_persistent"]),
        "load per run": f"{scenario.duration:g} s; measured from t = {scenario.measure_from:g} s",
        "seeds": ", ".join(map(str, seeds)),
        "sampling": "every 1 s; CPU = broker process CPU (psutil) over the rate window / credited cores; "
        "connections and weights from Envoy admin; generator CPU = this process's CPU time (psutil) / "
        "(wall time x cores)",
    }
    if took is not None:
        settings["wall time of this invocation"] = f"{took:.0f} s"
    return settings


def _step_interval(policy: Mapping[str, Any], stack: Mapping[str, Any], params: Mapping[str, Any]) -> str:
    """The step interval a run had: ``policy.cooldown_seconds``, else scrape + rate window
    (``mqttlb.params.step_interval_seconds``), in seconds."""
    if policy.get("cooldown_seconds") is not None:
        return f"{float(policy['cooldown_seconds']):g} s"
    seconds = measurement_lag_seconds(duration_seconds(stack["scrape_interval"]), params["rate_window"])
    return f"{seconds:g} s (scrape + rate_window)"


def _listed(section: Mapping[str, Any], keys: Sequence[str]) -> str:
    """``key value, ...`` for the ``keys`` of a record's parameter ``section`` (booleans as in YAML, None as
    ``unset``); a key the record predates is ``-``."""

    def shown(value: Any) -> str:
        if value is None:
            return "unset"
        return str(value).lower() if isinstance(value, bool) else str(value)

    return ", ".join(f"{key} {shown(section[key]) if key in section else '-'}" for key in keys)


def scenario_cores(records: list[dict[str, Any]]) -> float:
    """CPU cores credited to each node in the runs (the first record's)."""
    return float(records[0]["node_cpu_cores"])


def _msd_chart(out: Path, records: list[dict[str, Any]], threshold: float) -> str:
    from mqttlb.loadgen.scenarios import plots

    seed = min(r["figures"]["seed"] for r in records)
    series: dict[str, tuple[list[float], list[float]]] = {}
    for record in records:
        f = record["figures"]
        if f["seed"] != seed:
            continue
        path = out / "runs" / f"{runner.slug(seed, f['policy'])}.samples.csv"
        with path.open() as handle:
            rows = list(csv.DictReader(handle))
        series[f["policy"]] = ([float(r["t"]) for r in rows], [float(r["cpu_max_sq_dev"]) for r in rows])
    return plots.msd_over_time(series, out / "msd.png", threshold=threshold,
                               threshold_label="imbalance threshold").name


def write_report(
    scenario: catalog.Scenario, out: Path, took: float | None, identity: Mapping[str, Any] | None = None
) -> Path:
    """``report.md``, ``summary.json`` and ``msd.png`` from ``out/runs``; ValueError when it holds no run of
    ``scenario``, runs of another length (``--short`` runs reported as full ones, or the other way round:
    the report would describe a load they did not have), or runs whose identity differs from ``identity``
    (:func:`runner.run_identity`: the report would pool runs of other parameters, nodes or cores under the
    first run's settings)."""
    records = [r for r in runner.load_runs(out / "runs") if r["scenario"] == scenario.name]
    if not records:
        raise ValueError(f"no run of {scenario.name} under {out / 'runs'}")
    lengths = sorted({float(r["duration"]) for r in records if "duration" in r} - {scenario.duration})
    if lengths:
        raise ValueError(f"runs under {out / 'runs'} lasted {', '.join(f'{d:g}' for d in lengths)} s, not the "
                         f"{scenario.duration:g} s of {scenario.name} as asked: report them with or without --short "
                         "as they were run")
    if identity is not None:
        _refuse_other_identities(records, identity, out / "runs")
    settings = settings_of(scenario, records, took)
    text = bench_report.render(scenario, records, settings)
    threshold = float(records[0]["stack_params"]["imbalance_max_squared_deviation"])
    chart = _msd_chart(out, records, threshold)
    text += f"\n## CPU max squared deviation over time (seed {min(r['figures']['seed'] for r in records)})\n\n"
    text += f"![CPU max squared deviation]({chart})\n"
    atomic_write_text(out / "report.md", text)
    figures = [metrics.RunFigures.from_dict(r["figures"]) for r in records]
    summary = {"scenario": scenario.name, "settings": settings, "runs": [f.as_dict() for f in figures]}
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2, sort_keys=True, default=str) + "\n")
    return out / "report.md"


def _refuse_other_identities(records: list[dict[str, Any]], identity: Mapping[str, Any], runs_dir: Path) -> None:
    """ValueError naming the runs (up to five) that were made with other settings than ``identity``."""
    odd = [(runner.slug(r["figures"]["seed"], r["figures"]["policy"]), differs) for r in records
           if (differs := runner.identity_differences(r, identity))]
    if odd:
        named = "; ".join(f"{name}: " + ", ".join(f"{k} {v} (asked {identity[k]})" for k, v in differs.items())
                          for name, differs in odd[:5])
        raise ValueError(f"{plural(len(odd), 'run')} under {runs_dir} {'was' if len(odd) == 1 else 'were'} made with "
                         "other settings than asked "
                         f"({named}{'; ...' if len(odd) > 5 else ''}): report them with the flags they were run with "
                         "(--params, --nodes, --node-cpu-cores), or move them to another --out")


def _say_reused(runs_dir: Path, kept: list[tuple[int, str]]) -> None:
    """One warning line naming the runs in ``runs_dir`` that are reused rather than run, and how to run them."""
    if kept:
        names = ", ".join(runner.slug(seed, policy) for seed, policy in kept)
        log.warning("reusing %s already in %s (same scenario, parameters, nodes, cores and length) instead of "
                    "running them: %s; to run them again pass --fresh, a new --out, or delete their files",
                    plural(len(kept), "run"), runs_dir, names)


def _asked(args: argparse.Namespace, scenario: catalog.Scenario) -> tuple[StackConfig, dict[str, Any]]:
    """The stack settings the flags ask for (``--nodes``, ``--node-cpu-cores`` or the scenario's, ``--params``)
    and the run identity they make (:func:`runner.run_identity`).  Raises StackConfigError (a ValueError)."""
    base = base_config(args.nodes, args.node_cpu_cores or scenario.node_cpu_cores, **runner.PARAM_SETS[args.params])
    return base, runner.run_identity(scenario, args.params, base)


def _interrupt(_signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = parse_args(build_parser(), argv)
    try:
        scenario, seeds, policies = _check(args)
    except ValueError as exc:
        return refuse(exc, "mqttlb experiment")
    out: Path = args.out
    if args.report_only:
        try:
            _, identity = _asked(args, scenario)
            log.info("report written to %s", write_report(scenario, out, None, identity))
        except (ValueError, OSError, KeyError) as exc:
            return refuse(exc, "mqttlb experiment")
        return 0
    raise_nofile_limit(2000)
    out.mkdir(parents=True, exist_ok=True)
    previous = signal.signal(signal.SIGTERM, _interrupt)
    started = time.monotonic()
    try:
        base, identity = _asked(args, scenario)
        kept = [] if args.fresh else runner.kept_runs(out / "runs", identity, seeds, policies)
        _say_reused(out / "runs", kept)
        with tempfile.TemporaryDirectory(prefix="mqttlb-scenario-") as tmp:
            state_root = out / "state" if args.keep_state else Path(tmp)
            runner.run_all(scenario, seeds, policies, param_set=args.params, base=base, out=out,
                           state_root=state_root, kept=kept)
        report = write_report(scenario, out, time.monotonic() - started, identity)
    except (KeyboardInterrupt, SystemExit):  # Ctrl-C, or SIGTERM while a stack runs (mqttlb.stack.ephemeral)
        log.error("interrupted; the running stack was stopped; finished runs are in %s", out / "runs")
        return EXIT_INTERRUPTED
    except (RuntimeError, OSError, ValueError) as exc:
        log.error("scenario %s failed: %s", args.scenario, exc)
        return EXIT_FAILED
    finally:
        signal.signal(signal.SIGTERM, previous)
    log.info("report written to %s", report)
    return 0
