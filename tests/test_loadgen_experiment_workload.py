"""The experiment's built-in workload and its report comparison (pure, no processes)."""

from __future__ import annotations

import pytest

from mqttlb.loadgen.balance import BalanceSummary
from mqttlb.loadgen.engine import shard_members
from mqttlb.loadgen.experiment import main
from mqttlb.loadgen.experiment_report import PolicyResult, comparison_lines, improvement, policy_table
from mqttlb.loadgen.experiment_workload import LINKS_PER_SITE, experiment_workload
from mqttlb.loadgen.report import Report


def _workload(duration: float = 180.0, sites: int = 3):
    return experiment_workload(
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


def _result(name: str, msd: float) -> PolicyResult:
    balance = BalanceSummary(
        mean_cpu={"node1": 0.5, "node2": 0.5},
        cpu_msd_mean=msd,
        cpu_msd_max=msd * 2,
        connections_msd_mean=0.0,
        connections_msd_max=0.0,
        final_connections={"node1": 1, "node2": 1},
        settle_s=None,
        window_start_s=60,
        samples=30,
    )
    load = Report("w", 1, 1.0, 1, 1, 1, {}, 0, 1, {"0": 1, "1": 0}, 0, 0, {"lost": 0}, {})
    return PolicyResult(name, name, load, balance, {"rebalance": 3}, 0)


def test_improvement_ratio_and_table() -> None:
    results = [_result("round-robin", 0.09), _result("weighted-cpu", 0.02)]
    assert improvement(results, "round-robin", "weighted-cpu") == pytest.approx(4.5)
    assert improvement(results, "least-request", "weighted-cpu") is None
    assert improvement(
        [_result("round-robin", 0.09), _result("weighted-cpu", 0.0)], "round-robin", "weighted-cpu"
    ) == float("inf")
    lines = comparison_lines([*results, _result("least-request", 0.01)])
    assert (
        lines[0]
        == "- weighted-cpu vs round-robin: mean CPU max squared deviation 4.5x lower (0.0900 -> 0.0200)."
    )
    assert (
        lines[1]
        == "- weighted-cpu vs least-request: mean CPU max squared deviation 2.0x higher (0.0100 -> 0.0200)."
    )
    table = policy_table(results, ["node1", "node2"])
    assert "| round-robin | 50 % | 50 % | 0.0900 / 0.1800 |" in table


@pytest.mark.parametrize(
    "argv",
    [
        ["--sites", "0"],
        ["--uplink-rate", "-1"],
        ["--mobiles", "0"],
        ["--mobile-rate", "0"],
        ["--policies", "round-robin,nope"],
        ["--duration", "2"],
        ["--node-cpu-cores", "0"],
    ],
)
def test_bad_flags_exit_2_and_write_nothing(argv: list[str], tmp_path, capsys) -> None:
    out = tmp_path / "report"
    assert main([*argv, "--out", str(out)]) == 2
    assert "mqttlb experiment:" in capsys.readouterr().err
    assert not out.exists()
