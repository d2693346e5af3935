"""Reaction time and false actions of the rebalancer, live, with the shipped default parameters.

    python bench/bench_reaction.py [--repeats 3] [--minutes 10] [--nodes 3]

Starts the real stack on free loopback ports with ``mqttlb/params.yaml`` unchanged and the stack
file's scrape interval (5 s): rate window 30 s, ``cpu_high`` 0.75, ``MqttBrokerCpuHigh`` after
20 s, Alertmanager ``group_wait`` 5 s, step interval 35 s (scrape + rate window), early steering
once the short-window rule ``mqttlb_node:mqtt_broker_cpu_utilisation:irate`` has stayed above ``cpu_high``
long and far enough (``early_steer_for`` 5 s when saturated) while the node is saturated or its
rate-window CPU is above ``cpu_high`` (``mqttlb.webhook.plan``).  Each node is credited 0.25
cores (``node_cpu_cores``, a stack setting, not a parameter) so that one Mosquitto can be driven
past ``cpu_high`` on a 2-core machine.

1. **Reaction time** (``--repeats`` times, at least 3): from the start of a flood of publishes
   straight to node1 (``HotNodeDriver``: 6 publishers x 1,000 msg/s, 256 B, fanned out to 8
   subscribers), to node1's first weight change in Envoy's ``/clusters`` (polled every 0.2 s).
   Also printed: when node1's CPU (psutil on its PID, 1 s windows) first exceeded ``cpu_high``,
   and what triggered the change (the audit entry's reason: early steer or a firing alert).  The
   flood stops at the first change; before each repetition the bench waits until the weights are
   back at neutral, no alert fires and the last weight change is one step interval old.
2. **False actions**: weight changes, shedding steps and eviction batches (audit entries of kind
   rebalance, recover, shed, unshed, evict) during an idle run (no load) and a noisy-but-even run, ``--minutes`` each (0
   skips them).  Noisy but even: every node gets the same random load, back-to-back bursts of
   2-12 s, each at 0.3-1.7 x the mean rate, fanned out to 8 subscribers, drawn independently per
   node.  The mean rate is calibrated first (two rounds of 10 s of steady load on every node, CPU
   measured with psutil, the rate scaled to the target) so that the mean utilisation is
   ``--noise-level`` (default 0.45): the loudest bursts then reach about ``cpu_high``, where early
   steering could be fooled.  Printed with each node's mean and peak CPU, the alerts that fired,
   and how many of the actions early steering triggered (without it, those would not happen).

Every wait is bounded; the stack is stopped whatever happens.  Prints figures; asserts nothing.
Target (issue 13): reaction <= 20 s, and no more false actions than without early steering.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import random
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import requests

from mqttlb import contract
from mqttlb.envoy_admin import EnvoyAdminClient, EnvoyAdminError
from mqttlb.loadgen.hot import HotNodeDriver, fan_out_subscribers
from mqttlb.params import duration_seconds, load_params, step_interval_seconds
from mqttlb.prometheus_api import PrometheusApi, PrometheusApiError
from mqttlb.stack.ephemeral import running_stack, stack_config
from mqttlb.stack.runner import Stack
from mqttlb.stack.topology import BrokerNode
from mqttlb.webhook.audit import AuditLog

NODE_CPU_CORES = 0.25
FLOOD = {"publishers": 6, "rate": 1000.0, "size": 256}
FLOOD_FANOUT = 8
NOISE_FANOUT = 8
NOISE_PUBLISHERS = 4
NOISE_BURST_SECONDS = (2.0, 12.0)
NOISE_RATE_FACTOR = (0.3, 1.7)
CALIBRATION_RATE = 1500.0  # publishes/s per node
CALIBRATION_SECONDS = 10.0
CALIBRATION_RAMP_SECONDS = 3.0  # connects and first messages, not measured
MAX_NOISE_RATE = 20_000.0  # publishes/s per node
# Steps that move a lever (Step.acts): what counts as an action, false or not.
ACTING = frozenset(
    k.value
    for k in (
        contract.OutcomeKind.REBALANCE,
        contract.OutcomeKind.RECOVER,
        contract.OutcomeKind.SHED,
        contract.OutcomeKind.UNSHED,
        contract.OutcomeKind.EVICT,
    )
)
POLL_SECONDS = 0.2
CPU_WINDOW_SECONDS = 1.0
WARMUP_TIMEOUT_SECONDS = 180.0
REACTION_TIMEOUT_SECONDS = 120.0
QUIET_TIMEOUT_SECONDS = 420.0


def say(line: str) -> None:
    print(line, flush=True)


# ----------------------------------------------------------------------------- observing
class CpuWatch:
    """A broker's CPU from its PID (psutil) as utilisation of ``cores``, over the last ``window`` s."""

    def __init__(self, node: BrokerNode, cores: float, window: float = CPU_WINDOW_SECONDS) -> None:
        if node.pid_file is None:
            raise ValueError(f"{node.name} has no PID file")
        self.process = psutil.Process(int(node.pid_file.read_text().strip()))
        self.cores = cores
        self.window = window
        self.history: collections.deque[tuple[float, float]] = collections.deque()

    def sample(self) -> float | None:
        """Utilisation (0..) over the last window, None until the window has filled."""
        times = self.process.cpu_times()
        now = time.monotonic()
        self.history.append((now, times.user + times.system))
        while len(self.history) > 2 and now - self.history[1][0] >= self.window:
            self.history.popleft()
        (t0, c0), (t1, c1) = self.history[0], self.history[-1]
        if t1 - t0 < self.window:
            return None
        return (c1 - c0) / (t1 - t0) / self.cores


