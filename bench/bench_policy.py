"""Benchmark the pure policy and the in-process decision path; prints figures (no asserts).

    python bench/bench_policy.py [--rounds N]

1. ``policy.decide`` per call for 3, 30 and 300 nodes.
2. Steps to converge from neutral for a static 3-node input (default params).
3. ``POST /alerts`` (action=rebalance) through the Flask test client against a real HTTP server
   that answers Prometheus' query API from a fixed vector (no Envoy: read-back fails fast and is
   counted), so the figure is: validate + dedup + 3 HTTP queries + decide + EDS publish + persist.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import statistics
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

from mqttlb import series
from mqttlb.params import load_params
from webhook.app import create_app
from webhook.config import WebhookConfig
from webhook.policy import NodeSample, decide
from webhook.rebalancer import Rebalancer

P = load_params().policy


def bench_decide(nodes: int, rounds: int) -> float:
    rng = random.Random(nodes)
    names = [f"node{i}" for i in range(nodes)]
    samples = {n: NodeSample(rng.random(), rng.randint(0, 1000), 1.0) for n in names}
    weights = dict.fromkeys(names, P.neutral_weight)
    started = time.perf_counter()
    for i in range(rounds):
        weights = decide(names, samples, weights, {}, P, i * 100.0, None).weights
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
        d = decide(names, samples, weights, smoothed, P, step * (P.cooldown_seconds + 1), None)
        if not d.changed:
            return step - 1
        weights, smoothed = d.weights, d.smoothed_cpu
    return -1


def fake_prometheus(values: dict[str, float]) -> ThreadingHTTPServer:

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            query = parse_qs(urlparse(self.path).query)["query"][0]
            now = time.time()
            if query.startswith("timestamp("):
                result = [
                    {"metric": {"cluster": "local", "node": n}, "value": [now, str(now - 1)]} for n in values
                ]
            else:
                metric = series.NODE_CPU if query.startswith(series.NODE_CPU) else series.NODE_CONNECTIONS
                result = [
                    {"metric": {"__name__": metric, "cluster": "local", "node": n}, "value": [now, str(v)]}
                    for n, v in values.items()
                ]
            body = json.dumps(
                {"status": "success", "data": {"resultType": "vector", "result": result}}
            ).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def bench_request_path(rounds: int) -> list[float]:
    values = {"node1": 0.9, "node2": 0.3, "node3": 0.2}
    server = fake_prometheus(values)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        token = "bench-token-0123456789"
        (root / "token").write_text(token)
        config = WebhookConfig.model_validate(
            {
                "envoy_admin": "http://127.0.0.1:1",
                "prometheus_url": f"http://127.0.0.1:{server.server_address[1]}",
                "eds_path": str(root / "eds" / "eds.json"),
                "overload_file": str(root / "pressure"),
                "token_file": str(root / "token"),
                "state_file": str(root / "state.json"),
                "audit_log": str(root / "audit.jsonl"),
                "nodes": [
                    {"name": n, "host": "127.0.0.1", "port": 18831 + i}
                    for i, n in enumerate(["node1", "node2", "node3"])
                ],
            }
        )
        clock = [1000.0]
        rb = Rebalancer(config, clock=lambda: clock[0], verify_timeout=0.0)
        client = create_app(config, rebalancer=rb).test_client()
        timings = []
        changed = 0
        for i in range(rounds):
            clock[0] += P.cooldown_seconds + 1
            values["node1"], values["node3"] = (
                values["node3"],
                values["node1"],
            )  # every decision moves weights
            payload = {
                "version": "4",
                "groupKey": "g",
                "status": "firing",
                "alerts": [
                    {
                        "status": "firing",
                        "labels": {"alertname": "B", "action": "rebalance"},
                        "startsAt": f"t{i}",
                        "fingerprint": f"f{i}",
                    }
                ],
            }
            started = time.perf_counter()
            response = client.post("/alerts", json=payload, headers={"Authorization": f"Bearer {token}"})
            timings.append(time.perf_counter() - started)
            assert response.status_code == 200, response.json
            changed += (response.json or {}).get("result") == "rebalance"
    server.shutdown()
    print(f"({changed} of {rounds} requests changed weights)")
    return timings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=200, help="iterations per measurement (default 200)")
    args = parser.parse_args(argv)
    logging.disable(logging.WARNING)  # the read-back failures (no Envoy here) are expected
    for nodes in (3, 30, 300):
        print(f"policy.decide, {nodes:>3} nodes: {bench_decide(nodes, args.rounds) * 1e6:8.1f} us/call")
    print(f"steps to converge (0.9/0.3/0.2 CPU, default params): {steps_to_converge()}")
    timings = sorted(bench_request_path(min(args.rounds, 100)))
    print(
        f"POST /alerts rebalance (no Envoy read-back): median {statistics.median(timings) * 1e3:.1f} ms, "
        f"p95 {timings[int(len(timings) * 0.95) - 1] * 1e3:.1f} ms, n={len(timings)}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
