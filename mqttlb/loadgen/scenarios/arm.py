"""One arm of a scenario: a fresh local stack, the workload through its Envoy, timed node stops and starts,
and everything sampled meanwhile.

Per-node CPU (psutil on the broker processes, over the recording rules' rate window) and Envoy's
connections and weights come from :class:`mqttlb.loadgen.sampler.NodeSampler`; Envoy's per-node
``cx_total`` (connects at the nodes) from :class:`ConnectSampler`; the webhook's evict batches from its
audit log after the run.  The stack is stopped whatever happens.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import psutil

from mqttlb.envoy_admin import EnvoyAdminClient, EnvoyAdminError
from mqttlb.loadgen.balance import Sample
from mqttlb.loadgen.engine import run
from mqttlb.loadgen.report import Report
from mqttlb.loadgen.sampler import NodeSampler
from mqttlb.loadgen.scenarios.analysis import ConnectSample
from mqttlb.loadgen.workload import Workload
from mqttlb.params import duration_seconds
from mqttlb.yamlfile import deep_merge

if TYPE_CHECKING:
    from mqttlb.stack.config import StackConfig

log = logging.getLogger(__name__)

MAX_SAMPLES = 20_000


@dataclass(frozen=True)
class ArmSetup:
    """How an arm's stack runs: Envoy's ``lb_policy`` (None: the stack file's), whether the webhook acts
    (else dry run) and the ``params`` overrides on top of the stack file's parameters."""

    name: str
    description: str
    lb_policy: str | None
    webhook_acts: bool
    params: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class NodeEvent:
    """Stop or start broker ``node`` ``at`` seconds after the load started."""

    at: float
    action: Literal["stop", "start"]
    node: str


@dataclass
class ArmRun:
    """What an arm gave: ``samples`` (about one a second), ``connects`` (Envoy cx_total per node),
    ``events`` as carried out (run time, action, node), the webhook's audit entries, the load report and
    ``wall_start`` (wall-clock seconds of the load start, to place audit entries in run time)."""

    setup: ArmSetup
    nodes: list[str]
    samples: list[Sample]
    connects: list[ConnectSample]
    events: list[tuple[float, str, str]]
    audit: list[dict[str, Any]]
    load: Report
    wall_start: float
    sampler_errors: int
    stack_params: dict[str, Any]  # the webhook's parameters (mqttlb.params.Params as JSON, base policy = lb_policy)
    stack_settings: dict[str, Any]  # lb_policy, scrape_interval, slow_start_window of the stack file
    cpu_budget: CpuBudget


@dataclass(frozen=True)
class CpuBudget:
    """Where the machine's CPU went during the load (psutil): ``generator``: this process (load generator and
    samplers) as a share of all cores; ``machine``: every process's busy share of all cores; ``cores``."""

    generator: float
    machine: float
    cores: int


class CpuMeter:
    """Measures :class:`CpuBudget` between :meth:`start` and :meth:`stop`."""

    def __init__(self) -> None:
        self._process = psutil.Process()
        self._t0 = 0.0
        self._own0 = 0.0
        self._busy0 = 0.0
        self._total0 = 0.0

    @staticmethod
    def _machine() -> tuple[float, float]:
        times = psutil.cpu_times()
        total = sum(times)
        return total - times.idle - getattr(times, "iowait", 0.0), total

    def start(self) -> CpuMeter:
        own = self._process.cpu_times()
        self._t0, self._own0 = time.monotonic(), own.user + own.system
        self._busy0, self._total0 = self._machine()
        return self

    def stop(self) -> CpuBudget:
        own = self._process.cpu_times()
        wall = max(time.monotonic() - self._t0, 1e-9)
        cores = psutil.cpu_count() or 1
        busy, total = self._machine()
        machine = (busy - self._busy0) / (total - self._total0) if total > self._total0 else 0.0
        return CpuBudget(round((own.user + own.system - self._own0) / (wall * cores), 4), round(machine, 4), cores)


class ConnectSampler:
    """Background thread: Envoy's ``cx_total`` per node every ``interval`` s until :meth:`stop`."""

    def __init__(self, envoy_admin: str, cluster: str, interval: float = 1.0) -> None:
        self._admin = EnvoyAdminClient(envoy_admin, timeout=2.0)
        self._cluster = cluster
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="connect-sampler", daemon=True)
        self._t0 = 0.0
        self.samples: list[ConnectSample] = []
        self.errors = 0

    def start(self, t0: float) -> ConnectSampler:
        self._t0 = t0
        self._thread.start()
        return self

    def _loop(self) -> None:
        while len(self.samples) < MAX_SAMPLES:
            try:
                endpoints = self._admin.cluster(self._cluster).endpoints
                t = round(time.monotonic() - self._t0, 2)
                self.samples.append(ConnectSample(t, {e.node: e.cx_total for e in endpoints}))
            except EnvoyAdminError:
                self.errors += 1
            if self._stop.wait(self._interval):
                return

    def stop(self) -> list[ConnectSample]:
        self._stop.set()
        self._thread.join(timeout=10)
        return self.samples


def _pid_reader(path: Path) -> Callable[[], int | None]:
    def read() -> int | None:
        try:
            return int(path.read_text().strip())
        except (OSError, ValueError):
            return None

    return read


def _read_audit(path: Path) -> list[dict[str, Any]]:
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return []
    entries = []
    for line in lines:
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(entry, dict):
            entries.append(entry)
    return entries


