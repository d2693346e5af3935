"""Sample per-node CPU (psutil on the Mosquitto PIDs) and Envoy connections/weights during a run.

CPU comes straight from the broker processes (the ground truth the exporter also reads), as
utilisation of the node's configured cores; connections and weights come from Envoy's admin
``/clusters`` (read with :mod:`mqttlb.envoy_admin`), so they are what Envoy balances on.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable, Mapping

import psutil

from mqttlb.envoy_admin import EnvoyAdminClient, EnvoyAdminError
from mqttlb.loadgen.balance import Sample

log = logging.getLogger(__name__)


def read_pid(path_of: Callable[[], int | None]) -> psutil.Process | None:
    try:
        pid = path_of()
        return psutil.Process(pid) if pid else None
    except (psutil.Error, OSError, ValueError):
        return None


class NodeSampler:
    """Background thread: one ``Sample`` every ``interval`` seconds until ``stop()``."""

    def __init__(
        self,
        pids: Mapping[str, Callable[[], int | None]],
        envoy_admin: str,
        envoy_cluster: str,
        node_cpu_cores: float,
        interval: float = 2.0,
        cpu_window: float = 10.0,
        max_samples: int = 10_000,
    ) -> None:
        self._pid_of = dict(pids)
        self._admin = EnvoyAdminClient(envoy_admin, timeout=2.0)
        self._cluster = envoy_cluster
        self._cores = node_cpu_cores
        self._interval = interval
        self._max = max_samples
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="node-sampler", daemon=True)
        self._procs: dict[str, psutil.Process | None] = {}
        self._window = cpu_window
        # per node: (time, cumulative CPU seconds) over the last window; psutil counts 10 ms ticks,
        # so a rate over a few seconds of a small node would jump in 10 %-steps
        self._history: dict[str, collections.deque[tuple[float, float]]] = {
            node: collections.deque() for node in self._pid_of
        }
        self._t0 = 0.0
        self.samples: list[Sample] = []
        self.errors = 0

    def _cpu_seconds(self, node: str) -> float | None:
        proc = self._procs.get(node)
        if proc is None or not proc.is_running():
            proc = self._procs[node] = read_pid(self._pid_of[node])
        if proc is None:
            return None
        try:
            times = proc.cpu_times()
        except psutil.Error:
            self._procs[node] = None
            return None
        return float(times.user + times.system)

    def _envoy(self) -> tuple[dict[str, int], dict[str, int]]:
        """(node -> active upstream connections, node -> weight); empty (and counted) on an error."""
        try:
            endpoints = self._admin.cluster(self._cluster).endpoints
        except EnvoyAdminError as exc:
            self.errors += 1
            log.warning("Envoy admin not readable: %s", exc)
            return {}, {}
        return {e.node: e.cx_active for e in endpoints}, {e.node: e.weight for e in endpoints}

    def start(self) -> NodeSampler:
        self._t0 = time.monotonic()
        for node in self._pid_of:
            seconds = self._cpu_seconds(node)
            if seconds is not None:
                self._history[node].append((self._t0, seconds))
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.wait(self._interval) and len(self.samples) < self._max:
            now = time.monotonic()
            cpu: dict[str, float] = {}
            for node in self._pid_of:
                seconds = self._cpu_seconds(node)
                if seconds is None:
                    self.errors += 1
                    continue
                history = self._history[node]
                history.append((now, seconds))
                while len(history) > 2 and history[1][0] <= now - self._window:
                    history.popleft()
                then, then_seconds = history[0]
                if now > then:
                    cpu[node] = max(0.0, seconds - then_seconds) / (now - then) / self._cores
            connections, weights = self._envoy()
            t = round(now - self._t0, 2)
            self.samples.append(Sample(t=t, cpu=cpu, connections=connections, weights=weights))

    def stop(self) -> list[Sample]:
        self._stop.set()
        self._thread.join(timeout=10)
        return self.samples
