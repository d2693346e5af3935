"""Envoy levers that are files: the EDS snapshot and the overload manager's injected resource.
The admin-API levers (circuit-breaker cap, read-back of applied weights) are
:class:`mqttlb.envoy_admin.EnvoyAdminClient`.  Knows nothing about policy."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from mqttlb.atomic import atomic_write_text
from mqttlb.webhook.eds import Endpoint, write_eds_file
from mqttlb.webhook.shedding import OVERLOAD_OFF, OVERLOAD_ON


def publish_eds(path: Path, version: int, cluster: str, endpoints: Sequence[Endpoint]) -> None:
    write_eds_file(path, version, cluster, endpoints)


def write_overload(path: Path, hard_stop: bool) -> None:
    """The injected-resource file the overload manager reads (pressure 0..1)."""
    path = Path(path)
    atomic_write_text(path, (OVERLOAD_ON if hard_stop else OVERLOAD_OFF) + "\n")


def read_overload(path: Path) -> str | None:
    try:
        return Path(path).read_text().strip()
    except FileNotFoundError:
        return None
