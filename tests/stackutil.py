"""Helpers for tests that run the real stack: free ports and a stack that always stops."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from stack.config import StackConfig, load_stack_config
from stack.runner import Stack

PORT_NAMES = (
    "envoy_listener",
    "envoy_admin",
    "prometheus",
    "alertmanager",
    "broker_exporter",
    "envoy_exporter",
    "webhook",
    "supervisor",
)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port_range(count: int, attempts: int = 50) -> int:
    """First port of `count` consecutive free ports."""
    for _ in range(attempts):
        base = free_port()
        if base + count < 65535 and all(_port_is_free(base + i) for i in range(count)):
            return base
    raise RuntimeError(f"no {count} consecutive free ports found")


def free_ports_config(state_dir: Path, nodes: int = 3, **overrides: Any) -> StackConfig:
    ports: dict[str, int] = {}
    broker_base = free_port_range(nodes)
    taken = set(range(broker_base, broker_base + nodes))
    for name in PORT_NAMES:
        port = free_port()
        while port in taken:
            port = free_port()
        taken.add(port)
        ports[name] = port
    ports["broker_base"] = broker_base
    settings: dict[str, Any] = {"state_dir": str(state_dir), "nodes": nodes, "ports": ports}
    settings.update(overrides)
    return load_stack_config(env={}, overrides=settings)


@contextlib.contextmanager
def running_stack(cfg: StackConfig, timeout: float = 90.0) -> Iterator[Stack]:
    stack = Stack(cfg, out=lambda line: print(f"[stack] {line}", flush=True))
    try:
        stack.up(timeout=timeout)
        yield stack
    finally:
        stack.down(quiet=True)
