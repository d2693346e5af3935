"""The local stack with ``eds: grpc`` (MQTTLB_EDS=grpc): its Envoy bootstraps to ADS on the webhook's
xDS server with the xDS token (never the webhook's: Envoy's admin shows it, and no route takes it), takes every
node from it, and a drain posted to the webhook reaches Envoy over the stream; the printed addresses list the
xDS server and each answers."""

from __future__ import annotations

import pytest
import requests
import yaml
from prometheus_client.parser import text_string_to_metric_families
from stackutil import free_ports_config, running_stack, wait_until
from test_stack_live import assert_every_printed_address_answers

from mqttlb import contract
from mqttlb.envoy_admin import EnvoyAdminClient
from mqttlb.stack import builders
from mqttlb.stack.addresses import stack_addresses

pytestmark = pytest.mark.live


def xds_metrics(url: str, token: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = requests.get(url, headers={"Authorization": f"Bearer {token}"}, timeout=5).text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name.startswith("mqttlb_webhook_xds")
    }


def test_the_stack_serves_envoy_over_grpc_xds(tmp_path) -> None:  # type: ignore[no-untyped-def]
    cfg = free_ports_config(tmp_path / "state", eds="grpc")
    with running_stack(cfg) as stack:
        topo = stack.topology
        assert topo.switches.eds == "grpc"
        boot = yaml.safe_load(topo.files.envoy_config.read_text())
        assert boot["dynamic_resources"]["ads_config"]["api_type"] == "GRPC"
        webhook = yaml.safe_load(topo.files.webhook_config.read_text())
        assert webhook["xds_grpc_listen"] == f"127.0.0.1:{cfg.ports.xds}"
        envoy = EnvoyAdminClient(topo.envoy_admin.url(), timeout=2)
        hosts = envoy.cluster(cfg.envoy_cluster).by_node()
        assert sorted(hosts) == [n.name for n in topo.nodes]
        token = topo.state.webhook_token.read_text().strip()
        xds_token = topo.state.xds_token.read_text().strip()
        # Envoy sent the xDS token on the stream (the xDS server wants it): its bootstrap holds a slot, the 0600 copy
        # it reads the token (builders.envoy_command); Envoy's admin (no login) shows that one, never the webhook's
        boot_text, filled = topo.files.envoy_config.read_text(), topo.files.envoy_bootstrap.read_text()
        assert xds_token not in boot_text and xds_token in filled and token not in filled
        assert topo.files.envoy_bootstrap.stat().st_mode & 0o777 == 0o600
        dump = requests.get(topo.envoy_admin.url("/config_dump"), timeout=5).text
        assert xds_token in dump and token not in dump
        refused = requests.post(topo.webhook.url("/drain"), json={"node": "node2", "draining": True},
                                headers={"Authorization": f"Bearer {xds_token}"}, timeout=5)
        assert refused.status_code == 401  # the xDS token reads the endpoint snapshot, nothing else
        printed = "\n".join(a.line() for a in stack_addresses(topo, topo.state.webhook_token, topo.state.logs))
        assert f"grpc://{topo.webhook_xds.reach}" in assert_every_printed_address_answers(printed)
        assert f"xDS token in {topo.state.xds_token}" in printed
        samples = xds_metrics(topo.webhook.url("/metrics"), token)
        assert samples[(contract.WEBHOOK_XDS_STREAMS, (("mode", "sotw"),))] == 1
        assert samples[(contract.WEBHOOK_XDS_IN_SYNC, ())] == 1

        answer = requests.post(
            topo.webhook.url("/drain"),
            json={"node": "node2", "draining": True},
            headers={"Authorization": f"Bearer {token}"},
            timeout=5,
        )
        assert answer.status_code == 202, answer.text
        wait_until(lambda: envoy.cluster(cfg.envoy_cluster).by_node()["node2"].health == "draining", 10,
                   "node2 draining in Envoy over xDS")
        assert builders.WEBHOOK_XDS_CLUSTER in {c["name"] for c in boot["static_resources"]["clusters"]}
