"""How many concurrent MQTT connections and connects/s the load generator sustains on this machine.

Through Envoy (the real stack on free ports, webhook in dry-run) by default, or straight at one
Mosquitto with ``--direct``.  Phase 1 ramps ``--clients`` idle clients at ``--connect-rate`` and
holds them (through Envoy the ramp is complete at Envoy's connection cap, the stack's
``envoy_max_connections``, if that is lower); phase 2 churns ``--churn-clients`` clients with 1 s
sessions to measure sustained connects/s.  Prints figures; asserts nothing.  Run it once, briefly:
the machine is shared.

    python bench/bench_loadgen.py                 # targets: 10,000 concurrent, 2,000 connects/s
    python bench/bench_loadgen.py --clients 2000 --churn-clients 500 --direct
"""

from __future__ import annotations

import contextlib
import json
import logging
import resource
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
from benchargs import bench_parser

from mqttlb.loadgen.limits import raise_nofile_limit
from mqttlb.loadgen.report import Report
from mqttlb.loadgen.shard import run_sharded
from mqttlb.loadgen.workload import build_workload, parse_profile


@contextlib.contextmanager
def target(direct: bool, state_root: Path) -> Iterator[tuple[int, list[int], int | None]]:
    """Yield the port to load, the PIDs whose CPU to report (brokers and Envoy) and Envoy's cap."""
    if direct:
        from mqttlb.loadgen.standalone import standalone_mosquitto

        with standalone_mosquitto() as broker:
            yield broker.port, [broker.pid], None
        return
    from mqttlb.stack.builders import envoy_connection_limit
    from mqttlb.stack.ephemeral import running_stack, stack_config

    cfg = stack_config(state_root / "stack", nodes=3, dry_run=True)
    with running_stack(cfg, out=lambda line: print(f"[stack] {line}", flush=True)) as stack:
        pids = [
            int(info["pid"])
            for info in stack._process_infos()
            if info["name"].startswith(("mosquitto", "envoy"))
        ]
        yield cfg.ports.envoy_listener, pids, envoy_connection_limit(stack.topology)


def own_cpu(times: Any) -> float:
    """This process and its joined children (the generator workers)."""
    return float(times.user + times.system + times.children_user + times.children_system)