@dataclass
class World:
    """The running stack as the bench reads it."""

    stack: Stack
    neutral: int
    step_seconds: float
    cpu_high: float
    envoy: EnvoyAdminClient = field(init=False)
    prometheus: PrometheusApi = field(init=False)
    audit: AuditLog = field(init=False)

    def __post_init__(self) -> None:
        topo = self.stack.topology
        self.envoy = EnvoyAdminClient(topo.envoy_admin.url(), timeout=2)
        self.prometheus = PrometheusApi(topo.prometheus.url(), timeout=5, session=self.stack.web_session())
        self.audit = AuditLog(self.stack.paths.webhook_audit)

    @property
    def cluster(self) -> str:
        return self.stack.cfg.cluster

    def weights(self) -> dict[str, int]:
        """Weights Envoy applies now; empty when Envoy cannot be read."""
        try:
            return {n: e.weight for n, e in self.envoy.cluster(self.stack.cfg.envoy_cluster).by_node().items()}
        except EnvoyAdminError:
            return {}

    def firing(self) -> list[str]:
        """Names of the alerts in the webhook's firing set; ["?"] when the webhook cannot be read."""
        try:
            headers = {"Authorization": f"Bearer {self.stack.paths.webhook_token.read_text().strip()}"}
            status = requests.get(self.stack.topology.webhook.url("/status"), headers=headers, timeout=2).json()
        except (OSError, requests.RequestException, ValueError):
            return ["?"]
        clusters = status.get("firing", {}).get("clusters", {})
        return sorted({a["alertname"] for c in clusters.values() for a in c.get("alerts", [])})

    def acting(self, since: float, until: float | None = None) -> list[dict[str, Any]]:
        """Audit entries that moved a lever (weights or shedding) in [since, until)."""
        return [
            e
            for e in self.audit.read()
            if e.get("kind") in ACTING and e.get("applied") and since <= e["time"] < (until or float("inf"))
        ]

    def query(self, expr: str, at: float | None = None) -> dict[str, float]:
        """An instant query's values by node (or by alertname); empty on an error."""
        try:
            samples = self.prometheus.query(expr, at)
        except PrometheusApiError:
            return {}
        return {
            s.labels.get(contract.NODE_LABEL) or s.labels.get(contract.ALERTNAME_LABEL, "?"): s.value for s in samples
        }


