"""The drain lever's broker side (mqttlb/webhook/availability.py): committed drains switch the nodes'
availability endpoints (HiveMQ extension), failures are retried and counted once per episode; and the
controller wires it (a drain and an undrain reach the node's side; nothing in dry run)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from test_controller import Clock, FakeWorld, make_config

from mqttlb.brokers.eviction import ClientLoad, EvictionError, EvictResult
from mqttlb.webhook.availability import AvailabilitySync
from mqttlb.webhook.controller import Controller
from mqttlb.webhook.evict_lever import EvictLever


class FakeSide:
    """An eviction side with an availability switch: records each ``set_available``; fails while ``down``."""

    def __init__(self) -> None:
        self.shared_sessions = False
        self.calls: list[bool] = []
        self.available = True
        self.down = False

    def set_available(self, available: bool) -> bool:
        self.calls.append(available)
        if self.down:
            raise EvictionError("HiveMQ at http://127.0.0.1:1: cannot reach the mqttlb extension")
        changed, self.available = self.available != available, available
        return changed

    def clients(self) -> list[ClientLoad]:
        return []

    def evict(self, client_ids: Sequence[str], **options: object) -> EvictResult:
        return EvictResult((), tuple(client_ids), (), "not here")


class NoSwitch(FakeSide):
    """An eviction side without an availability switch (Mosquitto, EMQX)."""

    set_available = None  # type: ignore[assignment]


def counting_sync(**sides: FakeSide) -> tuple[AvailabilitySync, list[int]]:
    failures: list[int] = []
    return AvailabilitySync(sides, lambda: failures.append(1), reassert_seconds=30, retry_seconds=10), failures


def test_the_first_sync_tells_every_node_then_only_changes_are_sent() -> None:
    a, b = FakeSide(), FakeSide()
    sync, failures = counting_sync(a=a, b=b)
    assert sync.sync(set(), 0.0) == {"a": True, "b": True}
    assert a.calls == b.calls == [True]
    assert sync.sync(set(), 1.0) == {}
    assert sync.sync({"a"}, 2.0) == {"a": True} and a.calls == [True, False] and not a.available
    assert sync.sync({"a"}, 3.0) == {}
    assert sync.sync(set(), 4.0) == {"a": True} and a.available and b.calls == [True]
    assert failures == []


def test_a_failed_drain_is_counted_once_retried_after_the_wait_and_a_new_wish_goes_at_once() -> None:
    a = FakeSide()
    sync, failures = counting_sync(a=a)
    sync.sync(set(), 0.0)
    a.down = True
    assert sync.sync({"a"}, 1.0) == {"a": False} and failures == [1]
    assert sync.sync({"a"}, 5.0) == {}  # in its retry wait
    assert sync.sync({"a"}, 11.0) == {"a": False} and failures == [1]  # retried, the same episode
    assert sync.sync(set(), 12.0) == {"a": False}  # a new wish (undrain) goes at once, but the node
    assert failures == [1]  # was never told draining: not counted
    assert sync.sync({"a"}, 13.0) == {"a": False} and failures == [1, 1]  # drain again: a new episode
    a.down = False
    assert sync.sync({"a"}, 23.0) == {"a": True} and not a.available
    a.down = True
    assert sync.sync(set(), 24.0) == {"a": False} and failures == [1, 1, 1]  # an undrain of a drained node


def test_an_undrained_node_down_at_start_is_retried_without_counting() -> None:
    a = FakeSide()
    a.down = True
    sync, failures = counting_sync(a=a)
    assert sync.sync(set(), 0.0) == {"a": False}
    assert sync.sync(set(), 10.0) == {"a": False} and failures == []
    a.down = False
    assert sync.sync(set(), 20.0) == {"a": True} and sync.sync(set(), 100.0) == {}


def test_a_draining_node_is_told_again_after_the_reassert_period_and_a_failed_reassert_is_not_counted() -> None:
    a = FakeSide()
    sync, failures = counting_sync(a=a)
    sync.sync({"a"}, 0.0)
    a.available = True  # the broker restarted: it comes back accepting
    assert sync.sync({"a"}, 29.0) == {}
    assert sync.sync({"a"}, 30.0) == {"a": True} and not a.available
    a.down = True
    assert sync.sync({"a"}, 60.0) == {"a": False} and failures == []
    assert sync.sync({"a"}, 65.0) == {}  # retry wait
    a.down = False
    assert sync.sync({"a"}, 70.0) == {"a": True} and sync.sync({"a"}, 71.0) == {}


def test_of_takes_only_the_sides_with_a_switch() -> None:
    switch = FakeSide()
    sync = AvailabilitySync.of({"a": switch, "b": NoSwitch()}, lambda: None)
    assert set(sync.sides) == {"a"}
    assert AvailabilitySync.of(None, lambda: None).sides == {}


def controller_with(tmp_path: Path, side: FakeSide, **overrides: object) -> tuple[Controller, Clock]:
    clock, world = Clock(), FakeWorld()
    config = make_config(tmp_path, **overrides)
    controller = Controller(
        config,
        observer=world,
        publisher=world,
        shed_lever=world,
        evict_lever=EvictLever({"node1": side}),
        clock=clock,
    )
    controller.start()
    return controller, clock


def failures(controller: Controller) -> float:
    return controller.metrics.failures.labels("drain", "availability")._value.get()


def test_a_committed_drain_and_undrain_switch_the_node_and_failures_are_counted(tmp_path: Path) -> None:
    side = FakeSide()
    controller, clock = controller_with(tmp_path, side)
    controller.reconcile_once()
    assert side.calls == [True]
    controller.request_drain("node1", True)
    controller.reconcile_once()
    assert controller.state.draining == ["node1"] and side.calls == [True, False] and not side.available
    assert controller.snapshot is not None
    assert {e.node: e.health_status for e in controller.snapshot.endpoints}["node1"] == "DRAINING"
    side.down = True
    controller.request_drain("node1", False)
    clock.now += 1
    controller.reconcile_once()
    assert controller.state.draining == [] and failures(controller) == 1  # the EDS undrain stands
    side.down = False
    clock.now += 10
    controller.reconcile_once()
    assert side.available and failures(controller) == 1


def test_dry_run_switches_nothing(tmp_path: Path) -> None:
    side = FakeSide()
    controller, _ = controller_with(tmp_path, side, dry_run=True)
    controller.request_drain("node1", True)
    controller.reconcile_once()
    assert side.calls == [] and controller.availability.sides == {}
