"""Leader failover of two rebalancer replicas with a file lease: SIGKILL of the leader -> the standby acts.

    python bench/bench_ha.py [--failovers 10] [--renew 0.5]

Two ``mqttlb webhook`` processes (the product's command) share one state file and one lease file
(``lease: {kind: file}``), each with its own HTTP and gRPC xDS port.  Each round SIGKILLs the leader and
times until the standby answers ``/readyz`` 200 (it holds the lease, has loaded the state and published
it under a new version; polled every 10 ms), then starts a new standby for the next round.  The kill
falls at a random point (uniform over two try intervals) after the standby is up.  Prometheus,
Alertmanager and Envoy are not running (the passes cannot observe, which does not change the takeover).
Prints p50/p90/max of the takeover time and the versions published; checks that every takeover
published a version above the last one (none reused).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import requests
import yaml
from benchstats import percentile

from mqttlb.stack.ephemeral import free_port

TOKEN = "bench-ha-token-0123456789abcdef"
READY_TIMEOUT_SECONDS = 30.0
POLL_SECONDS = 0.01


def write_config(folder: Path, name: str, renew: float) -> tuple[Path, str]:
    """A replica's webhook.yaml in ``folder`` (shared state, EDS file and lease) and its base URL."""
    port = free_port()
    config: dict[str, Any] = {
        "listen": f"127.0.0.1:{port}",
        "xds_grpc_listen": f"127.0.0.1:{free_port()}",
        "envoy_admin": f"http://127.0.0.1:{free_port()}",  # nothing listens: observing fails, fast
        "prometheus_url": f"http://127.0.0.1:{free_port()}",
        "eds_path": str(folder / "eds" / "eds.json"),
        "overload_file": str(folder / "pressure"),
        "token_file": str(folder / "token"),
        "xds_token_file": str(folder / "xds-token"),
        "state_file": str(folder / "state.json"),
        "audit_log": str(folder / f"audit-{name}.jsonl"),
        "nodes": [{"name": f"node{i}", "host": "127.0.0.1", "port": 20000 + i} for i in (1, 2, 3)],
        "lease": {"kind": "file", "path": str(folder / "leader.lock"), "renew_seconds": renew},
    }
    path = folder / f"webhook-{name}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path, f"http://127.0.0.1:{port}"


def start(config: Path, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "mqttlb.cli", "webhook", "--config", str(config)],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def ready(url: str) -> bool:
    with contextlib.suppress(requests.RequestException):
        return requests.get(f"{url}/readyz", timeout=0.5).status_code == 200
    return False


def answers(url: str) -> bool:
    with contextlib.suppress(requests.RequestException):
        return requests.get(f"{url}/healthz", timeout=0.5).status_code == 200
    return False


def wait(check: Any, what: str, timeout: float = READY_TIMEOUT_SECONDS) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(POLL_SECONDS)


def version_of(folder: Path) -> int:
    return int(yaml.safe_load((folder / "state.json").read_text())["version"])


def kill(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(10)


def failovers(count: int, renew: float, folder: Path) -> tuple[list[float], list[int]]:
    """Takeover times (s) of ``count`` SIGKILLed leaders, and the state versions after each takeover."""
    (folder / "token").write_text(TOKEN + "\n")
    (folder / "xds-token").write_text("bench-ha-xds-token-0123456789\n")
    procs: list[subprocess.Popen[bytes]] = []
    times: list[float] = []
    versions: list[int] = []
    rng = random.Random(count)
    try:
        config, url = write_config(folder, "r0", renew)
        leader = start(config, folder / "r0.log")
        procs.append(leader)
        wait(lambda: ready(url), "the first leader")
        versions.append(version_of(folder))
        for i in range(1, count + 1):
            config, standby_url = write_config(folder, f"r{i}", renew)
            standby = start(config, folder / f"r{i}.log")
            procs.append(standby)
            wait(lambda u=standby_url: answers(u), f"standby r{i}")
            time.sleep(rng.uniform(0, 2 * renew))  # the kill falls anywhere in the standby's try interval
            killed = time.monotonic()
            kill(leader)
            wait(lambda u=standby_url: ready(u), f"standby r{i} acting")
            times.append(time.monotonic() - killed)
            versions.append(version_of(folder))
            leader = standby
    finally:
        for proc in procs:
            kill(proc)
    return times, versions


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--failovers", type=int, default=10)
    parser.add_argument("--renew", type=float, default=0.5, help="lease renew_seconds (the standby's try interval)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-ha-") as tmp:
        times, versions = failovers(args.failovers, args.renew, Path(tmp))
    ms = [t * 1000 for t in times]
    print(f"leader SIGKILL -> standby acting (/readyz 200), file lease, renew_seconds {args.renew}, "
          f"{len(ms)} failovers:")
    print(f"  p50={percentile(ms, 50):.0f} ms  p90={percentile(ms, 90):.0f} ms  max={max(ms):.0f} ms")
    reused = any(b <= a for a, b in zip(versions, versions[1:], strict=False))
    print(f"  state versions after each takeover: {versions} ({'a version was reused' if reused else 'none reused'})")
    return 1 if reused else 0


if __name__ == "__main__":
    raise SystemExit(main())
