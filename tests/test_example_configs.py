"""The annotated example configs in exporters/ and webhook/ load with the product's own validation,
and the shipped parameter file selects the jobs the stack scrapes (names from the contract)."""

from __future__ import annotations

from pathlib import Path

from mqttlb import contract
from mqttlb.exporters.broker_config import load_config as load_broker_exporter_config
from mqttlb.params import load_params
from mqttlb.webhook.config import load_config as load_webhook_config

REPO = Path(__file__).resolve().parents[1]


def test_broker_exporter_example_loads() -> None:
    config = load_broker_exporter_config(REPO / "exporters" / "broker-exporter.example.yaml")
    assert {n.kind for n in config.nodes} == {"mosquitto", "hivemq"}


def test_webhook_example_loads_and_starts_in_dry_run() -> None:
    config = load_webhook_config(REPO / "webhook" / "webhook.example.yaml")
    assert config.dry_run is True
    assert config.params().cpu_high == 0.7 and config.params().policy.max_step == 25
    assert config.envoy_cluster == contract.ENVOY_CLUSTER
    assert config.xds_grpc_listen == "127.0.0.1:9645" and config.lease is not None and config.lease.kind == "file"


def test_shipped_selectors_name_the_contract_jobs() -> None:
    params = load_params()
    assert params.broker_selector == f'job="{contract.JOB_BROKERS}"'
    assert params.envoy_selector == f'job="{contract.JOB_ENVOY_EXPORTER}"'
    assert params.webhook_selector == f'job="{contract.JOB_WEBHOOK}"'
