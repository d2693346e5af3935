"""How gRPC xDS is switched on: the topology's ``eds: grpc`` / ``delta-grpc`` (Envoy's bootstrap and the
webhook config), the webhook config key ``xds_grpc_listen``, and ``Rebalancer.build`` publishing every
snapshot both to the EDS file and to the xDS server."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from stackutil import loopback_topology

from mqttlb.stack import builders
from mqttlb.webhook.cli import Rebalancer
from mqttlb.webhook.config import WebhookConfig, WebhookConfigError, load_config
from mqttlb.webhook.levers import EdsFilePublisher
from mqttlb.webhook.xds_grpc import FanOutPublisher

TOKEN = "t" * 32


@pytest.mark.parametrize(("eds", "api_type"), [("grpc", "GRPC"), ("delta-grpc", "DELTA_GRPC")])
def test_ads_bootstrap_and_webhook_config(tmp_path: Path, eds: str, api_type: str) -> None:
    topo = loopback_topology(tmp_path, eds=eds)  # type: ignore[arg-type]
    boot = builders.envoy_bootstrap(topo)
    ads = boot["dynamic_resources"]["ads_config"]
    assert ads["api_type"] == api_type
    # the xDS token goes as metadata: the slot the start script fills (tests/test_xds_auth.py)
    assert ads["grpc_services"] == [
        {
            "envoy_grpc": {"cluster_name": builders.WEBHOOK_XDS_CLUSTER},
            "initial_metadata": [{"key": "authorization", "value": f"Bearer {builders.XDS_TOKEN_SLOT}"}],
        }
    ]
    clusters = {c["name"]: c for c in boot["static_resources"]["clusters"]}
    xds = clusters[builders.WEBHOOK_XDS_CLUSTER]
    assert xds["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"] == {
        "socket_address": {"address": "127.0.0.1", "port_value": topo.settings.ports.xds}
    }
    assert "http2_protocol_options" in str(xds["typed_extension_protocol_options"])
    brokers = clusters[topo.settings.envoy_cluster]
    assert brokers["eds_cluster_config"]["eds_config"] == {"resource_api_version": "V3", "ads": {}}
    assert builders.webhook_config(topo)["xds_grpc_listen"] == f"127.0.0.1:{topo.settings.ports.xds}"


def test_file_and_rest_eds_stay_without_ads(tmp_path: Path) -> None:
    for eds in ("file", "rest"):
        topo = loopback_topology(tmp_path / eds, eds=eds)  # type: ignore[arg-type]
        boot = builders.envoy_bootstrap(topo)
        assert "dynamic_resources" not in boot
        assert builders.WEBHOOK_XDS_CLUSTER not in {c["name"] for c in boot["static_resources"]["clusters"]}
        assert "xds_grpc_listen" not in builders.webhook_config(topo)


def test_a_bad_xds_address_is_refused_in_one_line(tmp_path: Path) -> None:
    topo = loopback_topology(tmp_path, eds="grpc")
    path = tmp_path / "webhook.yaml"
    path.write_text(yaml.safe_dump({**builders.webhook_config(topo), "xds_grpc_listen": "no-port"}))
    with pytest.raises(WebhookConfigError, match="xds_grpc_listen"):
        load_config(path)


def test_the_rebalancer_publishes_to_the_file_and_to_xds(tmp_path: Path) -> None:
    topo = loopback_topology(tmp_path, eds="grpc")
    config = WebhookConfig.model_validate(builders.webhook_config(topo))
    topo.state.xds_token.parent.mkdir(parents=True)
    topo.state.xds_token.write_text("x" * 32)  # the xDS streams' own token (tests/test_xds_auth.py)
    rebalancer = Rebalancer.build(config, token=TOKEN)
    assert rebalancer.xds is not None
    publisher = rebalancer.controller.publisher
    assert isinstance(publisher, FanOutPublisher) and isinstance(publisher.publishers[0], EdsFilePublisher)
    rebalancer.xds.start()
    try:
        rebalancer.controller.start()
        snapshot = rebalancer.controller.snapshot
        assert snapshot is not None and rebalancer.xds.snapshot is not None
        assert rebalancer.xds.snapshot.version == snapshot.version == publisher.publishers[0].published_version()
        assert publisher.published_version() == snapshot.version
        assert list(rebalancer.xds.snapshot.resources) == [config.envoy_cluster]
        failures = rebalancer.controller.metrics.failures.labels("publish", "xds_nack")
        before = failures._value.get()
        assert rebalancer.xds.on_nack is not None
        rebalancer.xds.on_nack()  # what the server calls for each NACK (tests/test_xds_live.py)
        assert failures._value.get() == before + 1
    finally:
        rebalancer.xds.stop()
    off = Rebalancer.build(WebhookConfig.model_validate(builders.webhook_config(loopback_topology(tmp_path / "f"))),
                           token=TOKEN)
    assert off.xds is None and isinstance(off.controller.publisher, EdsFilePublisher)
