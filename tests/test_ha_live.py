"""Two live rebalancer replicas (``mqttlb webhook`` processes) with a file lease, kill -9 of the leader
during a rebalance (issue 17).

Real Mosquitto nodes and a real Envoy on gRPC ADS; Prometheus and Alertmanager are the rig's stubs (node1
hot, a rebalance alert firing).  Replica A starts first and leads; replica B follows, serving A's state
over xDS, and the Envoy is connected to B only.  Then:

* exactly one acts: only A's audit log has decisions, B answers /readyz 503, and the Envoy (fed by B)
  shows the weights A decides;
* A is SIGKILLed between two rebalance steps; B acts within ``TAKEOVER_BOUND`` (lease renew 0.5 s +
  the controller's start) and goes on rebalancing;
* no decision is applied twice: the versions of both audit logs are one increasing sequence, and B's
  first step starts from the weights of A's last step.
"""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from stackutil import free_port, process, running_envoy, wait_until
from webhookrig import (
    AUTH,
    TOKEN,
    AlertmanagerStub,
    Brokers,
    PrometheusStub,
    alert,
    api_alert,
    notification,
    post_alerts,
    rig_topology,
    sigkill,
    webhook_argv,
)

from mqttlb.contract import ALERT_CPU_HIGH, Action, OutcomeKind
from mqttlb.envoy_admin import EnvoyAdminClient
from mqttlb.stack import builders
from mqttlb.stack.topology import Topology, topology

pytestmark = pytest.mark.live

TAKEOVER_BOUND = 3.0  # seconds from SIGKILL of the leader to the standby acting (stated in docs/webhook.md)
RENEW_SECONDS = 0.5
HOT = {"node1": 0.9, "node2": 0.3, "node3": 0.3}


def replica_topology(topo: Topology) -> Topology:
    """Replica B: the same state dir (state file, EDS file, lease) and Envoy, its own HTTP and xDS ports."""
    ports = topo.settings.ports.model_copy(update={"webhook": free_port(), "xds": free_port()})
    return topology(topo.settings.model_copy(update={"ports": ports}), topo.switches)


def write_config(topo: Topology, name: str, **urls: Any) -> Path:
    topo.state.webhook_dir.mkdir(parents=True, exist_ok=True)
    topo.state.webhook_token.write_text(TOKEN + "\n")
    topo.state.xds_token.parent.mkdir(parents=True, exist_ok=True)
    topo.state.xds_token.write_text("an-xds-token-0123456789abcdef\n")
    config = {
        **builders.webhook_config(topo),
        **urls,
        "audit_log": str(topo.state.webhook_dir / f"audit-{name}.jsonl"),
        "lease": {"kind": "file", "path": str(topo.state.webhook_dir / "leader.lock"), "renew_seconds": RENEW_SECONDS},
    }
    path = topo.state.webhook_dir / f"webhook-{name}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def argv(topo: Topology, config: Path) -> list[str]:
    command = webhook_argv(topo)
    return [*command[: command.index("--config") + 1], str(config)]


def audit(topo: Topology, name: str) -> list[dict[str, Any]]:
    path = topo.state.webhook_dir / f"audit-{name}.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def steps(topo: Topology, name: str) -> list[dict[str, Any]]:
    return [e for e in audit(topo, name) if e["kind"] == OutcomeKind.REBALANCE.value and e["applied"]]


def ready(topo: Topology) -> int:
    return requests.get(topo.webhook.url("/readyz"), timeout=1).status_code


def test_kill_the_leader_during_a_rebalance(tmp_path: Path) -> None:
    topo_a = rig_topology(tmp_path, eds="grpc", policy={"cooldown_seconds": 1, "max_step": 10, "recover_step": 10})
    topo_b = replica_topology(topo_a)
    prometheus, alertmanager = PrometheusStub(), AlertmanagerStub()
    firing = alert(ALERT_CPU_HIGH, Action.REBALANCE, node="node1")
    urls = {"prometheus_url": prometheus.url, "alertmanager_urls": [alertmanager.url]}
    config_a, config_b = write_config(topo_a, "a", **urls), write_config(topo_b, "b", **urls)
    logs = topo_a.state.logs
    try:
        with contextlib.ExitStack() as stack:
            stack.enter_context(Brokers(topo_a))
            leader = stack.enter_context(process(argv(topo_a, config_a), logs / "webhook-a.log"))
            wait_until(lambda: ready(topo_a) == 200, 30, "replica A leads")
            stack.enter_context(process(argv(topo_b, config_b), logs / "webhook-b.log"))
            wait_until(lambda: ready(topo_b) == 503, 30, "replica B stands by")
            stack.enter_context(running_envoy(topo_b))  # the replicas' Envoy, on ADS to B only
            envoy = EnvoyAdminClient(topo_a.envoy_admin.url(), timeout=2)

            prometheus.set(cpu=HOT, fast=HOT)
            alertmanager.alerts = [api_alert(firing)]
            post_alerts(topo_a, notification([firing], ALERT_CPU_HIGH))
            wait_until(lambda: len(steps(topo_a, "a")) >= 2, 30, "two rebalance steps by A")
            assert steps(topo_b, "b") == [] and ready(topo_b) == 503  # exactly one acts
            decided = requests.get(topo_a.webhook.url("/status"), headers=AUTH, timeout=2).json()
            wanted = {n["node"]: n["weight"] for n in decided["nodes"]}
            _, seen = envoy.wait_for_weights(topo_a.settings.envoy_cluster, wanted, timeout=5)
            assert seen, f"the Envoy on B does not show A's weights {wanted}"
            killed = time.monotonic()
            sigkill(leader)
            wait_until(lambda: ready(topo_b) == 200, TAKEOVER_BOUND + 5, "replica B acts")
            took_over = time.monotonic() - killed
            wait_until(lambda: len(steps(topo_b, "b")) >= 1, 20, "a rebalance step by B")
    finally:
        prometheus.close()
        alertmanager.close()
    print(f"standby acting {took_over:.2f} s after SIGKILL of the leader")
    assert took_over < TAKEOVER_BOUND
    a_steps, b_steps = steps(topo_a, "a"), steps(topo_b, "b")
    versions = [e["version"] for e in audit(topo_a, "a") + audit(topo_b, "b") if e.get("applied")]
    assert versions == sorted(versions) and len(set(versions)) == len(versions)
    assert b_steps[0]["before"] == a_steps[-1]["after"]
