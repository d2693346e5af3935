"""Benchmark the pure weighted-CPU policy; prints figures (no asserts).

    python bench/bench_policy.py [--rounds N]

1. ``policy.decide`` per call for 3, 30 and 300 nodes.
2. Steps to converge from neutral for a static 3-node input (default params).
"""

from __future__ import annotations

import argparse
import random
import time

from mqttlb.params import load_params, step_interval_seconds
from mqttlb.webhook.policy import NodeSample, decide

PARAMS = load_params()
P = PARAMS.policy
STEP = step_interval_seconds(PARAMS, 5.0)  # the shipped 5 s scrape interval


def bench_decide(nodes: int, rounds: int) -> float:
    rng = random.Random(nodes)
    names = [f"node{i}" for i in range(nodes)]
    samples = {n: NodeSample(rng.random(), rng.randint(0, 1000), 1.0) for n in names}
    weights = dict.fromkeys(names, P.neutral_weight)
    started = time.perf_counter()
    for i in range(rounds):
        weights = decide(names, samples, weights, {}, P, i * 100.0, None, cooldown_seconds=STEP).weights
    return (time.perf_counter() - started) / rounds


def steps_to_converge() -> int:
    names = ["node1", "node2", "node3"]
    samples = {
        "node1": NodeSample(0.9, 600, 1),
        "node2": NodeSample(0.3, 200, 1),
        "node3": NodeSample(0.2, 200, 1),
    }
    weights = dict.fromkeys(names, P.neutral_weight)
    smoothed: dict[str, float] = {}
    for step in range(1, 200):
        d = decide(names, samples, weights, smoothed, P, step * (STEP + 1), None, cooldown_seconds=STEP)
        if not d.changed:
            return step - 1
        weights, smoothed = d.weights, d.smoothed_cpu
    return -1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=200, help="iterations per measurement (default 200)")
    args = parser.parse_args(argv)
    for nodes in (3, 30, 300):
        print(f"policy.decide, {nodes:>3} nodes: {bench_decide(nodes, args.rounds) * 1e6:8.1f} us/call")
    print(f"steps to converge (0.9/0.3/0.2 CPU, default params): {steps_to_converge()}")
    print("(the live request path, Prometheus to Envoy, is measured by bench/bench_decision.py)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
