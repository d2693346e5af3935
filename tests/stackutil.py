"""Helpers for tests that run the real stack: free ports and a stack that always stops."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from mqttlb.stack.config import StackConfig
from mqttlb.stack.ephemeral import free_port
from mqttlb.stack.ephemeral import running_stack as _running_stack
from mqttlb.stack.ephemeral import stack_config as free_ports_config
from mqttlb.stack.runner import Stack

__all__ = ["free_port", "free_ports_config", "running_stack"]


@contextlib.contextmanager
def running_stack(cfg: StackConfig, timeout: float = 90.0) -> Iterator[Stack]:
    with _running_stack(cfg, out=lambda line: print(f"[stack] {line}", flush=True), timeout=timeout) as stack:
        yield stack