async def _load_with_events(
    workload: Workload, events: Sequence[NodeEvent], act: Callable[[NodeEvent], None], t0: float
) -> tuple[Report, list[tuple[float, str, str]]]:
    """Run ``workload`` while ``act`` carries out ``events`` at their times (in a thread: supervisord
    waits until a program has stopped or started); returns the report and the events as done."""
    done: list[tuple[float, str, str]] = []

    async def timeline() -> None:
        for event in sorted(events, key=lambda e: e.at):
            await asyncio.sleep(max(0.0, t0 + event.at - time.monotonic()))
            started = round(time.monotonic() - t0, 2)
            await asyncio.to_thread(act, event)
            log.info("t=%.1fs: %s %s (took %.1f s)", started, event.action, event.node, time.monotonic() - t0 - started)
            done.append((started, event.action, event.node))

    task = asyncio.create_task(timeline())
    try:
        report = await run(workload, progress=_progress)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    return report, done


def _progress(snap: dict[str, Any]) -> None:
    log.info(
        "  t=%5.1fs connected=%d pub=%.0f/s connects=%.1f/s failures=%d",
        snap["t"],
        snap["connected"],
        snap.get("publish_rate", 0.0),
        snap.get("connect_rate", 0.0),
        snap["connect_failures"],
    )


def run_arm(
    setup: ArmSetup,
    make_workload: Callable[[int], Workload],
    events: Sequence[NodeEvent],
    *,
    base: StackConfig,
    state_dir: Path,
    sample_interval: float = 1.0,
) -> ArmRun:
    """Start a stack with the ``base`` settings (:func:`base_config`) in ``state_dir`` (free ports), run the
    workload ``make_workload(envoy_port)`` with ``events``, stop the stack.  Raises RuntimeError
    (StackError, no samples) and OSError."""
    from mqttlb.stack.ephemeral import running_stack  # the stack only when an arm runs

    cfg = _stack_config(setup, base, state_dir)
    names = list(cfg.node_names)
    services = {node.name: node.service for node in _topology_nodes(cfg)}
    log.info("arm %s: starting the stack (%s)", setup.name, setup.description)
    with running_stack(cfg) as stack:
        workload = make_workload(cfg.ports.envoy_listener)
        admin = f"http://127.0.0.1:{cfg.ports.envoy_admin}"

        def act(event: NodeEvent) -> None:
            if event.action == "stop":
                stack.stop_component(services[event.node])
            else:
                stack.start_component(services[event.node])

        sampler = NodeSampler(
            {node: _pid_reader(stack.paths.mosquitto_pid(node)) for node in names},
            admin,
            cfg.envoy_cluster,
            cfg.node_cpu_cores,
            interval=sample_interval,
            cpu_window=duration_seconds(cfg.params.rate_window),
            max_samples=MAX_SAMPLES,
        ).start()
        t0, wall_start = time.monotonic(), time.time()
        connects = ConnectSampler(admin, cfg.envoy_cluster, sample_interval).start(t0)
        log.info("arm %s: load for %.0f s", setup.name, workload.duration)
        meter = CpuMeter().start()
        try:
            load, done = asyncio.run(_load_with_events(workload, events, act, t0))
        finally:
            budget = meter.stop()
            samples = sampler.stop()
            connect_samples = connects.stop()
        audit = _read_audit(stack.paths.webhook_dir / "audit.jsonl")
    if not samples:
        raise RuntimeError(f"arm {setup.name}: no samples were taken")
    return ArmRun(
        setup=setup,
        nodes=names,
        samples=samples,
        connects=connect_samples,
        events=done,
        audit=audit,
        load=load,
        wall_start=wall_start,
        sampler_errors=sampler.errors + connects.errors,
        stack_params=recorded_params(cfg),
        stack_settings=recorded_settings(cfg),
        cpu_budget=budget,
    )


def recorded_params(cfg: StackConfig) -> dict[str, Any]:
    """The parameters a run of ``cfg`` records: the webhook's, as it runs them (:class:`mqttlb.params.Params` as
    JSON, unset keys as None, base policy = ``cfg.lb_policy``)."""
    from mqttlb.stack.builders import webhook_params

    return webhook_params(cfg.params, cfg.lb_policy, exclude_none=False)


def recorded_settings(cfg: StackConfig) -> dict[str, str]:
    """The stack settings a run of ``cfg`` records: lb_policy, scrape_interval and slow_start_window, as text."""
    return {key: str(getattr(cfg, key)) for key in ("lb_policy", "scrape_interval", "slow_start_window")}


def base_config(nodes: int, node_cpu_cores: float, **overrides: Any) -> StackConfig:
    """The stack file's settings (and parameters) with ``nodes``, ``node_cpu_cores`` and ``overrides`` (stack
    keys, e.g. ``params``, ``scrape_interval``), read once per scenario so that every arm runs on the same
    settings even if the files change meanwhile.  Raises StackConfigError."""
    from mqttlb.stack.ephemeral import stack_config

    return stack_config(Path("unused"), nodes=nodes, node_cpu_cores=node_cpu_cores, **overrides)


def _stack_config(setup: ArmSetup, base: StackConfig, state_dir: Path) -> StackConfig:
    """The arm's stack settings: ``base`` with free ports, ``state_dir``, the webhook in dry run unless the
    arm acts, the arm's lb_policy and its parameter overrides.  Raises pydantic's ValidationError."""
    from mqttlb.stack.config import StackConfig
    from mqttlb.stack.ephemeral import free_ports

    data = base.model_dump(mode="json")
    data.update(state_dir=str(state_dir), ports=free_ports(base.nodes), dry_run=not setup.webhook_acts)
    if setup.lb_policy is not None:
        data["lb_policy"] = setup.lb_policy
    data["params"] = deep_merge(data["params"], dict(setup.params))
    return StackConfig.model_validate(data)


def _topology_nodes(cfg: Any) -> list[Any]:
    from mqttlb.stack.topology import native_topology

    return list(native_topology(cfg).nodes)
