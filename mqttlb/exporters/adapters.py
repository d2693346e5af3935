"""Build one adapter per configured node (the only place that knows every broker kind)."""

from __future__ import annotations

from mqttlb.exporters.broker_collector import NodeEntry
from mqttlb.exporters.broker_config import BrokerExporterConfig, BrokerTargetConfig
from mqttlb.exporters.hivemq_adapter import HiveMQAdapter
from mqttlb.exporters.mosquitto_adapter import MosquittoAdapter
from mqttlb.exporters.node_adapter import NodeAdapter
from mqttlb.secure import read_secret


def build_adapter(node: BrokerTargetConfig, config: BrokerExporterConfig) -> NodeAdapter:
    """The adapter of ``node``; raises SecretError (a ValueError) when its password or TLS files fail."""
    if node.kind == "mosquitto":
        stale_after = config.stale_factor * config.sys_interval_for(node)
        password = read_secret(node.password_file, "password_file") if node.password_file is not None else None
        return MosquittoAdapter(
            node.name,
            node.address,
            node.pid_file,
            stale_after,
            username=node.username,
            password=password,
            tls=node.tls.context() if node.tls is not None else None,
        )
    if node.kind == "hivemq":
        assert node.metrics_url is not None  # enforced by the config model
        return HiveMQAdapter(node.name, node.address, node.metrics_url, node.metric_suffix)
    raise ValueError(f"unknown broker kind {node.kind!r}")


def build_nodes(config: BrokerExporterConfig) -> list[NodeEntry]:
    return [NodeEntry(build_adapter(node, config), node.cpu_cores) for node in config.nodes]
