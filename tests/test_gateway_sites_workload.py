"""The gateway-sites scenario's workload (pure, no processes)."""

from __future__ import annotations

from mqttlb.loadgen.engine import shard_members
from mqttlb.loadgen.scenarios.workloads import LINKS_PER_SITE, gateway_sites_workload
from mqttlb.loadgen.workload import Workload


def _workload(duration: float = 180.0, sites: int = 3) -> Workload:
    return gateway_sites_workload(
        1883, duration, 5, sites=sites, uplink_rate=300, mobiles=60, mobile_rate=30, sensors=100
    )


def test_sites_connect_first_each_uplink_before_its_links() -> None:
    w = _workload()
    # the connect order at the start: uplink0, link0 x2, uplink1, link1 x2, ... then everyone else
    first = sorted((p.start, p.name) for p in w.profiles)
    names = [name for _, name in first[: 2 * 3]]
    assert names == ["uplink0", "link0", "uplink1", "link1", "uplink2", "link2"]
    site_end = max(p.start for p in w.profiles if p.name.startswith(("uplink", "link")))
    others = [p for p in w.profiles if not p.name.startswith(("uplink", "link"))]
    assert all(p.start > site_end + 0.5 for p in others)
    # 1 uplink + LINKS_PER_SITE links per site: a period of 3 connections, as many as the nodes
    assert 1 + LINKS_PER_SITE == 3
    assert all(p.count == LINKS_PER_SITE and p.qos == 1 for p in w.profiles if p.name.startswith("link"))
    assert all(p.session is None for p in w.profiles if p.name.startswith(("uplink", "link")))


def test_steerable_load_joins_late_and_churns() -> None:
    w = _workload(duration=180)
    by_name = {p.name: p for p in w.profiles}
    mobile, late = by_name["mobile"], by_name["late"]
    assert mobile.start == 30 and late.start == 60
    assert mobile.session is not None and (mobile.session.a, mobile.session.b) == (20, 60)
    assert by_name["sensor"].session is not None and by_name["sensor"].checks_delivery
    # the same seed gives the same clients whatever the sharding
    assert len(shard_members(w, 0, 1)) == w.total_clients == 3 * 3 + 60 + 200


def test_counts_follow_the_arguments() -> None:
    w = gateway_sites_workload(1883, 60, 3, sites=4, uplink_rate=1000, mobiles=10, mobile_rate=5, sensors=20)
    names = [p.name for p in w.profiles]
    assert names[:2] == ["uplink0", "link0"] and names[-3:] == ["mobile", "sensor", "late"]
    assert [p.count for p in w.profiles[-3:]] == [10, 20, 20] and w.profiles[-1].start == 20
    assert all(p.session is not None for p in w.profiles[-3:])  # the steerable load churns
