"""The reconcile loop with a fake clock and fake adapters: notifications only change the firing set,
one pass decides for the whole set, and the order, duplication and timing of notifications do not
change what the weights become."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from mqttlb import contract
from mqttlb.contract import OutcomeKind
from mqttlb.webhook.audit import AuditLog
from mqttlb.webhook.config import WebhookConfig
from mqttlb.webhook.controller import Controller, LeverError, Snapshot
from mqttlb.webhook.payload import parse_notification
from mqttlb.webhook.plan import Observation
from mqttlb.webhook.policy import NodeSample
from mqttlb.webhook.shedding import ShedPlan

NODES = ["node1", "node2", "node3"]
T0 = 1_700_000_000.0


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


class FakeWorld:
    """Observer + Publisher + ShedLever: CPU per node is set by the test; Envoy applies what is published."""

    def __init__(self) -> None:
        self.cpu = dict.fromkeys(NODES, 0.3)
        self.published: list[Snapshot] = []
        self.shed: list[ShedPlan] = []
        self.fail_publish = False

    def observe(self, now: float) -> Observation:
        samples = {n: NodeSample(cpu=c, connections=100.0, age_seconds=1.0) for n, c in self.cpu.items()}
        return Observation(samples=samples, fast_cpu=dict(self.cpu), active_connections=300, cluster_connections=300)

    def applied_weights(self) -> dict[str, int]:
        return self.published[-1].weights if self.published else {}

    def publish(self, snapshot: Snapshot) -> None:
        if self.fail_publish:
            raise LeverError("eds_write", "disk full")
        self.published.append(snapshot)

    def published_version(self) -> int | None:
        return self.published[-1].version if self.published else None

    def apply(self, plan: ShedPlan) -> None:
        self.shed.append(plan)

    def in_force(self, plan: ShedPlan) -> bool:
        return bool(self.shed) and self.shed[-1] == plan


def make_config(tmp_path: Path, **overrides: Any) -> WebhookConfig:
    data: dict[str, Any] = {
        "cluster": "local",
        "eds_path": str(tmp_path / "eds" / "eds.json"),
        "overload_file": str(tmp_path / "pressure"),
        "state_file": str(tmp_path / "state.json"),
        "audit_log": str(tmp_path / "audit.jsonl"),
        "nodes": [{"name": n, "host": "127.0.0.1", "port": 1883 + i} for i, n in enumerate(NODES)],
        "scrape_interval": "5s",
        # the shipped params (step interval = 5 s scrape + 30 s rate window = 35 s) except early
        # steering, which these tests keep out of the way (CPU stays below cpu_high unless asked)
        "params_overrides": {},
        **overrides,
    }
    return WebhookConfig.model_validate(data)


def make_controller(tmp_path: Path, world: FakeWorld, clock: Clock, **overrides: Any) -> Controller:
    config = make_config(tmp_path, **overrides)
    controller = Controller(config, observer=world, publisher=world, shed_lever=world, clock=clock)
    controller.start()
    return controller


def notification(
    alertname: str, status: str, starts_at: str, node: str | None = None, action: str = "rebalance"
) -> dict[str, Any]:
    labels = {"alertname": alertname, contract.CLUSTER_LABEL: "local", "action": action}
    labels |= {"node": node} if node else {}
    return {
        "version": "4",
        "groupKey": f'{{}}:{{alertname="{alertname}"}}',
        "status": status,
        "receiver": "mqttlb-webhook",
        "alerts": [
            {
                "status": status,
                "labels": labels,
                "startsAt": starts_at,
                "endsAt": "0001-01-01T00:00:00Z" if status == "firing" else "2023-11-14T22:30:00Z",
            }
        ],
    }


def deliver(controller: Controller, document: dict[str, Any], clock: Clock) -> bool:
    parsed = parse_notification(json.dumps(document).encode())
    return controller.firing.apply(parsed.alerts, clock()).changed


def weight_changes(controller: Controller) -> list[dict[str, Any]]:
    return [e for e in AuditLog(controller.config.audit_log).read() if e["kind"] in ("rebalance", "recover")]


HOT = {"node1": 0.7, "node2": 0.3, "node3": 0.2}  # below cpu_high 0.75: only alerts make it steer
CPU_HIGH = notification("MqttBrokerCpuHigh", "firing", "2023-11-14T22:13:20.000Z", node="node1")
IMBALANCED = notification("MqttClusterImbalanced", "firing", "2023-11-14T22:13:25.000Z")


def steered_controller(
    tmp_path: Path, *alerts: dict[str, Any], **overrides: Any
) -> tuple[Controller, FakeWorld, Clock]:
    """A started controller (config ``overrides``) whose cluster runs at ``HOT``, after ``alerts``
    (notification documents) were delivered and one pass ran."""
    world, clock = FakeWorld(), Clock()
    controller = make_controller(tmp_path, world, clock, **overrides)
    world.cpu = dict(HOT)
    for document in alerts:
        deliver(controller, document, clock)
    controller.reconcile_once()
    return controller, world, clock


def test_start_publishes_neutral_under_a_new_version(tmp_path: Path) -> None:
    world, clock = FakeWorld(), Clock()
    make_controller(tmp_path, world, clock)
    assert [s.version for s in world.published] == [1]
    assert world.published[0].weights == dict.fromkeys(NODES, 100)
    again = make_controller(tmp_path, world, clock)  # a restart never reuses a version
    assert [s.version for s in world.published] == [1, 2]
    assert again.state.version == 2


def test_a_notification_only_updates_the_firing_set(tmp_path: Path) -> None:
    world, clock = FakeWorld(), Clock()
    controller = make_controller(tmp_path, world, clock)
    world.cpu = dict(HOT)
    assert deliver(controller, CPU_HIGH, clock)
    assert len(world.published) == 1  # nothing acted yet: the loop decides
    report = controller.reconcile_once()
    assert [s.kind for s in report.steps] == [OutcomeKind.REBALANCE]
    assert world.published[-1].weights["node1"] < 100


def test_ha_copies_at_any_offset_up_to_repeat_interval_cause_no_extra_step(tmp_path: Path) -> None:
    controller, world, clock = steered_controller(tmp_path, CPU_HIGH)
    first = world.published[-1]
    # the second Alertmanager's copy at +15.2 s, retries, and repeat_interval re-sends up to 30 s
    for offset in (0.1, 15.2, 15.3, 29.9):
        clock.now = T0 + offset
        assert not deliver(controller, CPU_HIGH, clock)
        controller.reconcile_once()
    assert world.published[-1] == first
    assert len(weight_changes(controller)) == 1
    # the next step comes from the loop's own cadence (one step interval), not from a copy
    clock.now = T0 + controller.timing.step_seconds + 0.1
    controller.reconcile_once()
    assert len(weight_changes(controller)) == 2


def test_recovery_starts_only_after_every_rebalance_alert_resolved(tmp_path: Path) -> None:
    controller, world, clock = steered_controller(tmp_path, CPU_HIGH, IMBALANCED)
    steered = world.published[-1].weights
    world.cpu = dict.fromkeys(NODES, 0.3)  # even now: recovery would not be held
    clock.now += controller.timing.step_seconds + 1
    resolved = notification("MqttClusterImbalanced", "resolved", "2023-11-14T22:13:25.000Z")
    deliver(controller, resolved, clock)
    report = controller.reconcile_once()
    # MqttBrokerCpuHigh still fires: the loop keeps steering by CPU, it never walks back to neutral
    assert [s.kind for s in report.steps] in ([OutcomeKind.REBALANCE], [OutcomeKind.NOOP])
    assert "MqttBrokerCpuHigh firing" in report.steps[0].reason
    assert world.published[-1].weights != dict.fromkeys(NODES, 100) and steered["node1"] < 100
    deliver(controller, notification("MqttBrokerCpuHigh", "resolved", "2023-11-14T22:13:20.000Z", node="node1"), clock)
    clock.now += controller.timing.step_seconds + 1
    report = controller.reconcile_once()
    assert [s.kind for s in report.steps] == [OutcomeKind.RECOVER]


def test_recovery_holds_while_the_spread_persists(tmp_path: Path) -> None:
    controller, world, clock = steered_controller(tmp_path, CPU_HIGH)
    deliver(controller, notification("MqttBrokerCpuHigh", "resolved", "2023-11-14T22:13:20.000Z", node="node1"), clock)
    clock.now += controller.timing.step_seconds + 1
    report = controller.reconcile_once()
    assert [s.kind for s in report.steps] == [OutcomeKind.HOLD]
    holds = [e for e in AuditLog(controller.config.audit_log).read() if e["kind"] == "hold"]
    for _ in range(5):  # a persisting hold is audited once, not once per pass
        clock.now += 1
        controller.reconcile_once()
    assert len([e for e in AuditLog(controller.config.audit_log).read() if e["kind"] == "hold"]) == len(holds) == 1


def test_many_groups_resolving_at_once_take_one_step(tmp_path: Path) -> None:
    controller, world, clock = steered_controller(tmp_path, CPU_HIGH, IMBALANCED)
    world.cpu = dict.fromkeys(NODES, 0.3)
    clock.now += controller.timing.step_seconds + 1
    deliver(controller, notification("MqttClusterImbalanced", "resolved", "2023-11-14T22:13:25.000Z"), clock)
    deliver(controller, notification("MqttBrokerCpuHigh", "resolved", "2023-11-14T22:13:20.000Z", node="node1"), clock)
    before = len(weight_changes(controller))
    for _ in range(3):
        controller.reconcile_once()
    assert len(weight_changes(controller)) == before + 1


def test_a_publish_failure_is_counted_and_repaired_by_the_next_pass(tmp_path: Path) -> None:
    world, clock = FakeWorld(), Clock()
    controller = make_controller(tmp_path, world, clock)
    world.cpu = dict(HOT)
    deliver(controller, CPU_HIGH, clock)
    world.fail_publish = True
    controller.reconcile_once()
    committed = controller.state
    assert world.published[-1].version < committed.version  # committed (journal) but not published
    world.fail_publish = False
    clock.now += 1
    report = controller.reconcile_once()
    assert world.published[-1].version == committed.version
    assert world.published[-1].weights == committed.weights
    assert report.failures == ()
    text = controller.metrics.registry.get_sample_value(
        "mqttlb_webhook_action_failures_total", {"kind": "publish", "reason": "eds_write"}
    )
    assert text == 1


def test_dry_run_decides_and_audits_but_does_not_act(tmp_path: Path) -> None:
    controller, world, clock = steered_controller(tmp_path, CPU_HIGH, dry_run=True)
    assert world.published == [] and not (tmp_path / "state.json").exists()
    (entry,) = weight_changes(controller)
    assert entry["dry_run"] is True and entry["applied"] is False


def test_shedding_caps_from_a_floor_right_after_an_envoy_restart(tmp_path: Path) -> None:
    world, clock = FakeWorld(), Clock()
    controller = make_controller(tmp_path, world, clock)
    world.observe = lambda now: Observation(  # type: ignore[method-assign]
        samples={n: NodeSample(0.9, 0.0, 1.0) for n in NODES}, active_connections=0, cluster_connections=0
    )
    deliver(
        controller, notification("MqttBrokerCpuCritical", "firing", "2023-11-14T22:13:20.000Z", action="shed"), clock
    )
    controller.reconcile_once()
    (plan,) = world.shed
    assert plan.level == 1 and plan.max_connections == controller.policy.shed_min_connections


# ------------------------------------------------------------------ property: order does not matter
EPISODES = [
    ("MqttBrokerCpuHigh", "node1", "2023-11-14T22:13:20.000Z"),
    ("MqttBrokerCpuHigh", "node2", "2023-11-14T22:13:21.000Z"),
    ("MqttClusterImbalanced", None, "2023-11-14T22:13:22.000Z"),
]


def _events() -> list[dict[str, Any]]:
    events = []
    for name, node, starts in EPISODES:
        events.append(notification(name, "firing", starts, node=node))
        events.append(notification(name, "resolved", starts, node=node))
    events.append(notification("MqttBrokerCpuHigh", "firing", "2023-11-14T22:20:00.000Z", node="node1"))
    return events


PASS = {"pass": True}  # a reconcile pass between two deliveries


def _final_weights(tmp_path: Path, order: list[dict[str, Any]]) -> dict[str, int]:
    """Deliver ``order`` (notifications and PASS markers), then let the loop settle."""
    world, clock = FakeWorld(), Clock()
    controller = make_controller(tmp_path, world, clock)
    world.cpu = dict(HOT)
    for document in order:
        clock.now += 3.0
        if document is PASS:
            controller.reconcile_once()
        else:
            deliver(controller, copy.deepcopy(document), clock)
    firing = [d for d in order if d is not PASS and d["status"] == "firing"]
    for _ in range(30):  # the loop's passes, one step interval apart, until nothing moves
        clock.now += controller.timing.step_seconds + 0.5
        for document in firing:  # Alertmanager's repeat_interval re-sends (stale episodes are ignored)
            deliver(controller, copy.deepcopy(document), clock)
        controller.reconcile_once()
    return world.published[-1].weights


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_any_interleaving_duplication_and_reordering_ends_in_the_same_weights(tmp_path_factory, data) -> None:
    events = _events()
    in_order = _final_weights(tmp_path_factory.mktemp("in-order"), events)
    shuffled = data.draw(st.permutations(events))
    extra = data.draw(st.lists(st.sampled_from([*events, PASS, PASS]), max_size=10))
    positions = data.draw(st.lists(st.integers(0, len(shuffled)), min_size=len(extra), max_size=len(extra)))
    delivered = list(shuffled)
    for document, position in zip(extra, positions, strict=True):
        delivered.insert(position, document)
    assert _final_weights(tmp_path_factory.mktemp("shuffled"), delivered) == in_order


def test_an_alert_for_a_node_this_rebalancer_does_not_steer_is_left_out(tmp_path: Path) -> None:
    world, clock = FakeWorld(), Clock()
    controller = make_controller(tmp_path, world, clock)
    world.cpu = dict(HOT)
    deliver(controller, notification("MqttBrokerCpuHigh", "firing", "2023-11-14T22:13:20.000Z", node="node99"), clock)
    report = controller.reconcile_once()
    assert report.steps == ()  # no steering, nothing to recover
    assert controller.metrics.registry.get_sample_value("mqttlb_webhook_firing_alerts", {"action": "rebalance"}) == 0


def test_the_firing_gauge_follows_the_set(tmp_path: Path) -> None:
    world, clock = FakeWorld(), Clock()
    controller = make_controller(tmp_path, world, clock)
    deliver(controller, CPU_HIGH, clock)
    deliver(controller, IMBALANCED, clock)
    controller.reconcile_once()
    gauge = controller.metrics.registry.get_sample_value
    assert gauge("mqttlb_webhook_firing_alerts", {"action": "rebalance"}) == 2
    assert gauge("mqttlb_webhook_firing_alerts", {"action": "shed"}) == 0
