"""HiveMQ CE nodes for tests: the brokers/hivemq launcher (embedded HiveMQ + mqttlb extension) on
free loopback ports, each in its own process group, always stopped.

`node_command` is the product's command line (`mqttlb.brokers.hivemq_node.launcher_args`, JVM options
included, as the native stack runs a node);
`running_nodes` starts several at once and waits until each answers its availability endpoint.
"""

from __future__ import annotations

import contextlib
import re
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import requests
from stackutil import free_port, process, wait_until

from mqttlb.brokers.hivemq import API_PREFIX
from mqttlb.brokers.hivemq_node import JAR_IN_CHECKOUT, launcher_args
from mqttlb.stack.topology import HIVEMQ_METRICS_PATH, LOOPBACK, Service

REPO = Path(__file__).resolve().parents[1]
JAR = REPO / JAR_IN_CHECKOUT
BUILD = REPO / "brokers" / "hivemq" / "build.sh"
TOKEN = "test-token-0123456789abcdef"
STARTED = re.compile(rb"mqttlb-hivemq: started in (\d+) ms")


@dataclass
class Node:
    """One running node: its ports, process, log, and the launcher's own start figure (ms)."""

    name: str
    mqtt_port: int
    http_port: int
    proc: subprocess.Popen[bytes]
    log: Path
    start_seconds: float = 0.0  # from Popen to the availability endpoint answering
    launcher_start_ms: int = 0  # what the launcher printed: build + HiveMQ start + extension start

    @property
    def http(self) -> Service:
        """The extension's HTTP endpoint (availability, metrics, eviction API), as the stack's topology has one."""
        return Service(self.name, LOOPBACK, LOOPBACK, self.http_port)

    @property
    def base(self) -> str:
        """``http://127.0.0.1:<http_port>``, the eviction adapter's base URL."""
        return self.http.url()

    @property
    def metrics_url(self) -> str:
        return self.http.url(HIVEMQ_METRICS_PATH)

    def api(self, path: str) -> str:
        """The URL of ``/mqttlb/v1/<path>``."""
        return self.http.url(API_PREFIX + path)

    def rss_bytes(self) -> int:
        """Resident memory of the node's JVM, from /proc (bytes)."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise AssertionError(f"no VmRSS for pid {self.proc.pid}")


def auth(token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def node_command(mqtt_port: int, http_port: int, data_dir: Path, token_file: Path, *extra: str) -> list[str]:
    """The launcher's command line for one node on 127.0.0.1 (``extra``: more launcher options)."""
    return ["java", *launcher_args(JAR, mqtt_port, http_port, data_dir, token_file, *extra)]


def ensure_built() -> None:
    """Builds the jar if it is missing or older than its sources (offline after the first build)."""
    subprocess.run(["bash", str(BUILD)], check=True, timeout=900)


@contextlib.contextmanager
def running_nodes(tmp: Path, options: list[list[str]], timeout: float = 120.0) -> Iterator[list[Node]]:
    """One node per entry of ``options`` (extra launcher options), started together; yields when all answer."""
    ensure_built()
    token_file = tmp / "token"
    token_file.write_text(TOKEN + "\n")
    with contextlib.ExitStack() as stack:
        nodes = []
        started = time.monotonic()
        for index, extra in enumerate(options):
            name = f"hq{index + 1}"
            mqtt_port, http_port = free_port(), free_port()
            log = tmp / f"{name}.log"
            argv = node_command(mqtt_port, http_port, tmp / name, token_file, *extra)
            nodes.append(Node(name, mqtt_port, http_port, stack.enter_context(process(argv, log)), log))
        for node in nodes:
            wait_ready(node, started, timeout)
        yield nodes


def wait_ready(node: Node, started: float, timeout: float) -> None:
    def ready() -> bool:
        assert node.proc.poll() is None, f"{node.name} exited {node.proc.returncode}"
        return requests.get(node.api("availability"), timeout=1).status_code == 200

    try:
        wait_until(ready, timeout, f"{node.name} ready", interval=0.05)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{node.log.read_text()[-3000:]}") from None
    node.start_seconds = time.monotonic() - started
    found = wait_until(lambda: STARTED.search(node.log.read_bytes()), 5, f"{node.name} start line")
    assert found is not None
    node.launcher_start_ms = int(found.group(1))
