"""A dry-run webhook's evict lever keeps the real lever's cadence (review finding): the dry run commits no
state, so the controller keeps the lever's trigger episode and each donor's last batch itself.  Without
that, a repeated rebalance request listed the donor's clients on every pass, and an imbalance alert never
armed the lever at all in dry run."""

from __future__ import annotations

from pathlib import Path

from webhookhttp import AUTH, FakeEvictionSide, Harness, alert, build

from mqttlb.brokers.eviction import ClientLoad
from mqttlb.webhook.evict_lever import EvictLever

HOT = {"node1": 0.9, "node2": 0.3, "node3": 0.3}
PASSES = 48


class ListingSide(FakeEvictionSide):
    """The fake eviction side, noting the controller's clock at every client listing (one broker round trip)."""

    def __init__(self, harness: Harness) -> None:
        super().__init__()
        self.harness = harness
        self.listed_at: list[float] = []

    def clients(self) -> list[ClientLoad]:
        self.listed_at.append(self.harness.clock())
        return super().clients()


def _dry_run(tmp_path: Path) -> tuple[Harness, ListingSide]:
    harness = build(tmp_path, cpu=HOT, dry_run=True)
    donor = ListingSide(harness)
    harness.controller.evict_lever = EvictLever(
        {"node1": donor, "node2": FakeEvictionSide(), "node3": FakeEvictionSide()}
    )
    return harness, donor


def _passes(harness: Harness, before_each=lambda: None) -> None:
    for _ in range(PASSES):
        before_each()
        harness.controller.reconcile_once()
        harness.clock.advance(harness.controller.pass_seconds)


def _gaps(times: list[float]) -> list[float]:
    return [b - a for a, b in zip(times[:-1], times[1:], strict=True)]


def test_repeated_rebalance_requests_in_dry_run_list_the_donor_once_per_cooldown(tmp_path: Path) -> None:
    harness, donor = _dry_run(tmp_path)
    cooldown = harness.controller.eviction.cooldown_seconds
    assert cooldown > 2 * harness.controller.pass_seconds  # else the check below could not fail

    _passes(harness, lambda: harness.client.post("/rebalance", json={}, headers=AUTH))

    span = PASSES * harness.controller.pass_seconds
    assert 2 <= len(donor.listed_at) <= span // cooldown + 1, donor.listed_at
    assert min(_gaps(donor.listed_at)) >= cooldown, donor.listed_at
    assert donor.evicted == [], "a dry run evicted"
    assert harness.controller.state.last_eviction == {}, "a dry run committed the lever's state"


def test_a_rebalance_alert_arms_the_dry_run_lever_as_it_would_the_real_one(tmp_path: Path) -> None:
    harness, donor = _dry_run(tmp_path)
    settings = harness.controller.eviction
    notification = {"version": "4", "status": "firing", "receiver": "mqttlb", "groupKey": "g", "alerts": [alert()]}
    assert harness.client.post("/alerts", json=notification, headers=AUTH).status_code == 200
    start = harness.clock()

    _passes(harness)

    assert donor.listed_at, "the dry-run lever never armed"
    assert donor.listed_at[0] - start >= settings.after_seconds  # the automatic trigger's wait, as in a real run
    assert min(_gaps(donor.listed_at), default=settings.cooldown_seconds) >= settings.cooldown_seconds
    assert donor.evicted == [] and not harness.controller.state.evict_armed