def cpu_seconds(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            times = psutil.Process(pid).cpu_times()
            total += times.user + times.system
    return total


def ramp_and_hold(
    port: int, clients: int, rate: float, hold: float, workers: int, max_ramp: float, reachable: int
) -> tuple[Report, float | None]:
    """Ramp until ``reachable`` clients are connected (at most ``max_ramp`` s), hold ``hold`` s, stop."""
    workload = build_workload(
        [parse_profile(f"idle:{clients}:rate=0")],
        port=port,
        duration=max_ramp + hold,
        connect_rate=rate,
        progress_interval=1.0,
        client_prefix="bench",
    )
    reached: list[float] = []
    stop = threading.Event()

    def progress(snap: dict[str, Any]) -> None:
        print(
            f"  t={snap['t']:5.1f}s connected={snap['connected']} connects={snap['connect_rate']:.0f}/s "
            f"failures={snap['connect_failures']}",
            flush=True,
        )
        if not reached and snap["connected"] >= reachable:
            reached.append(snap["t"])
            threading.Timer(hold, stop.set).start()

    report = run_sharded(workload, workers, progress=progress, stop=stop)
    return report, reached[0] if reached else None


def churn(port: int, clients: int, duration: float, workers: int) -> Report:
    workload = build_workload(
        [parse_profile(f"churn:{clients}:rate=0,session=fixed:1,pause=0")],
        port=port,
        duration=duration,
        connect_rate=clients * 3,
        progress_interval=2,
        client_prefix="benchchurn",
        drain=0,
    )

    def progress(snap: dict[str, Any]) -> None:
        print(
            f"  t={snap['t']:5.1f}s connected={snap['connected']} connects={snap['connect_rate']:.0f}/s "
            f"failures={snap['connect_failures']}",
            flush=True,
        )

    return run_sharded(workload, workers, progress=progress)


def main(argv: list[str] | None = None) -> int:
    p = bench_parser(__doc__)
    p.add_argument("--clients", type=int, default=10_000, help="concurrent idle clients to ramp and hold")
    p.add_argument("--connect-rate", type=float, default=2_500, help="connects/s asked for during the ramp")
    p.add_argument("--hold", type=float, default=10, help="seconds to hold the clients after the ramp")
    p.add_argument("--churn-clients", type=int, default=2_000, help="clients reconnecting every second")
    p.add_argument("--churn-duration", type=float, default=10, help="seconds of the churn phase")
    p.add_argument(
        "--direct", action="store_true", help="one standalone Mosquitto instead of Envoy + 3 nodes"
    )
    p.add_argument("--max-ramp", type=float, default=60, help="give up the ramp after this many seconds")
    p.add_argument("--workers", type=int, default=2, help="generator processes (default 2)")
    p.add_argument("--json-out", type=Path, help="also write the figures as JSON")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    soft = raise_nofile_limit(args.clients + 100)
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    print(f"open files: soft {soft}, hard {hard} (Envoy needs 2 per proxied connection)")
    figures: dict[str, Any] = {"target": "mosquitto" if args.direct else "envoy+3 mosquitto", "nofile": soft}
    me = psutil.Process()
    figures["workers"] = args.workers
    with (
        tempfile.TemporaryDirectory(prefix="mqttlb-bench-") as tmp,
        target(args.direct, Path(tmp)) as (port, pids, cap),
    ):
        reachable = args.clients if cap is None else min(args.clients, cap)
        if cap is not None:
            figures["envoy_connection_cap"] = cap
            print(f"Envoy connection cap {cap} (stack envoy_max_connections; beyond it clients are refused)")
        print(f"phase 1: ramp {args.clients} clients at {args.connect_rate:g}/s, hold {args.hold:g} s")
        cpu0, gen0, t0 = cpu_seconds(pids), me.cpu_times(), time.monotonic()
        report, ramp_s = ramp_and_hold(
            port, args.clients, args.connect_rate, args.hold, args.workers, args.max_ramp, reachable
        )
        wall = time.monotonic() - t0
        gen1 = me.cpu_times()
        figures["ramp"] = {
            "clients": args.clients,
            "peak_concurrent": report.peak_connected,
            "connects_ok": report.connects_ok,
            "connect_failures": report.connect_failures,
            "reachable": reachable,
            "seconds_to_reachable": ramp_s,
            "ramp_connects_per_s": round(reachable / ramp_s, 1) if ramp_s else None,
            "connects_by_second": report.connects_by_second,
            "best_second_connects": max(report.connects_by_second, default=0),
            "generator_cpu_s": round(own_cpu(gen1) - own_cpu(gen0), 2),
            "brokers_envoy_cpu_s": round(cpu_seconds(pids) - cpu0, 2),
            "wall_s": round(wall, 1),
        }
        print(f"phase 2: churn {args.churn_clients} clients with 1 s sessions for {args.churn_duration:g} s")
        cpu0, gen0 = cpu_seconds(pids), me.cpu_times()
        creport = churn(port, args.churn_clients, args.churn_duration, args.workers)
        gen1 = me.cpu_times()
        figures["churn"] = {
            "clients": args.churn_clients,
            "connects_ok": creport.connects_ok,
            "connects_per_s": round(creport.connect_rate, 1),
            "connect_failures": creport.connect_failures,
            "unexpected_disconnects": creport.unexpected_disconnects,
            "generator_cpu_s": round(own_cpu(gen1) - own_cpu(gen0), 2),
            "brokers_envoy_cpu_s": round(cpu_seconds(pids) - cpu0, 2),
            "elapsed_s": creport.elapsed_s,
        }
    print(json.dumps(figures, indent=2))
    if args.json_out:
        args.json_out.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
