"""Balance figures and the experiment report (pure), and the experiment CLI's input checks."""

from __future__ import annotations

from pathlib import Path

import pytest
from stackutil import sample_report

from mqttlb.loadgen.balance import (
    Sample,
    connection_share_msd,
    max_squared_deviation,
    summarise,
    time_to_settle,
)
from mqttlb.loadgen.experiment import POLICIES, main, parse_policies
from mqttlb.loadgen.experiment_report import PolicyResult, render
from mqttlb.loadgen.experiment_workload import experiment_workload

NODES = ["node1", "node2", "node3"]


def _s(t: float, cpu: tuple[float, float, float], conns: tuple[int, int, int] = (10, 10, 10)) -> Sample:
    return Sample(
        t=t,
        cpu=dict(zip(NODES, cpu, strict=True)),
        connections=dict(zip(NODES, conns, strict=True)),
        weights=dict.fromkeys(NODES, 100),
    )


def test_max_squared_deviation_matches_the_recording_rule_definition() -> None:
    assert max_squared_deviation([0.9, 0.3, 0.3]) == pytest.approx(0.16)  # mean 0.5, worst 0.4
    assert max_squared_deviation([0.5, 0.5, 0.5]) == 0
    assert max_squared_deviation([]) == 0
    assert connection_share_msd([50, 25, 25]) == pytest.approx((0.5 - 1 / 3) ** 2)
    assert connection_share_msd([0, 0, 0]) == 0


def test_time_to_settle_is_the_last_crossing_below_the_threshold() -> None:
    times = [0, 2, 4, 6, 8, 10]
    assert time_to_settle(times, [0.2, 0.01, 0.2, 0.03, 0.02, 0.01], 0.04) == 6
    assert time_to_settle(times, [0.01] * 6, 0.04) == 0
    assert time_to_settle(times, [0.01, 0.01, 0.01, 0.01, 0.01, 0.2], 0.04) is None
    assert time_to_settle([], [], 0.04) is None


def test_summary_uses_the_window_for_means_and_all_samples_for_settling() -> None:
    samples = [
        _s(0, (1.0, 0.0, 0.0)),
        _s(2, (0.9, 0.1, 0.1)),
        _s(4, (0.4, 0.4, 0.4), (30, 30, 40)),
        _s(6, (0.5, 0.4, 0.3), (30, 30, 40)),
    ]
    b = summarise(samples, NODES, threshold=0.04, window_start=4)
    assert b.samples == 2 and b.window_start_s == 4
    assert b.mean_cpu == pytest.approx({"node1": 0.45, "node2": 0.4, "node3": 0.35})
    assert b.cpu_msd_max == pytest.approx(0.01)
    assert b.settle_s == 4
    assert b.final_connections == {"node1": 30, "node2": 30, "node3": 40}
    assert b.connections_msd_max == pytest.approx((0.4 - 1 / 3) ** 2)
    with pytest.raises(ValueError):
        summarise([], NODES, 0.04)


def test_report_markdown_has_a_row_per_policy_and_the_charts() -> None:
    load = sample_report(
        published={"0": 100, "1": 10},
        received=10,
        qos1={"acked": 10, "lost": 0, "duplicates": 0},
        latency_ms={"p50": 1.0, "p95": 2.0, "p99": 3.0},
    )
    samples = [_s(0, (0.9, 0.1, 0.1)), _s(2, (0.4, 0.4, 0.4))]
    results = [
        PolicyResult(
            name, POLICIES[name].description, load, summarise(samples, NODES, 0.04), {"rebalance": 2}, 0
        )
        for name in POLICIES
    ]
    text = render(results, NODES, "the workload", {"seed": "1"}, {"CPU per node": "cpu_per_node.png"}, 0.04)
    for name in POLICIES:
        assert f"| {name} |" in text
    assert "![CPU per node](cpu_per_node.png)" in text
    assert "| 2 |" in text and "90 %" not in text  # mean of node1 over both samples is 65 %
    assert "65 %" in text and "2 s" in text


def test_policy_list_and_default_workload_are_validated() -> None:
    assert parse_policies("weighted-cpu,round-robin") == ["weighted-cpu", "round-robin"]
    for bad in ("", "fastest", "round-robin,round-robin"):
        with pytest.raises(ValueError):
            parse_policies(bad)
    w = experiment_workload(
        1883, 60, 3, sites=4, uplink_rate=1000, mobiles=10, mobile_rate=5, sensors=20
    )
    names = [p.name for p in w.profiles]
    assert names[:2] == ["uplink0", "link0"] and names[-3:] == ["mobile", "sensor", "late"]
    assert [p.count for p in w.profiles[-3:]] == [10, 20, 20] and w.profiles[-1].start == 20
    assert all(p.session is not None for p in w.profiles[-3:])  # the steerable load churns


@pytest.mark.parametrize(
    "argv",
    [
        ["--policies", "nope"],
        ["--duration", "1"],
        ["--nodes", "0"],
        ["--node-cpu-cores", "-1"],
        ["--sensors", "0"],
        ["--workers", "99"],
        ["--workload", "/nonexistent/workload.yaml"],
    ],
)
def test_experiment_refuses_bad_input_before_starting_anything(argv: list[str], tmp_path: Path) -> None:
    out = tmp_path / "report"
    assert main([*argv, "--out", str(out)]) == 2
    assert not out.exists()


def test_experiment_refuses_a_bad_workload_file(tmp_path: Path) -> None:
    bad = tmp_path / "w.yaml"
    bad.write_text("profiles: ['heavy:1:qos=5']\n")
    assert main(["--workload", str(bad), "--out", str(tmp_path / "r")]) == 2
