"""``mqttlb experiment --scenario NAME``: run a named scenario, write its report directory.

Scenarios: ``restart-pileup`` (a node stops and returns under long-lived clients: evict on vs off) and
``heterogeneous`` (heavy publishers among light ones: least request vs weighted CPU with evict, per
seed).  The directory gets ``report.md``, ``summary.json``, PNG charts, and per seed and arm the load
report (``loadgen-*.json``), the samples (``samples-*.csv``), Envoy's per-node ``cx_total`` each second
(``connects-*.csv``) and the webhook's evict audit entries (``evictions-*.jsonl``).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import logging
import signal
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mqttlb.atomic import atomic_write_text
from mqttlb.commandline import parse_args, refuse
from mqttlb.loadgen.balance import cpu_msd_series
from mqttlb.loadgen.limits import raise_nofile_limit
from mqttlb.loadgen.scenarios import analysis, heterogeneous, restart_pileup
from mqttlb.loadgen.scenarios.arm import ArmRun, base_config
from mqttlb.logs import add_log_flags

if TYPE_CHECKING:
    from mqttlb.stack.config import StackConfig

log = logging.getLogger("mqttlb.loadgen.scenarios")

SCENARIOS = {
    restart_pileup.NAME: "a node stops for --down s and returns under long-lived clients: evict on vs off",
    heterogeneous.NAME: "heavy publishers scattered among light ones, no churn: least request vs weighted CPU "
    "with evict, per seed",
}
# Cores credited to a node by default.  Heterogeneous: ~17 us of broker CPU per message here, so its
# 1,960 msg/s make a mean of ~0.43 at 0.025 cores and no node passes cpu_high (0.75) nor the imbalance
# threshold (0.04) on some placements, and nothing triggers; at 0.015 the mean is ~0.72 and a node with two
# heavy publishers runs at ~0.89.
NODE_CPU_CORES = {restart_pileup.NAME: 0.025, heterogeneous.NAME: 0.015}
EXIT_FAILED = 1
EXIT_INTERRUPTED = 130


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mqttlb experiment --scenario",
        description="Run a named scenario on fresh local stacks (one per arm and seed) and write a report "
        "(Markdown, JSON, CSV, PNG). Scenarios: "
        + "; ".join(f"{name}: {text}" for name, text in SCENARIOS.items()),
    )
    p.add_argument("--scenario", required=True, choices=sorted(SCENARIOS), help="the scenario to run")
    p.add_argument("--out", type=Path, help="report directory (default ./experiment-<scenario>)")
    p.add_argument("--seeds", default=None, help="comma-separated workload seeds (default: 1 for restart-pileup, "
                   "1,2,3 for heterogeneous)")
    p.add_argument("--nodes", type=int, default=3, help="Mosquitto nodes (default 3)")
    p.add_argument("--node-cpu-cores", type=float, default=None,
                   help="CPU capacity credited to each node; small so that a modest load shows (default: "
                   f"{NODE_CPU_CORES[restart_pileup.NAME]:g} for restart-pileup, as in issue 14; "
                   f"{NODE_CPU_CORES[heterogeneous.NAME]:g} for heterogeneous, so that its hottest node passes "
                   "cpu_high)")
    p.add_argument("--short", action="store_true",
                   help="smoke run: short phases and a small load; proves the pipeline, not the targets")
    g = p.add_argument_group("restart-pileup")
    g.add_argument("--publishers", type=int, default=240, help="long-lived QoS 0 publishers (default 240)")
    g.add_argument("--publisher-rate", type=float, default=6.0, help="msg/s of each publisher (default 6)")
    g.add_argument("--sensors", type=int, default=60, help="long-lived QoS 1 delivery-checked sensors (default 60)")
    g.add_argument("--sensor-rate", type=float, default=1.0, help="msg/s of each sensor (default 1)")
    g.add_argument("--warmup", type=float, default=60.0, help="seconds of load before the node stops (default 60)")
    g.add_argument("--down", type=float, default=50.0, help="seconds the node stays stopped (default 50)")
    g.add_argument("--after", type=float, default=240.0, help="seconds of load after its return (default 240)")
    h = p.add_argument_group("heterogeneous")
    h.add_argument("--heavies", type=int, default=4, help="heavy publishers (default 4)")
    h.add_argument("--heavy-rate", type=float, default=250.0, help="msg/s of each heavy publisher (default 250)")
    h.add_argument("--lights", type=int, default=240, help="light publishers (default 240)")
    h.add_argument("--light-rate", type=float, default=4.0, help="msg/s of each light publisher (default 4)")
    h.add_argument("--ramp", type=float, default=10.0, help="seconds over which everyone connects (default 10)")
    h.add_argument("--duration", type=float, default=360.0, help="seconds of load per arm (default 360)")
    h.add_argument("--steady", type=float, default=90.0,
                   help="the last seconds of each arm averaged as the steady part (default 90)")
    p.add_argument("--keep-state", action="store_true", help="keep each stack's state dir under --out/state")
    add_log_flags(p)
    return p


SHORT = {
    "publishers": 40, "sensors": 10, "warmup": 10.0, "down": 6.0, "after": 12.0,
    "heavies": 2, "heavy_rate": 100.0, "lights": 30, "ramp": 2.0, "duration": 15.0, "steady": 5.0,
}


def parse_seeds(text: str) -> list[int]:
    """``1,2,3`` -> [1, 2, 3]; ValueError for an empty list, a non-integer or a repeat."""
    try:
        seeds = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ValueError(f"--seeds must be comma-separated integers, got {text!r}") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"--seeds must name distinct seeds, got {text!r}")
    return seeds


def _check(args: argparse.Namespace) -> list[int]:
    """Apply ``--short`` and check the flags; the seeds.  ValueError naming the flag."""
    if args.short:
        for key, value in SHORT.items():
            setattr(args, key, value)
    seeds = parse_seeds(args.seeds or ("1,2,3" if args.scenario == heterogeneous.NAME else "1"))
    if args.node_cpu_cores is None:
        args.node_cpu_cores = NODE_CPU_CORES[args.scenario]
    if not 2 <= args.nodes <= 16 or not 0 < args.node_cpu_cores <= 64:
        raise ValueError("--nodes must be 2..16 and --node-cpu-cores in (0, 64]")
    if not 1 <= args.publishers <= 20_000 or not 0 < args.publisher_rate <= 10_000:
        raise ValueError("--publishers must be 1..20000 and --publisher-rate in (0, 10000]")
    if not 0 <= args.sensors <= 20_000 or not 0 < args.sensor_rate <= 1000:
        raise ValueError("--sensors must be 0..20000 and --sensor-rate in (0, 1000]")
    restart_pileup.timeline(args.warmup, args.down, args.after)
    if not 1 <= args.heavies <= 100 or not 1 <= args.lights <= 20_000:
        raise ValueError("--heavies must be 1..100 and --lights 1..20000")
    if not 0 < args.heavy_rate <= 10_000 or not 0 < args.light_rate <= 1000 or not 0 <= args.ramp <= 120:
        raise ValueError("--heavy-rate must be in (0, 10000], --light-rate in (0, 1000], --ramp 0..120")
    if not 10 <= args.duration <= 3600 or not 1 <= args.steady < args.duration:
        raise ValueError("--duration must be 10..3600 s and --steady 1 s..--duration")
    if args.out is None:
        args.out = Path(f"experiment-{args.scenario}")
    return seeds


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


def _write_run(out: Path, seed: int, run: ArmRun) -> None:
    slug = f"seed{seed}-{run.setup.name.replace(' ', '-').replace('+', '-')}"
    run.load.write_json(out / f"loadgen-{slug}.json")
    atomic_write_text(out / f"samples-{slug}.csv", _samples_csv(run))
    connects = io.StringIO()
    writer = csv.writer(connects)
    writer.writerow(["t", *(f"cx_total_{n}" for n in run.nodes)])
    for c in run.connects:
        writer.writerow([c.t, *(c.cx_total.get(n, 0) for n in run.nodes)])
    atomic_write_text(out / f"connects-{slug}.csv", connects.getvalue())
    evicts = [json.dumps(e, sort_keys=True) for e in run.audit if e.get("kind") == "evict"]
    atomic_write_text(out / f"evictions-{slug}.jsonl", "".join(line + "\n" for line in evicts))


def _settings(args: argparse.Namespace, run: ArmRun, seeds: Sequence[int], took: float) -> dict[str, str]:
    ev, params = run.stack_params["eviction"], run.stack_params
    st = run.stack_settings
    return {
        "nodes": f"{args.nodes} Mosquitto with the mqttlb plugin, {args.node_cpu_cores:g} CPU cores credited to each",
        "stack": f"a fresh stack per arm and seed on free loopback ports and a throwaway state dir; "
        f"the stack file's settings (lb_policy {st['lb_policy']} unless the arm sets it, scrape "
        f"{st['scrape_interval']}, Envoy slow start {st['slow_start_window']}) and parameters (rate_window "
        f"{params['rate_window']}, imbalance threshold {params['imbalance_max_squared_deviation']})",
        "evict lever": f"after {ev['after']}, min_improvement {ev['min_improvement']}, spread_target "
        f"{ev['spread_target']}, max_per_second {ev['max_per_second']}, max_fraction {ev['max_fraction']}, "
        f"cooldown {ev['cooldown_seconds'] or 'the step interval'}",
        "sampling": "every 1 s; CPU = broker process CPU (psutil) over the rate window / credited cores; "
        "connections, weights and cx_total from Envoy admin /clusters",
        "seeds": ", ".join(str(s) for s in seeds),
        "wall time": f"{took:.0f} s in all",
    }


def _run_restart(args: argparse.Namespace, seeds: list[int], state_root: Path, base: StackConfig) -> None:
    from mqttlb.loadgen import plots as node_plots
    from mqttlb.loadgen.scenarios import plots, report

    started = time.monotonic()
    summaries: dict[int, list[restart_pileup.RestartSummary]] = {}
    first: list[ArmRun] = []
    for seed in seeds:
        runs, arms = restart_pileup.run_seed(args, seed, state_root, base)
        for run in runs:
            _write_run(args.out, seed, run)
        summaries[seed] = arms
        first = first or runs
    out = args.out
    by_arm = {run.setup.name: run.samples for run in first}
    nodes = first[0].nodes
    on = first[0]
    returned = summaries[seeds[0]][0].returned_at
    stop_at = next((t for t, action, _ in on.events if action == "stop"), 0.0)
    batches = analysis.batches_from_audit(on.audit, on.wall_start)
    max_rate = float(on.stack_params["eviction"]["max_per_second"])
    charts = {
        "CPU max squared deviation, both arms": plots.msd_over_time(
            {run.setup.name: ([s.t for s in run.samples], cpu_msd_series(run.samples, nodes)) for run in first},
            out / "msd.png",
            threshold=restart_pileup.THRESHOLD,
            marks=[(stop_at, " node stopped"), (returned, " node back")],
            target_window=(returned, returned + restart_pileup.WITHIN_S),
        ).name,
        "CPU per node": node_plots.cpu_per_node(by_arm, nodes, out / "cpu_per_node.png",
                                                float(on.stack_params["cpu_high"])).name,
        "Connections per node (staircase)": node_plots.connections_per_node(
            by_arm, nodes, out / "connections.png"
        ).name,
        "Envoy weights": node_plots.weights_per_node(by_arm, nodes, out / "weights.png").name,
        "Evictions and connects per second (evict on)": plots.evictions_and_connects(
            analysis.connects_per_second(on.connects), batches, nodes, out / "evictions.png", max_per_second=max_rate
        ).name,
    }
    settings = _settings(args, on, seeds, time.monotonic() - started)
    line = restart_pileup.timeline(args.warmup, args.down, args.after)
    settings["timeline"] = (f"node{args.nodes} stopped at t={line.stop_at:g} s for {args.down:g} s; load ends "
                            f"{args.after:g} s after its return")
    workload = on.load.workload
    atomic_write_text(out / "report.md", report.restart_report(summaries, workload, settings, charts))
    summary = {
        "scenario": restart_pileup.NAME,
        "settings": settings,
        "target_met": {str(seed): restart_pileup.target_met(arms[0], arms[1]) for seed, arms in summaries.items()},
        "seeds": {str(seed): [a.as_dict() for a in arms] for seed, arms in summaries.items()},
    }
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2, sort_keys=True, default=str) + "\n")


def _run_heterogeneous(args: argparse.Namespace, seeds: list[int], state_root: Path, base: StackConfig) -> None:
    from mqttlb.loadgen import plots as node_plots
    from mqttlb.loadgen.scenarios import plots, report

    started = time.monotonic()
    summaries: list[heterogeneous.HeterogeneousSummary] = []
    workloads: dict[int, str] = {}
    series: dict[str, tuple[list[float], list[float]]] = {}
    first: list[ArmRun] = []
    for seed in seeds:
        runs, arms = heterogeneous.run_seed(args, seed, state_root, base)
        for run in runs:
            _write_run(args.out, seed, run)
            series[f"{run.setup.name}, seed {seed}"] = (
                [s.t for s in run.samples], cpu_msd_series(run.samples, run.nodes)
            )
        summaries += arms
        workloads[seed] = runs[0].load.workload
        first = first or runs
    out = args.out
    verdict = heterogeneous.verdict(summaries)
    nodes = first[0].nodes
    by_arm = {f"{run.setup.name} (seed {seeds[0]})": run.samples for run in first}
    acting = first[-1]
    charts = {
        "CPU max squared deviation, every seed and arm": plots.msd_over_time(
            series,
            out / "msd.png",
            threshold=float(acting.stack_params["imbalance_max_squared_deviation"]),
            threshold_label="imbalance threshold",
            marks=[(first[0].samples[-1].t - args.steady, " steady part")],
        ).name,
        f"CPU per node (seed {seeds[0]})": node_plots.cpu_per_node(
            by_arm, nodes, out / "cpu_per_node.png", float(acting.stack_params["cpu_high"])).name,
        f"Connections per node (seed {seeds[0]})": node_plots.connections_per_node(
            by_arm, nodes, out / "connections.png").name,
        f"Envoy weights (seed {seeds[0]})": node_plots.weights_per_node(by_arm, nodes, out / "weights.png").name,
        f"Evictions and connects per second (weighted-cpu+evict, seed {seeds[0]})": plots.evictions_and_connects(
            analysis.connects_per_second(acting.connects),
            analysis.batches_from_audit(acting.audit, acting.wall_start),
            nodes,
            out / "evictions.png",
            max_per_second=float(acting.stack_params["eviction"]["max_per_second"]),
        ).name,
    }
    settings = _settings(args, acting, seeds, time.monotonic() - started)
    settings["load per arm"] = f"{args.duration:g} s; steady part = the last {args.steady:g} s"
    atomic_write_text(out / "report.md", report.heterogeneous_report(summaries, verdict, workloads, settings, charts))
    summary = {
        "scenario": heterogeneous.NAME,
        "settings": settings,
        "verdict": {**verdict.__dict__, "ratios": {str(k): v for k, v in verdict.ratios.items()}},
        "arms": [s.as_dict() for s in summaries],
    }
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2, sort_keys=True, default=str) + "\n")


def _interrupt(_signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = parse_args(build_parser(), argv)
    try:
        seeds = _check(args)
    except ValueError as exc:
        return refuse(exc, "mqttlb experiment")
    raise_nofile_limit(2000)
    args.out.mkdir(parents=True, exist_ok=True)
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        base = base_config(args.nodes, args.node_cpu_cores)  # one read of the stack file for every arm
        with tempfile.TemporaryDirectory(prefix="mqttlb-scenario-") as tmp:
            state_root = args.out / "state" if args.keep_state else Path(tmp)
            if args.scenario == restart_pileup.NAME:
                _run_restart(args, seeds, state_root, base)
            else:
                _run_heterogeneous(args, seeds, state_root, base)
    except (KeyboardInterrupt, SystemExit):  # Ctrl-C, or SIGTERM while a stack runs (mqttlb.stack.ephemeral)
        log.error("interrupted; the running stack was stopped, no report written")
        return EXIT_INTERRUPTED
    except (RuntimeError, OSError, ValueError) as exc:
        log.error("scenario %s failed: %s", args.scenario, exc)
        return EXIT_FAILED
    finally:
        signal.signal(signal.SIGTERM, previous)
    log.info("report written to %s", args.out / "report.md")
    return 0
