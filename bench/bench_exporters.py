"""Scrape-time benchmark of both exporters; prints median and p95 (targets: Envoy 1,000 endpoints
< 100 ms, broker exporter 50 nodes < 20 ms).

    python bench/bench_exporters.py [--rounds 200]

Envoy: the recorded-shape synthetic fixture tests/fixtures/envoy/clusters_1000.json, measured
(a) in process: parse + collect + encode (prometheus-client's exposition: text 0.0.4, and OpenMetrics
gzip-compressed as Prometheus asks for it), and (b) end to end: the real envoy-exporter CLI in its own
process, a local stub serving the fixture as the admin API, its /metrics scraped over HTTP with
Prometheus's Accept and Accept-Encoding headers.  The exporter exports only what Envoy does not
(weight, detailed health, cap, overload; issue 17); docs/exporters.md has the figures before and after.
"cpu" is this process's CPU time (for (b) mostly the HTTP client's, not the exporter's).
Broker: 50 in-memory node adapters fed with full samples (inline path, as Mosquitto), and the same
50 marked blocking (worker-pool path, as HiveMQ without the network).
"""

from __future__ import annotations

import argparse
import functools
import http.server
import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import requests
from prometheus_client import CollectorRegistry

from mqttlb.exporters.broker_collector import BrokerCollector, NodeEntry
from mqttlb.exporters.envoy_collector import EnvoyCollector
from mqttlb.exporters.exposition import render
from mqttlb.exporters.node_adapter import BrokerSample
from mqttlb.procgroup import stop_group
from mqttlb.stack import builders
from mqttlb.stack.ephemeral import free_port

FIXTURES = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "envoy"
# What Prometheus 2.x and 3.x send when they scrape (scrape.acceptHeader, with OpenMetrics enabled).
PROMETHEUS_ACCEPT = (
    "application/openmetrics-text;version=1.0.0;q=0.5,application/openmetrics-text;version=0.0.1;q=0.4,"
    "text/plain;version=0.0.4;q=0.3,*/*;q=0.2"
)
PROMETHEUS_HEADERS = {"Accept": PROMETHEUS_ACCEPT, "Accept-Encoding": "gzip"}


class MemoryAdapter:
    kind = "bench"

    def __init__(self, name: str, sample: BrokerSample, blocking: bool) -> None:
        self.name, self.address, self.sample, self.blocking = name, f"10.0.0.1:{1883}", sample, blocking

    def start(self) -> None:
        pass

    def close(self) -> None:
        pass

    def snapshot(self, timeout: float) -> BrokerSample:
        return self.sample


def sample_for(i: int) -> BrokerSample:
    return BrokerSample(
        up=True,
        clients_connected=100 + i,
        connects=1000 + i,
        disconnects=900 + i,
        messages_received=1e6 + i,
        messages_sent=2e6 + i,
        publish_received=5e5 + i,
        publish_sent=9e5 + i,
        publish_dropped=i,
        bytes_received=1e9 + i,
        bytes_sent=2e9 + i,
        subscriptions=300 + i,
        retained=40 + i,
        queued=i,
        cpu_seconds=1000.5 + i,
        resident_memory_bytes=5e8 + i,
        overload_level=0,
        sample_age_seconds=0.4,
    )


def measure(fn: Callable[[], object], rounds: int, warmup: int = 5) -> dict[str, float]:
    for _ in range(warmup):
        fn()
    wall, cpu = [], []
    size = 0
    for _ in range(rounds):
        start, start_cpu = time.perf_counter(), time.process_time()
        out = fn()
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
        size = len(out) if isinstance(out, (bytes, str)) else size
    wall.sort()
    return {
        "median": statistics.median(wall) * 1000,
        "p95": wall[int(0.95 * (len(wall) - 1))] * 1000,
        "cpu": statistics.median(cpu) * 1000,
        "size": size,
    }


def report(label: str, result: dict[str, float], target_ms: float) -> None:
    verdict = "ok" if result["p95"] < target_ms else "OVER TARGET"
    print(
        f"{label:<50} median {result['median']:7.2f} ms  p95 {result['p95']:7.2f} ms  "
        f"cpu(median) {result['cpu']:7.2f} ms  {result['size'] / 1024:5.0f} KiB  "
        f"target <{target_ms:g} ms: {verdict}"
    )


def calibration() -> float:
    """ms of CPU for 1M iterations of an empty Python loop (about 15-25 ms on a current desktop
    core), to compare figures taken on machines of different speed."""
    runs = []
    for _ in range(5):
        start = time.process_time()
        for _ in range(1_000_000):
            pass
        runs.append((time.process_time() - start) * 1000)
    return statistics.median(runs)


def render_body(registry: CollectorRegistry) -> bytes:
    """/metrics as a scraper that sends no Accept header gets it (text 0.0.4, uncompressed)."""
    return render(registry).body


def registry_of(collector: object) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(collector)  # type: ignore[arg-type]
    return registry


def serve_fixture(clusters: str, stats: str) -> http.server.ThreadingHTTPServer:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            body = (clusters if self.path.startswith("/clusters") else stats).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def wait_ready(session: requests.Session, url: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if session.get(url, timeout=5).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.2)
    raise SystemExit(f"exporter at {url} did not answer within {timeout}s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=200, help="timed scrapes per case (default: 200)")
    args = parser.parse_args(argv)
    if not 1 <= args.rounds <= 100_000:
        parser.error("--rounds must be 1..100000")

    load = os.getloadavg()
    print(
        f"machine: {os.cpu_count()} cpus, load average {load[0]:.2f}; "
        f"calibration: empty loop 1M iterations = {calibration():.0f} ms cpu"
    )
    clusters = (FIXTURES / "clusters_1000.json").read_text()
    stats = (FIXTURES / "stats.json").read_text()
    envoy = EnvoyCollector(
        "http://bench:9901", 5, fetch=lambda url, t: clusters if "/clusters" in url else stats
    )
    envoy_registry = registry_of(envoy)
    report(
        "envoy exporter, 1,000 endpoints, in process, text",
        measure(lambda: render(envoy_registry).body, args.rounds),
        100,
    )
    report(
        "envoy exporter, 1,000 endpoints, in process, OpenMetrics+gzip",
        measure(lambda: render(envoy_registry, PROMETHEUS_ACCEPT, "gzip").body, args.rounds),
        100,
    )

    admin = serve_fixture(clusters, stats)
    port = free_port()
    command = builders.envoy_exporter_command(f"127.0.0.1:{port}", f"http://127.0.0.1:{admin.server_port}", 5)
    exporter = subprocess.Popen(
        [sys.executable, "-m", "mqttlb.cli", *command, "--log-level", "warning"], start_new_session=True
    )
    url = f"http://127.0.0.1:{port}/metrics"
    try:
        with requests.Session() as session:
            wait_ready(session, url)
            report(
                "envoy exporter CLI (own process), 1,000 endpoints, HTTP",
                measure(lambda: session.get(url, headers=PROMETHEUS_HEADERS, timeout=10).content, args.rounds),
                100,
            )
    finally:
        stop_group(exporter, grace=10)
        admin.shutdown()
        admin.server_close()
        envoy.close()

    for blocking, label in ((False, "inline adapters"), (True, "worker-pool adapters")):
        nodes = [NodeEntry(MemoryAdapter(f"node{i}", sample_for(i), blocking), 2.0) for i in range(1, 51)]
        collector = BrokerCollector("bench", nodes, timeout=2)
        registry = registry_of(collector)
        report(
            f"broker exporter, 50 nodes, {label}",
            measure(functools.partial(render_body, registry), args.rounds),
            20,
        )
        collector.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
