"""The exporters as the stack runs them (session `live_stack`, read-only: nothing is stopped here):
every node and endpoint appears under the stack's names, Prometheus scrapes both jobs, and the
output is promtool-clean."""

from __future__ import annotations

import subprocess
import time

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families
from stackutil import exporter_headers, web_auth

from mqttlb import contract

pytestmark = pytest.mark.live


def labels_of(text: str, name: str) -> list[dict[str, str]]:
    return [
        dict(s.labels) | {"__value__": str(s.value)}
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name
    ]


def test_stack_exporters_name_every_node(live_stack) -> None:
    cfg = live_stack.cfg
    broker_url = f"http://127.0.0.1:{cfg.ports.broker_exporter}/metrics"
    envoy_url = f"http://127.0.0.1:{cfg.ports.envoy_exporter}/metrics"
    deadline = time.monotonic() + 30
    while True:  # the exporter may start before the brokers publish their first $SYS
        broker = requests.get(broker_url, headers=exporter_headers(live_stack), timeout=5).text
        ups = {lab["node"]: lab["__value__"] for lab in labels_of(broker, contract.BROKER_UP)}
        if all(v == "1.0" for v in ups.values()) or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert ups == {name: "1.0" for name in cfg.node_names}
    assert {lab[contract.CLUSTER_LABEL] for lab in labels_of(broker, contract.BROKER_CPU_SECONDS)} == {cfg.cluster}
    assert {lab["node"] for lab in labels_of(broker, contract.BROKER_CPU_SECONDS)} == set(cfg.node_names)

    envoy = requests.get(envoy_url, headers=exporter_headers(live_stack), timeout=5).text
    endpoints = labels_of(envoy, contract.ENVOY_ENDPOINT_WEIGHT)
    assert {lab["node"] for lab in endpoints} == set(cfg.node_names)
    assert {lab[contract.ENVOY_ENDPOINT_LABEL] for lab in endpoints} == {f"127.0.0.1:{p}" for p in cfg.broker_ports}
    assert {lab[contract.ENVOY_CLUSTER_LABEL] for lab in endpoints} == {cfg.envoy_cluster}

    for text in (broker, envoy):
        result = subprocess.run(
            ["promtool", "check", "metrics"], input=text, capture_output=True, text=True, timeout=30
        )
        assert (result.returncode, result.stdout, result.stderr) == (0, "", "")

    prometheus = f"http://127.0.0.1:{cfg.ports.prometheus}/api/v1/query"
    login = web_auth(live_stack)
    deadline = time.monotonic() + 30
    while True:
        result = requests.get(
            prometheus, params={"query": f'{contract.BROKER_UP}{{job="mqtt-brokers"}} == 1'}, auth=login, timeout=5
        ).json()["data"]["result"]
        envoy_up = requests.get(
            prometheus, params={"query": f'{contract.ENVOY_UP}{{job="mqttlb-envoy"}}'}, auth=login, timeout=5
        ).json()["data"]["result"]
        if (len(result) == len(cfg.node_names) and envoy_up) or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert {r["metric"]["node"] for r in result} == set(cfg.node_names)
    assert envoy_up and envoy_up[0]["value"][1] == "1"
