"""Start the real local stack (``stack.runner.Stack``) on free loopback ports for one experiment run."""

from __future__ import annotations

import contextlib
import logging
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from loadgen.standalone import free_port
from stack.config import StackConfig, load_stack_config
from stack.runner import Stack

log = logging.getLogger(__name__)

SERVICE_PORTS = (
    "envoy_listener",
    "envoy_admin",
    "prometheus",
    "alertmanager",
    "broker_exporter",
    "envoy_exporter",
    "webhook",
    "supervisor",
)


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_ports(nodes: int, attempts: int = 50) -> dict[str, int]:
    """A port for every service plus ``nodes`` consecutive broker ports, all free right now."""
    for _ in range(attempts):
        base = free_port()
        if base + nodes < 65535 and all(_port_is_free(base + i) for i in range(nodes)):
            break
    else:
        raise RuntimeError(f"no {nodes} consecutive free ports found")
    taken = set(range(base, base + nodes))
    ports = {"broker_base": base}
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


@contextlib.contextmanager
def running_stack(
    cfg: StackConfig, out: Callable[[str], None] | None = None, timeout: float = 120.0
) -> Iterator[Stack]:
    stack = Stack(cfg, out=out or (lambda line: log.info("[stack] %s", line)))
    try:
        stack.up(timeout=timeout)
        yield stack
    finally:
        stack.down(quiet=True)
