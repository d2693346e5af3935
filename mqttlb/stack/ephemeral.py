"""A throwaway stack on free loopback ports: for tests, benchmarks and the policy experiment."""

from __future__ import annotations

import contextlib
import logging
import random
import signal
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from mqttlb.params import SHORT_LIVED_STACK_PARAMS
from mqttlb.stack.config import StackConfig, load_stack_config
from mqttlb.stack.runner import OperatorCommands, Stack
from mqttlb.stack.topology import LOOPBACK

log = logging.getLogger(__name__)

FAST_PARAMS: dict[str, Any] = SHORT_LIVED_STACK_PARAMS  # the one fast set (mqttlb/params.py)

SERVICE_PORTS = (
    "envoy_listener",
    "envoy_admin",
    "prometheus",
    "alertmanager",
    "broker_exporter",
    "envoy_exporter",
    "webhook",
    "xds",
)


# Ports handed out for listeners come from below the kernel's ephemeral range: a port picked from inside it
# (bind to 0) can be taken by any outgoing connection before the component binds it ("Address already in
# use" at start-up, seen in CI).
LISTEN_PORT_FLOOR = 10000
EPHEMERAL_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")
_pick = random.SystemRandom()


def _ephemeral_low() -> int:
    """The first port of the kernel's ephemeral range (32768 when unreadable)."""
    try:
        return int(EPHEMERAL_RANGE_FILE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port(attempts: int = 200) -> int:
    """A loopback TCP port free right now, below the ephemeral range when there is room there (else any)."""
    high = _ephemeral_low() - 1
    if high - LISTEN_PORT_FLOOR > 1000:
        for _ in range(attempts):
            port = _pick.randrange(LISTEN_PORT_FLOOR, high)
            if _port_is_free(port):
                return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((LOOPBACK, port))
        except OSError:
            return False
    return True


def _free_range(nodes: int, taken: set[int], attempts: int = 50) -> int:
    """The first of ``nodes`` consecutive ports, all free right now and none in ``taken``."""
    for _ in range(attempts):
        base = free_port()
        wanted = range(base, base + nodes)
        if base + nodes < 65535 and not taken.intersection(wanted) and all(_port_is_free(p) for p in wanted):
            return base
    raise RuntimeError(f"no {nodes} consecutive free ports found")


def free_ports(nodes: int) -> dict[str, int]:
    """A port for every service plus two runs of ``nodes`` consecutive ports (brokers' MQTT and, for HiveMQ
    nodes, their extension's HTTP), all free right now."""
    base = _free_range(nodes, set())
    taken = set(range(base, base + nodes))
    http_base = _free_range(nodes, taken)
    taken.update(range(http_base, http_base + nodes))
    ports = {"broker_base": base, "broker_http_base": http_base}
    for name in SERVICE_PORTS:
        port = free_port()
        while port in taken:
            port = free_port()
        taken.add(port)
        ports[name] = port
    return ports


def stack_config(state_dir: Path, nodes: int = 3, **overrides: Any) -> StackConfig:
    """The stack file's settings with a private state dir, free ports and ``overrides`` on top."""
    settings: dict[str, Any] = {"state_dir": str(state_dir), "nodes": nodes, "ports": free_ports(nodes)}
    settings.update(overrides)
    return load_stack_config(env={}, overrides=settings)


def temporary_commands(cfg: StackConfig) -> OperatorCommands:
    """What a temporary stack's messages say instead of ``make stack-down``, which acts on the user's own
    stack: the run that started it stops it; ``mqttlb stack --state-dir DIR down`` if that run was killed."""
    state = f"--state-dir {cfg.state_dir}"
    return OperatorCommands(
        f"the end of the run that started it (a temporary stack; if that run was killed: `mqttlb stack {state} down`)",
        f"`mqttlb stack {state} status`",
    )


@contextlib.contextmanager
def running_stack(
    cfg: StackConfig, out: Callable[[str], None] | None = None, timeout: float = 120.0
) -> Iterator[Stack]:
    """Start the stack, yield it, and stop it again whatever happens inside the block.

    SIGTERM (a CI timeout, `kill`) is turned into SystemExit while the block runs, so the
    stack is stopped then too -- unless the program handles SIGTERM itself (a handler set before the
    first block: the test session's, tests/sigterm_stops.py, or the experiment's), which then stays in
    charge and must raise.  SIGKILL leaves it running: `mqttlb stack --state-dir DIR down`.
    """
    stack = Stack(cfg, out=out or (lambda line: log.info("[stack] %s", line)), commands=temporary_commands(cfg))
    with _sigterm_exits():
        try:
            stack.up(timeout=timeout)
            yield stack
        finally:
            stack.down(quiet=True)


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


_sigterm_blocks = 0  # running_stack blocks open in the main thread while _exit_on_sigterm is installed


@contextlib.contextmanager
def _sigterm_exits() -> Iterator[None]:
    """SIGTERM raises SystemExit while any such block is open.  Installed by the first block (when SIGTERM
    has its default action), put back to the default by the last one to close, whatever the order the
    blocks close in: test fixtures of different scopes leave them open across each other.  A handler the
    program set itself is left alone.  Outside the main thread: no change (Python runs handlers there)."""
    global _sigterm_blocks
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    if _sigterm_blocks == 0:
        if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
            yield
            return
        signal.signal(signal.SIGTERM, _exit_on_sigterm)
    _sigterm_blocks += 1
    try:
        yield
    finally:
        _sigterm_blocks -= 1
        if _sigterm_blocks == 0:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
