"""Decision latency of the live webhook: notification -> EDS file written -> weights visible in Envoy.

    python bench/bench_decision.py [--alerts 1000] [--nodes 3]

Starts the real stack on free loopback ports (Envoy, Mosquitto, exporters, Prometheus,
Alertmanager, webhook) with the cooldown at 0, drives node1 hot with real MQTT load so the
weighted-CPU policy has something to do, then posts --alerts rebalance notifications straight to
the webhook, alternating firing and resolved so that every one moves the weights (firing: toward
the CPU target; resolved: one recover step back).  Every decision queries the live Prometheus for
all nodes.  Figures come from the webhook's own audit timings (published_after_ms,
visible_after_ms: measured from the notification's arrival) and from the client's round trip.
Prints percentiles; asserts nothing about time.  Targets: EDS written p99 < 50 ms; visible in
Envoy p99 < 1 s.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import requests

from mqttlb import contract
from mqttlb.loadgen.hot import HotNodeDriver, fan_out_subscribers
from mqttlb.stack.ephemeral import running_stack, stack_config

PARAMS = {"rate_window": "20s", "policy": {"cooldown_seconds": 0}}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def describe(name: str, values: list[float]) -> str:
    if not values:
        return f"{name:<42} no samples"
    figures = "  ".join(f"p{q}={percentile(values, q):7.1f} ms" for q in (50, 90, 99))
    return f"{name:<42} n={len(values):<5} {figures}  max={max(values):7.1f} ms"


def node_cpu(prometheus: str) -> dict[str, float]:
    body = requests.get(f"{prometheus}/api/v1/query", params={"query": contract.NODE_CPU}, timeout=5).json()
    return {r["metric"]["node"]: float(r["value"][1]) for r in body["data"]["result"]}


def notification(i: int, status: str) -> dict:
    labels = {"alertname": "MqttBrokerCpuHigh", "action": "rebalance", "cluster": "local", "node": "node1"}
    return {
        "version": "4",
        "groupKey": f"bench/{i}",
        "status": status,
        "receiver": "mqttlb-webhook",
        "groupLabels": {"alertname": "MqttBrokerCpuHigh"},
        "commonLabels": labels,
        "commonAnnotations": {},
        "externalURL": "http://bench",
        "truncatedAlerts": 0,
        "alerts": [
            {
                "status": status,
                "labels": labels,
                "annotations": {},
                "startsAt": f"2026-01-01T00:00:{i % 60:02d}Z",
                "endsAt": "",
                "generatorURL": "",
                "fingerprint": f"bench{i:06d}",
            }
        ],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--alerts", type=int, default=1000, help="notifications to send (default 1000)")
    parser.add_argument("--nodes", type=int, default=3, help="Mosquitto nodes (default 3)")
    parser.add_argument("--warmup-timeout", type=float, default=120, help="seconds to wait for a hot node")
    args = parser.parse_args(argv)
    if not 1 <= args.alerts <= 100_000:
        parser.error("--alerts must be 1..100000")

    state = Path(tempfile.mkdtemp(prefix="mqttlb-bench-")) / "state"
    cfg = stack_config(state, nodes=args.nodes, params=PARAMS, scrape_interval="2s", node_cpu_cores=0.25)
    with running_stack(cfg, out=print) as stack:
        prometheus = f"http://127.0.0.1:{cfg.ports.prometheus}"
        webhook = f"http://127.0.0.1:{cfg.ports.webhook}/alerts"
        token = stack.paths.webhook_token.read_text().strip()
        hot_port = cfg.broker_ports[0]
        budget = args.warmup_timeout + args.alerts * 2.0
        with (
            fan_out_subscribers(hot_port, 4),
            HotNodeDriver(hot_port, publishers=4, rate=600.0, size=256, duration=budget),
        ):
            deadline = time.monotonic() + args.warmup_timeout
            cpu: dict[str, float] = {}
            while time.monotonic() < deadline:
                cpu = node_cpu(prometheus)
                if (
                    len(cpu) == args.nodes
                    and cpu["node1"] - min(v for n, v in cpu.items() if n != "node1") > 0.2
                ):
                    break
                time.sleep(1)
            else:
                print(f"node1 did not get hot enough within {args.warmup_timeout:.0f} s: {cpu}")
                return 1
            print(
                f"node CPU utilisation before the run: { {n: round(v, 2) for n, v in sorted(cpu.items())} }"
            )

            published: list[float] = []
            visible: list[float] = []
            round_trip: list[float] = []
            kinds: dict[str, int] = {}
            unverified = 0
            session = requests.Session()
            session.headers["Authorization"] = f"Bearer {token}"
            started = time.monotonic()
            for i in range(args.alerts):
                status = "firing" if i % 2 == 0 else "resolved"
                t0 = time.perf_counter()
                response = session.post(webhook, json=notification(i, status), timeout=10)
                round_trip.append((time.perf_counter() - t0) * 1000)
                body = response.json()
                kinds[body.get("result", f"http {response.status_code}")] = (
                    kinds.get(body.get("result", f"http {response.status_code}"), 0) + 1
                )
                applied = body.get("applied") or {}
                if isinstance(applied, dict) and applied.get("published_after_ms") is not None:
                    published.append(float(applied["published_after_ms"]))
                    if applied.get("verified"):
                        visible.append(float(applied["visible_after_ms"]))
                    else:
                        unverified += 1
                if (i + 1) % 200 == 0:
                    print(
                        f"  {i + 1}/{args.alerts} notifications, {time.monotonic() - started:.0f} s",
                        flush=True,
                    )
    print(f"\n{args.alerts} notifications against the live stack ({args.nodes} nodes); results: {kinds}")
    print(describe("notification -> EDS file written (server)", published))
    print(describe("notification -> weights visible in Envoy", visible))
    print(describe("HTTP round trip (client)", round_trip))
    print(f"decisions whose weights Envoy did not show within 1 s: {unverified}")
    if published:
        print(f"mean EDS-written latency {statistics.fmean(published):.1f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
