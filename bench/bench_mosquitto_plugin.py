"""What the eviction plugin costs: messages/s through one Mosquitto node with and without it, in one run.

    python bench/bench_mosquitto_plugin.py [--rounds 5] [--publishers 4] [--messages 25000] [--payload 64]

Two throw-away brokers on loopback, identical but for the plugin's lines (``config_lines()``, the
stack's own).  Each round runs the same load through each node in turn (alternating which goes first):
``--publishers`` ``mosquitto_pub -l -q 1`` processes each send ``--messages`` lines of ``--payload``
bytes, and one ``mosquitto_sub -q 1`` receives them all.  A round's figure is messages received per
second (first publisher started -> last message received) and the broker's CPU time per message
(psutil, 10 ms ticks).  Prints every round, the medians, and the median of the rounds' with/without
ratios (a shared machine makes single rounds noisy: compare within a round); asserts nothing.  Every
process is bounded by ``--timeout`` seconds.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil

from mqttlb.brokers.mosquitto_plugin import config_lines
from mqttlb.loadgen.standalone import LOOPBACK, StandaloneBroker, standalone_mosquitto

COMMON = ["max_queued_messages 0", "max_inflight_messages 100"]  # no drops at the subscriber


@dataclass(frozen=True)
class Figure:
    messages_per_second: float
    cpu_us_per_message: float


def run_load(broker: StandaloneBroker, lines: Path, publishers: int, messages: int, timeout: float) -> Figure:
    """One load through ``broker``; raises RuntimeError when a client fails or the subscriber misses messages."""
    total = publishers * messages
    proc = psutil.Process(broker.pid)
    port = str(broker.port)
    sub = subprocess.Popen(
        ["mosquitto_sub", "-h", LOOPBACK, "-p", port, "-q", "1", "-t", "bench/#", "-C", str(total),
         "-W", str(int(timeout))],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    time.sleep(0.5)  # subscribed before the first message
    cpu_before = sum(proc.cpu_times()[:2])
    started = time.monotonic()
    pubs = [
        subprocess.Popen(
            ["mosquitto_pub", "-h", LOOPBACK, "-p", port, "-q", "1", "-M", "100", "-i", f"bench-pub-{i}",
             "-t", f"bench/{i}", "-l"],
            stdin=lines.open("rb"), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        for i in range(publishers)
    ]
    try:
        sub_rc = sub.wait(timeout)
        elapsed = time.monotonic() - started
        cpu = sum(proc.cpu_times()[:2]) - cpu_before
        pub_rcs = [p.wait(timeout) for p in pubs]
    finally:
        for p in (sub, *pubs):
            if p.poll() is None:
                p.kill()
                p.wait()
    if sub_rc != 0 or any(pub_rcs):
        raise RuntimeError(f"load failed: subscriber exit {sub_rc}, publishers {pub_rcs}")
    return Figure(total / elapsed, cpu / total * 1e6)


@contextlib.contextmanager
def nodes() -> Iterator[dict[str, StandaloneBroker]]:
    with standalone_mosquitto(extra_config=COMMON) as plain, \
            standalone_mosquitto(extra_config=[*COMMON, *config_lines()]) as plugin:
        yield {"without plugin": plain, "with plugin": plugin}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="rounds, each through both nodes (default 5)")
    parser.add_argument("--publishers", type=int, default=4, help="publisher processes (default 4)")
    parser.add_argument("--messages", type=int, default=25_000, help="messages per publisher (default 25000)")
    parser.add_argument("--payload", type=int, default=64, help="payload bytes (default 64)")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds any one load may take (default 120)")
    args = parser.parse_args(argv)

    figures: dict[str, list[Figure]] = {"without plugin": [], "with plugin": []}
    with tempfile.TemporaryDirectory(prefix="mqttlb-bench-plugin-") as tmp, nodes() as brokers:
        lines = Path(tmp) / "lines"
        lines.write_bytes((b"m" * (args.payload - 1) + b"\n") * args.messages)
        print(f"{args.publishers} publishers x {args.messages} QoS 1 messages of {args.payload} bytes, "
              f"1 QoS 1 subscriber, per node and round")
        for rnd in range(args.rounds):
            order = list(brokers) if rnd % 2 == 0 else list(reversed(brokers))
            for name in order:
                fig = run_load(brokers[name], lines, args.publishers, args.messages, args.timeout)
                figures[name].append(fig)
                print(f"round {rnd + 1} {name:<15} {fig.messages_per_second:9,.0f} msg/s  "
                      f"broker CPU {fig.cpu_us_per_message:6.2f} us/msg")

    for name, figs in figures.items():
        rates = [f.messages_per_second for f in figs]
        print(f"median {name:<15} {statistics.median(rates):9,.0f} msg/s (range {min(rates):,.0f}-{max(rates):,.0f})"
              f"  broker CPU {statistics.median(f.cpu_us_per_message for f in figs):6.2f} us/msg")
    pairs = list(zip(figures["with plugin"], figures["without plugin"], strict=True))
    throughput = sorted(w.messages_per_second / wo.messages_per_second for w, wo in pairs)
    cpu = sorted(w.cpu_us_per_message / wo.cpu_us_per_message for w, wo in pairs)
    print(f"with/without plugin, median of the rounds' ratios: throughput x{statistics.median(throughput):.3f} "
          f"(rounds {throughput[0]:.2f}-{throughput[-1]:.2f}), broker CPU per message "
          f"x{statistics.median(cpu):.3f} (rounds {cpu[0]:.2f}-{cpu[-1]:.2f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
