"""The rebalancer's two paths, live: the fast path (a notification) and the reconcile pass.

    python bench/bench_decision.py [--notifications 1000] [--passes 300] [--nodes 3]

Starts the real stack on free loopback ports (Envoy, Mosquitto, exporters, Prometheus,
Alertmanager, webhook; scrape 2 s) and drives node1 hot with real MQTT load, so the weighted-CPU
policy has a CPU spread to act on.  Then:

(a) **Fast path** -- ``POST /alerts`` -> firing set updated.  ``--notifications`` notifications to
    the stack's webhook process, alternating firing and resolved episodes of one rebalance alert so
    that every one changes the firing set (and wakes the reconcile loop, which runs its passes in
    the same process meanwhile).  The handler answers only after the set is updated, so the
    client's round trip bounds the time to "state updated".  The in-process cost of
    ``FiringSet.apply`` alone is printed for comparison.
(b) **Reconcile pass** -- Prometheus query -> decide -> state and EDS file written -> verified in
    Envoy.  The stack's webhook is stopped and the product's controller (``Rebalancer.build`` from
    the stack's generated webhook config) runs ``--passes`` passes in this process against the live
    Prometheus and Envoy.  Before each pass the firing set flips (a rebalance alert fires, then
    resolves), and the step interval is 0, so each pass changes the weights: one step toward the
    CPU target, then one recovery step back.  Timed per pass: ``reconcile_once`` (observe: one
    Prometheus query and one Envoy read; decide; commit: state file and EDS file, fsynced; verify:
    one Envoy read) and pass start -> the new weights visible in Envoy's ``/clusters`` (polled
    every 5 ms).  The webhook's own histogram (``mqttlb_webhook_reconcile_pass_duration_seconds``)
    gives the mean, as a cross-check.

Parameters for this bench only (``PARAMS``): step interval 0, recovery never held by the CPU
spread, early steering off (the alert alone decides, so the flip decides), rate window 20 s.
Prints percentiles; asserts nothing about time.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import requests
from benchargs import bench_parser, within
from benchstats import describe

from mqttlb import contract
from mqttlb.envoy_admin import EnvoyAdminClient, EnvoyAdminError
from mqttlb.loadgen.hot import HotNodeDriver, fan_out_subscribers
from mqttlb.prometheus_api import PrometheusApi, PrometheusApiError
from mqttlb.stack.ephemeral import running_stack, stack_config
from mqttlb.stack.runner import Stack
from mqttlb.webhook.cli import Rebalancer
from mqttlb.webhook.config import load_config
from mqttlb.webhook.firing import FiringSet, format_timestamp
from mqttlb.webhook.payload import Alert

PARAMS: dict[str, Any] = {
    "rate_window": "20s",
    "early_steer_for": "1h",
    "policy": {"cooldown_seconds": 0, "recover_max_spread": 1.0},
}
HOT_NODE = "node1"
ALERT_LABELS = {
    contract.ALERTNAME_LABEL: contract.ALERT_CPU_HIGH,
    contract.ACTION_LABEL: contract.Action.REBALANCE.value,
    contract.NODE_LABEL: HOT_NODE,
}
VISIBLE_TIMEOUT_SECONDS = 2.0
POLL_SECONDS = 0.005
NS_PER_S = 1_000_000_000


def episode(i: int, base: datetime) -> tuple[str, str]:
    """(status, startsAt) of the i-th input: episode i // 2 fires (even i), then resolves (odd i)."""
    starts = format_timestamp(int((base + timedelta(seconds=i // 2)).timestamp() * NS_PER_S))
    return ("firing" if i % 2 == 0 else "resolved"), starts


def alert(cluster: str, status: str, starts_at: str) -> dict[str, Any]:
    return {
        "status": status,
        "labels": {**ALERT_LABELS, contract.CLUSTER_LABEL: cluster},
        "annotations": {},
        "startsAt": starts_at,
        "endsAt": "",
        "generatorURL": "",
        "fingerprint": "",
    }


def notification(cluster: str, status: str, starts_at: str, i: int) -> dict[str, Any]:
    """Alertmanager's webhook payload (version 4) with one alert."""
    return {
        "version": "4",
        "groupKey": f"bench/{i}",
        "status": status,
        "receiver": contract.RECEIVER_WEBHOOK,
        "groupLabels": {contract.ALERTNAME_LABEL: contract.ALERT_CPU_HIGH},
        "commonLabels": {**ALERT_LABELS, contract.CLUSTER_LABEL: cluster},
        "commonAnnotations": {},
        "externalURL": "http://bench",
        "truncatedAlerts": 0,
        "alerts": [alert(cluster, status, starts_at)],
    }


def node_cpu(prometheus: PrometheusApi) -> dict[str, float]:
    try:
        return {s.labels[contract.NODE_LABEL]: s.value for s in prometheus.query(contract.NODE_CPU)}
    except PrometheusApiError:
        return {}


def wait_for_spread(prometheus: PrometheusApi, nodes: int, timeout: float) -> dict[str, float] | None:
    """Node CPU once node1 is at least 0.2 above every other node, or None after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        cpu = node_cpu(prometheus)
        if len(cpu) == nodes and cpu[HOT_NODE] - max(v for n, v in cpu.items() if n != HOT_NODE) > 0.2:
            return cpu
        time.sleep(1)
    return None


# ----------------------------------------------------------------------------- (a) fast path
def fast_path(stack: Stack, count: int, progress: Callable[[str], None]) -> tuple[list[float], dict[str, int]]:
    """Round trips (ms) of ``count`` notifications to the stack's webhook, and the answers by result."""
    topo = stack.topology
    url = topo.webhook.url("/alerts")
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {stack.paths.webhook_token.read_text().strip()}"
    base = datetime.now(UTC) - timedelta(hours=1)
    round_trips: list[float] = []
    results: dict[str, int] = {}
    for i in range(count):
        status, starts_at = episode(i, base)
        body = notification(topo.settings.cluster, status, starts_at, i)
        started = time.perf_counter()
        response = session.post(url, json=body, timeout=10)
        round_trips.append((time.perf_counter() - started) * 1000)
        result = response.json().get("result", f"http {response.status_code}")
        results[result] = results.get(result, 0) + 1
        if (i + 1) % 250 == 0:
            progress(f"  {i + 1}/{count} notifications")
    # Leave the firing set empty: the last episode resolved (count even) or resolve it now.
    if count % 2 == 1:
        status, starts_at = episode(count, base)
        session.post(url, json=notification(topo.settings.cluster, status, starts_at, count), timeout=10)
    return round_trips, results


def firing_apply_in_process(cluster: str, count: int) -> list[float]:
    """The same inputs applied to a FiringSet in this process: the cost of the update alone (ms)."""
    firing = FiringSet(refresh_ttl=3600)
    base = datetime.now(UTC) - timedelta(hours=1)
    timings = []
    for i in range(count):
        status, starts_at = episode(i, base)
        alerts = [Alert.model_validate(alert(cluster, status, starts_at))]
        started = time.perf_counter()
        firing.apply(alerts, time.time())
        timings.append((time.perf_counter() - started) * 1000)
    return timings


# ----------------------------------------------------------------------------- (b) reconcile pass
def reconcile_passes(
    stack: Stack, count: int, progress: Callable[[str], None]
) -> tuple[list[float], list[float], int, int, float | None]:
    """``count`` passes of the product's controller in this process against the live stack.

    Returns (pass durations of the passes that changed weights, pass start -> visible in Envoy,
    passes that changed nothing, passes whose weights Envoy did not show within 2 s, the webhook
    histogram's mean in ms); durations in ms.
    """
    topo = stack.topology
    stack.stop_component("webhook")  # one writer of the EDS file: the controller below
    config = load_config(topo.files.webhook_config)
    rebalancer = Rebalancer.build(config, token="bench-token-not-served-0123456789")
    controller = rebalancer.controller
    controller.start()
    envoy = EnvoyAdminClient(topo.envoy_admin.url(), timeout=2)
    base = datetime.now(UTC) - timedelta(minutes=30)
    durations: list[float] = []
    visible: list[float] = []
    unchanged = 0
    not_visible = 0
    for i in range(count):
        status, starts_at = episode(i, base)
        controller.firing.apply([Alert.model_validate(alert(config.cluster, status, starts_at))], time.time())
        started = time.perf_counter()
        report = controller.reconcile_once()
        took = (time.perf_counter() - started) * 1000
        snapshot = controller.snapshot
        if report.version is None or snapshot is None:
            unchanged += 1
            continue
        durations.append(took)
        expected = snapshot.weights
        deadline = started + VISIBLE_TIMEOUT_SECONDS
        while True:
            try:
                applied = {n: e.weight for n, e in envoy.cluster(config.envoy_cluster).by_node().items()}
            except EnvoyAdminError:
                applied = {}
            now = time.perf_counter()
            if applied == expected:
                visible.append((now - started) * 1000)
                break
            if now > deadline:
                not_visible += 1
                break
            time.sleep(POLL_SECONDS)
        if (i + 1) % 50 == 0:
            progress(f"  {i + 1}/{count} passes, weights now {expected}")
    registry = controller.metrics.registry
    total = registry.get_sample_value(contract.WEBHOOK_PASS_SECONDS + "_sum")
    passes = registry.get_sample_value(contract.WEBHOOK_PASS_SECONDS + "_count")
    mean = (total / passes * 1000) if total is not None and passes else None
    return durations, visible, unchanged, not_visible, mean


def main(argv: list[str] | None = None) -> int:
    parser = bench_parser(__doc__)
    count = within(int, 1, 100_000)
    parser.add_argument(
        "--notifications", type=count, default=1000, help="fast path: notifications, 1..100000 (default 1000)"
    )
    parser.add_argument("--passes", type=count, default=300, help="reconcile passes, 1..100000 (default 300)")
    parser.add_argument("--nodes", type=within(int, 2, 16), default=3, help="Mosquitto nodes, 2..16 (default 3)")
    parser.add_argument("--warmup-timeout", type=float, default=120, help="seconds to wait for a hot node")
    args = parser.parse_args(argv)

    def progress(line: str) -> None:
        print(line, flush=True)

    state = Path(tempfile.mkdtemp(prefix="mqttlb-bench-")) / "state"
    cfg = stack_config(state, nodes=args.nodes, params=PARAMS, scrape_interval="2s", node_cpu_cores=0.25)
    with running_stack(cfg, out=progress) as stack:
        topo = stack.topology
        prometheus = PrometheusApi(topo.prometheus.url(), timeout=5, session=stack.web_session())
        hot_port = topo.nodes[0].port
        budget = args.warmup_timeout + args.notifications * 0.1 + args.passes * 3.0
        with (
            fan_out_subscribers(hot_port, 4),
            HotNodeDriver(hot_port, publishers=4, rate=600.0, size=256, duration=budget),
        ):
            cpu = wait_for_spread(prometheus, args.nodes, args.warmup_timeout)
            if cpu is None:
                print(f"{HOT_NODE} did not get 0.2 above the others within {args.warmup_timeout:.0f} s")
                return 1
            progress(f"node CPU utilisation: { {n: round(v, 2) for n, v in sorted(cpu.items())} }")
            progress(f"(a) fast path: {args.notifications} notifications to the webhook")
            round_trips, results = fast_path(stack, args.notifications, progress)
            progress(f"(b) reconcile pass: {args.passes} passes in process")
            durations, visible, unchanged, not_visible, mean = reconcile_passes(stack, args.passes, progress)
    apply_ms = firing_apply_in_process(cfg.cluster, args.notifications)

    print(f"\n(a) fast path, {args.notifications} notifications to the live webhook; answers: {results}")
    print(describe("POST /alerts -> firing set updated (round trip)", round_trips))
    print(describe("FiringSet.apply alone (in process)", apply_ms))
    print(f"\n(b) reconcile pass, {args.passes} passes against live Prometheus and Envoy ({args.nodes} nodes)")
    print(describe("pass: query, decide, state+EDS written, verify", durations))
    print(describe("pass start -> weights visible in Envoy", visible))
    print(f"passes that changed no weight: {unchanged}; weights not visible in Envoy within 2 s: {not_visible}")
    if mean is not None:
        print(f"webhook histogram {contract.WEBHOOK_PASS_SECONDS}: mean {mean:.2f} ms over every pass")
    if durations:
        print(f"mean pass that changed weights: {statistics.fmean(durations):.2f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
