"""The operator's eviction requests on a controller over fakes: what is refused, what is audited.

Found by a new-user trial: a rebalance request on a balanced cluster and a stop with nothing running
answered 202 and left no trace; a stopped evacuation was not audited; a dry run with ``evacuate: false``
previewed an evacuation; the Mosquitto plugin's own rate bound stayed at 100 when the lever's was higher.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from webhookhttp import AUTH, FakeEvictionSide, alert, build, notification

from mqttlb import contract
from mqttlb.brokers.control import MosquittoControl
from mqttlb.stack.ephemeral import stack_config
from mqttlb.stack.render import mosquitto_config
from mqttlb.stack.topology import native_topology
from mqttlb.webhook.evict_lever import EvictLever


def evacuate_steps(audit: Path) -> list[tuple[str, str]]:
    entries = [json.loads(line) for line in audit.read_text().splitlines() if line.strip()]
    return [(e["after"]["node"], e["reason"]) for e in entries if e["kind"] == contract.OutcomeKind.EVACUATE.value]


def test_rebalance_on_a_balanced_cluster_is_refused_and_says_why(tmp_path: Path) -> None:
    harness = build(tmp_path, cpu={"node1": 0.5, "node2": 0.52, "node3": 0.49})
    harness.controller.evict_lever = EvictLever({n: FakeEvictionSide() for n in harness.config.node_names})
    harness.controller.reconcile_once()
    answer = harness.client.post("/rebalance", json={}, headers=AUTH)
    assert answer.status_code == 409 and "nothing to rebalance" in answer.get_json()["error"], answer.get_json()
    harness.controller.reconcile_once()
    assert not harness.controller.state.evict_armed


def test_an_evacuation_is_audited_from_start_to_stop_and_a_stop_needs_one_running(tmp_path: Path) -> None:
    harness = build(tmp_path, cpu={"node1": 0.5, "node2": 0.5, "node3": 0.5})
    sides = {n: FakeEvictionSide() for n in harness.config.node_names}
    harness.controller.evict_lever = EvictLever(sides)
    harness.controller.reconcile_once()
    nothing = harness.client.post("/evacuate", json={"node": "node2", "evacuate": False}, headers=AUTH)
    assert nothing.status_code == 409 and "no evacuation of node2 is running" in nothing.get_json()["error"]
    mixed = harness.client.post("/evacuate", json={"node": "node2", "evacuate": False, "dry_run": True}, headers=AUTH)
    assert mixed.status_code == 400
    assert harness.client.post("/evacuate", json={"node": "node2"}, headers=AUTH).status_code == 202
    harness.controller.reconcile_once()  # drained
    harness.controller.reconcile_once()  # evacuating, first batch
    assert sides["node2"].evicted and harness.controller.state.evacuating == ["node2"]
    assert harness.client.post("/evacuate", json={"node": "node2", "evacuate": False}, headers=AUTH).status_code == 202
    harness.controller.reconcile_once()
    assert harness.controller.state.evacuating == [] and "node2" in harness.controller.state.draining
    assert evacuate_steps(Path(harness.config.audit_log)) == [
        ("node2", "operator request: start"),
        ("node2", "operator request: stop"),
    ]


def test_an_evacuation_that_empties_its_node_ends_audited_as_complete(tmp_path: Path) -> None:
    harness = build(tmp_path, cpu={"node1": 0.5, "node2": 0.5, "node3": 0.5})
    harness.controller.evict_lever = EvictLever({n: FakeEvictionSide(count=5) for n in harness.config.node_names})
    harness.controller.reconcile_once()
    assert harness.client.post("/evacuate", json={"node": "node3"}, headers=AUTH).status_code == 202
    for _ in range(4):
        harness.controller.reconcile_once()
    assert evacuate_steps(Path(harness.config.audit_log)) == [
        ("node3", "operator request: start"),
        ("node3", "complete: nothing evictable left"),
    ]


@pytest.mark.parametrize(("rate", "bound"), [(20.0, 100), (250.0, 250)])
def test_the_plugin_rate_bound_is_never_below_the_levers(tmp_path: Path, rate: float, bound: int) -> None:
    cfg = stack_config(tmp_path / "state", nodes=1, params={"eviction": {"max_per_second": rate}})
    topo = native_topology(cfg)
    assert f"plugin_opt_max_per_second {bound}" in mosquitto_config(topo, topo.nodes[0]).splitlines()


def test_a_password_without_a_username_is_refused() -> None:
    with pytest.raises(ValueError, match="password_file needs username"):
        MosquittoControl.model_validate({"kind": "mosquitto", "password_file": "/x"})


def test_an_evacuation_waits_while_envoy_sheds_and_the_preview_says_so(tmp_path: Path) -> None:
    """A shed level in force caps new connections at or below the count: an evacuated client may not get back
    in (benchmark, 2026-12-01: 467 failed reconnects after a batch while shedding).  The evacuation pauses and
    resumes once shedding lifts; a dry run says why it would wait."""
    harness = build(tmp_path, cpu={"node1": 0.9, "node2": 0.9, "node3": 0.9})
    sides = {n: FakeEvictionSide() for n in harness.config.node_names}
    harness.controller.evict_lever = EvictLever(sides)
    harness.controller.reconcile_once()
    assert harness.client.post("/evacuate", json={"node": "node2"}, headers=AUTH).status_code == 202
    harness.controller.reconcile_once()  # drained
    harness.controller.reconcile_once()  # evacuating, first batch
    before = len(sides["node2"].evicted)
    assert before and harness.controller.state.evacuating == ["node2"]
    shed = alert(contract.ALERT_CPU_CRITICAL, None, action=contract.Action.SHED.value)
    assert harness.client.post("/alerts", json=notification(shed), headers=AUTH).status_code == 200
    for level in (1, 2):  # one level stricter per step interval
        harness.controller.reconcile_once()
        assert harness.controller.state.shed_level == level
        harness.clock.advance(40)
    assert len(sides["node2"].evicted) == before and harness.controller.state.evacuating == ["node2"]
    preview = harness.client.post("/evacuate", json={"node": "node2", "dry_run": True}, headers=AUTH).get_json()
    assert preview["batches"][0]["waiting"].startswith("new connections are being shed (level ")


def test_status_and_rebalance_say_the_lever_waits_while_envoy_sheds(tmp_path: Path) -> None:
    """Trial of 2026-12-01: at shed level 1 with nothing armed, `mqttlb status` said "available, not armed" and
    nothing more, and `POST /rebalance` answered a bare 202, though nothing would be evicted."""
    harness = build(tmp_path, cpu={"node1": 0.95, "node2": 0.85, "node3": 0.75})
    harness.controller.evict_lever = EvictLever({n: FakeEvictionSide() for n in harness.config.node_names})
    harness.controller.reconcile_once()
    assert harness.controller.status()["eviction"]["waiting"] is None
    shed = alert(contract.ALERT_CPU_CRITICAL, None, action=contract.Action.SHED.value)
    assert harness.client.post("/alerts", json=notification(shed), headers=AUTH).status_code == 200
    harness.controller.reconcile_once()
    waiting = "new connections are being shed (level 1): an evicted client might not get back in"
    assert harness.controller.status()["eviction"]["waiting"].startswith(waiting)
    answer = harness.client.post("/rebalance", json={}, headers=AUTH)
    assert answer.status_code == 202 and answer.get_json()["waiting"].startswith(waiting)


def test_an_empty_rebalance_body_is_refused_like_the_other_operator_routes(tmp_path: Path) -> None:
    """Trial: a bare `curl -X POST .../rebalance` armed the lever, where /drain and /evacuate refuse it."""
    harness = build(tmp_path, cpu={"node1": 0.95, "node2": 0.5, "node3": 0.45})
    harness.controller.evict_lever = EvictLever({n: FakeEvictionSide() for n in harness.config.node_names})
    harness.controller.reconcile_once()
    for route in ("/rebalance", "/drain", "/evacuate"):
        answer = harness.client.post(route, data=b"", headers=AUTH)
        assert answer.status_code == 400 and "not valid JSON" in answer.get_json()["error"], route
    harness.controller.reconcile_once()
    assert not harness.controller.state.evict_armed