def wait_until(check: Callable[[], bool], timeout: float, interval: float = 1.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(interval)
    return check()


def wait_warm(world: World, nodes: int) -> bool:
    """Both CPU rules have a sample for every node (a rate window of data)."""
    selector = f'{{{contract.CLUSTER_LABEL}="{world.cluster}"}}'

    def warm() -> bool:
        return all(
            len(world.query(f"{rule}{selector}")) == nodes for rule in (contract.NODE_CPU, contract.NODE_CPU_FAST)
        )

    return wait_until(warm, WARMUP_TIMEOUT_SECONDS)


def wait_quiet(world: World) -> bool:
    """Weights neutral in Envoy, no alert in the firing set, the last change a step interval old."""

    def quiet() -> bool:
        weights = world.weights()
        recent = world.acting(time.time() - world.step_seconds)
        return bool(weights) and set(weights.values()) == {world.neutral} and not world.firing() and not recent

    return wait_until(quiet, QUIET_TIMEOUT_SECONDS, interval=2.0)


# ----------------------------------------------------------------------------- 1. reaction time
@dataclass(frozen=True)
class Reaction:
    seconds: float | None  # flood start -> first weight change of the hot node in Envoy
    hot_after: float | None  # flood start -> node CPU above cpu_high (1 s window)
    trigger: str
    weights: dict[str, int]


def react_once(world: World, node: BrokerNode) -> Reaction:
    started_wall = time.time()
    started = time.monotonic()
    deadline = started + REACTION_TIMEOUT_SECONDS
    cpu = CpuWatch(node, NODE_CPU_CORES)
    hot_after: float | None = None
    seconds: float | None = None
    weights: dict[str, int] = {}
    with (
        fan_out_subscribers(node.port, FLOOD_FANOUT),
        HotNodeDriver(node.port, duration=REACTION_TIMEOUT_SECONDS + 10, client_prefix="flood", **FLOOD),
    ):
        while time.monotonic() < deadline:
            utilisation = cpu.sample()
            now = time.monotonic() - started
            if hot_after is None and utilisation is not None and utilisation > world.cpu_high:
                hot_after = now
            weights = world.weights()
            if weights and weights.get(node.name) != world.neutral:
                seconds = now
                break
            time.sleep(POLL_SECONDS)
    changes = world.acting(started_wall)
    trigger = changes[0]["reason"] if changes else "-"
    return Reaction(seconds, hot_after, trigger, weights)


# ----------------------------------------------------------------------------- 2. false actions
class NoisyEvenLoad:
    """Every node gets the same random load: back-to-back bursts drawn independently per node."""

    def __init__(self, nodes: list[BrokerNode], mean_rate: float, seed: int = 13) -> None:
        self.nodes = nodes
        self.mean_rate = mean_rate
        self.seed = seed
        self.stop_event = threading.Event()
        self.threads: list[threading.Thread] = []
        self.bursts = 0
        self.errors: list[str] = []

    def _node_loop(self, index: int, node: BrokerNode) -> None:
        rng = random.Random(self.seed * 1000 + index)
        burst = 0
        while not self.stop_event.is_set():
            length = rng.uniform(*NOISE_BURST_SECONDS)
            rate = self.mean_rate * rng.uniform(*NOISE_RATE_FACTOR) / NOISE_PUBLISHERS
            driver = HotNodeDriver(
                node.port,
                publishers=NOISE_PUBLISHERS,
                rate=rate,
                size=256,
                duration=length + 5,
                seed=burst,
                client_prefix=f"noise{index}b{burst % 2}",
            )
            burst += 1
            self.bursts += 1
            driver.start()
            self.stop_event.wait(length)
            try:
                driver.stop()
            except RuntimeError as exc:
                self.errors.append(f"{node.name}: {exc.__cause__ or exc}")

    @contextlib.contextmanager
    def running(self) -> Iterator[NoisyEvenLoad]:
        with contextlib.ExitStack() as subscribers:
            for node in self.nodes:
                subscribers.enter_context(fan_out_subscribers(node.port, NOISE_FANOUT))
            self.threads = [
                threading.Thread(target=self._node_loop, args=(i, n), daemon=True, name=f"noise-{n.name}")
                for i, n in enumerate(self.nodes)
            ]
            for thread in self.threads:
                thread.start()
            try:
                yield self
            finally:
                self.stop_event.set()
                for thread in self.threads:
                    thread.join(timeout=30)


def utilisation_at(nodes: list[BrokerNode], rate: float) -> float:
    """Mean utilisation of the nodes under steady load of ``rate`` publishes/s each (psutil)."""
    with contextlib.ExitStack() as load:
        for index, node in enumerate(nodes):
            load.enter_context(fan_out_subscribers(node.port, NOISE_FANOUT))
            load.enter_context(
                HotNodeDriver(
                    node.port,
                    publishers=NOISE_PUBLISHERS,
                    rate=rate / NOISE_PUBLISHERS,
                    size=256,
                    duration=CALIBRATION_SECONDS + 10,
                    client_prefix=f"calibrate{index}",
                )
            )
        time.sleep(CALIBRATION_RAMP_SECONDS)
        window = CALIBRATION_SECONDS - CALIBRATION_RAMP_SECONDS
        watches = [CpuWatch(node, NODE_CPU_CORES, window=window) for node in nodes]
        for watch in watches:
            watch.sample()
        time.sleep(window)
        measured = [watch.sample() for watch in watches]
    values = [m for m in measured if m is not None]
    return statistics.fmean(values) if values else 0.0


def calibrate_noise(nodes: list[BrokerNode], level: float) -> float:
    """Publishes/s per node for a mean utilisation of ``level`` (0..1).

    Two rounds: the second measures at the rate the first predicts (on a busy machine utilisation
    grows less than linearly with the rate) and scales once more."""
    rate = CALIBRATION_RATE
    for _ in range(2):
        utilisation = utilisation_at(nodes, rate)
        say(f"  calibration: {rate:.0f} publishes/s per node -> utilisation {utilisation:.2f}")
        rate = min(rate * level / max(utilisation, 0.01), MAX_NOISE_RATE)
    return rate


@dataclass(frozen=True)
class FalseActions:
    name: str
    seconds: float
    actions: list[dict[str, Any]]
    envoy_changes: int  # weight changes seen by polling Envoy every second
    mean_cpu: dict[str, float]
    peak_fast_cpu: dict[str, float]
    alerts: dict[str, float]

    def lines(self) -> list[str]:
        kinds = collections.Counter(e["kind"] for e in self.actions)
        early = sum(1 for e in self.actions if str(e.get("reason", "")).startswith("early steer"))
        out = [
            f"{self.name} run, {self.seconds / 60:.1f} min: {len(self.actions)} false actions "
            f"{dict(kinds) or ''} ({early} from early steering); weight changes seen in Envoy: {self.envoy_changes}",
            f"  node CPU mean {_rounded(self.mean_cpu)}, peak short-window {_rounded(self.peak_fast_cpu)}",
            f"  alerts firing during the run: {sorted(self.alerts) or 'none'}",
        ]
        out += [f"  - {e['kind']}: {e['reason']}" for e in self.actions[:10]]
        return out


def _rounded(values: dict[str, float]) -> dict[str, float]:
    return {k: round(v, 2) for k, v in sorted(values.items())}


def false_action_run(
    world: World, name: str, seconds: float, load: contextlib.AbstractContextManager[Any]
) -> FalseActions:
    started = time.time()
    envoy_changes = 0
    with load:
        previous = world.weights()
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            time.sleep(1.0)
            current = world.weights()
            if current and previous and current != previous:
                envoy_changes += 1
            previous = current or previous
    ended = time.time()
    window = f"{max(1, int(ended - started))}s"
    selector = f'{{{contract.CLUSTER_LABEL}="{world.cluster}"}}'
    return FalseActions(
        name=name,
        seconds=ended - started,
        actions=world.acting(started, ended),
        envoy_changes=envoy_changes,
        mean_cpu=world.query(f"avg_over_time({contract.NODE_CPU}{selector}[{window}])", ended),
        peak_fast_cpu=world.query(f"max_over_time({contract.NODE_CPU_FAST}{selector}[{window}])", ended),
        alerts=world.query(
            f'max by ({contract.ALERTNAME_LABEL}) (max_over_time(ALERTS{{alertstate="firing",'
            f'{contract.CLUSTER_LABEL}="{world.cluster}"}}[{window}]))',
            ended,
        ),
    )


def false_action_runs(world: World, nodes: list[BrokerNode], seconds: float, level: float) -> list[FalseActions]:
    """The idle run, then the noisy-but-even run at mean utilisation ``level``; each starts quiet."""
    runs: list[FalseActions] = []
    if not wait_quiet(world):
        say(f"not back to neutral and quiet within {QUIET_TIMEOUT_SECONDS:.0f} s: no false-action runs")
        return runs
    say(f"idle run: {seconds / 60:g} min")
    runs.append(false_action_run(world, "idle", seconds, contextlib.nullcontext()))
    say("\n".join(runs[-1].lines()))
    rate = calibrate_noise(nodes, level)
    if not wait_quiet(world):
        say(f"not quiet within {QUIET_TIMEOUT_SECONDS:.0f} s after the calibration: no noisy run")
        return runs
    say(
        f"noisy-but-even run: {seconds / 60:g} min, mean {rate:.0f} publishes/s per node (target utilisation {level:g})"
    )
    noise = NoisyEvenLoad(nodes, rate)
    runs.append(false_action_run(world, "noisy-but-even", seconds, noise.running()))
    say("\n".join(runs[-1].lines()))
    say(f"  ({noise.bursts} bursts; load errors: {noise.errors[:3] or 'none'})")
    return runs


# ----------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3, help="reaction-time repetitions (default 3, at least 3)")
    parser.add_argument(
        "--minutes", type=float, default=10.0, help="length of the idle and the noisy run each (default 10; 0 skips)"
    )
    parser.add_argument("--nodes", type=int, default=3, help="Mosquitto nodes (default 3)")
    parser.add_argument(
        "--noise-level",
        type=float,
        default=0.45,
        help="noisy run: mean CPU utilisation of every node, 0..1 of its cores (default 0.45)",
    )
    args = parser.parse_args(argv)
    if not 3 <= args.repeats <= 50:
        parser.error("--repeats must be 3..50")
    if not 0 <= args.minutes <= 120:
        parser.error("--minutes must be 0..120")
    if not 2 <= args.nodes <= 8:
        parser.error("--nodes must be 2..8")
    if not 0 < args.noise_level < 1:
        parser.error("--noise-level must be in (0, 1)")

    state = Path(tempfile.mkdtemp(prefix="mqttlb-bench-reaction-")) / "state"
    cfg = stack_config(state, nodes=args.nodes, node_cpu_cores=NODE_CPU_CORES)
    params = load_params()
    if cfg.params != params:
        say("the stack's parameters differ from mqttlb/params.yaml; this bench measures the shipped defaults")
        return 2
    scrape = duration_seconds(cfg.scrape_interval)
    say(
        f"shipped defaults: scrape {cfg.scrape_interval}, rate window {params.rate_window}, cpu_high {params.cpu_high} "
        f"for {params.cpu_high_for}, group_wait {params.alertmanager.group_wait}, early_steer_for "
        f"{params.early_steer_for}, step interval {step_interval_seconds(params, scrape):.0f}s"
    )
    reactions: list[Reaction] = []
    runs: list[FalseActions] = []
    with running_stack(cfg, out=say) as stack:
        world = World(stack, params.policy.neutral_weight, step_interval_seconds(params, scrape), params.cpu_high)
        nodes = list(stack.topology.nodes)
        if not wait_warm(world, args.nodes):
            say(f"the CPU rules have no sample for every node after {WARMUP_TIMEOUT_SECONDS:.0f} s")
            return 1
        for i in range(args.repeats):
            if not wait_quiet(world):
                say(f"not back to neutral and quiet within {QUIET_TIMEOUT_SECONDS:.0f} s: stopping")
                break
            reaction = react_once(world, nodes[0])
            reactions.append(reaction)
            took = (
                f"{reaction.seconds:.1f} s"
                if reaction.seconds is not None
                else f"none in {REACTION_TIMEOUT_SECONDS:.0f} s"
            )
            hot = f"{reaction.hot_after:.1f} s" if reaction.hot_after is not None else "never"
            say(
                f"reaction {i + 1}: first weight change of {nodes[0].name} in Envoy after {took} "
                f"(its CPU above {params.cpu_high} after {hot}); {reaction.weights}; trigger: {reaction.trigger}"
            )
        if args.minutes > 0:
            runs = false_action_runs(world, nodes, args.minutes * 60, args.noise_level)

    say("\n== reaction time (flood start -> first weight change in Envoy), shipped defaults")
    for i, r in enumerate(reactions, start=1):
        figure = f"{r.seconds:.1f} s" if r.seconds is not None else "no change"
        from_hot = f"{r.seconds - r.hot_after:.1f} s" if r.seconds is not None and r.hot_after is not None else "-"
        say(f"  {i}: {figure} (from CPU above cpu_high: {from_hot})")
    measured = [r.seconds for r in reactions if r.seconds is not None]
    if measured:
        say(f"  median {statistics.median(measured):.1f} s over {len(measured)} (target <= 20 s)")
    say("== false actions")
    for run in runs:
        say("  " + run.lines()[0])
    if not runs:
        say("  not measured")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
