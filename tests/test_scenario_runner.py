"""The unified scenario runner's pure parts: the catalog, the policies, per-run figures, the report."""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import pytest

from mqttlb.loadgen.balance import Sample
from mqttlb.loadgen.scenarios import bench_report, catalog, metrics, policies, runner
from mqttlb.loadgen.scenarios.workloads import Mix, flash_crowd_workload, pareto_rates, pareto_workload

NODES = ["node1", "node2", "node3"]


# --- catalog and workloads -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", catalog.NAMES)
@pytest.mark.parametrize("short", [False, True])
def test_every_scenario_builds_a_seeded_workload_inside_its_run(name: str, short: bool) -> None:
    s = catalog.scenario(name, short=short)
    w = s.build(18830, 2)
    assert w.port == 18830 and w.seed == 2 and w.duration == s.duration
    assert 0 <= s.onset_from <= s.measure_from < s.duration
    assert all(0 < e.at < s.duration for e in s.events)
    assert s.build(18830, 2) == w  # same seed, same load
    assert s.steerable and s.description
    if short:
        assert s.duration <= 50  # restart-pileup: 35 s after the return, for the lever to refill the node


def test_unknown_scenario_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown scenario"):
        catalog.scenario("nope")


def test_restart_pileup_stops_and_starts_the_last_node() -> None:
    s = catalog.scenario("restart-pileup", nodes=4)
    assert [(e.action, e.node) for e in s.events] == [("stop", "node4"), ("start", "node4")]
    assert s.onset_from == s.events[1].at


def test_pareto_rates_are_heavy_tailed_capped_and_seeded() -> None:
    rates = pareto_rates(1, 2000, mean_rate=10, alpha=1.5, cap=500)
    assert max(rates) <= 500 and min(rates) >= 10 * 0.5 / 1.5 - 0.01
    top = sorted(rates, reverse=True)[:200]  # the top tenth carries far more than a tenth of the load
    assert sum(top) > 0.3 * sum(rates)
    assert pareto_rates(1, 50, 10, 1.5, 500) == pareto_rates(1, 50, 10, 1.5, 500) != pareto_rates(2, 50, 10, 1.5, 500)
    with pytest.raises(ValueError):
        pareto_rates(1, 10, 10, alpha=1.0, cap=100)


def test_pareto_clients_reconnect_and_connect_over_the_ramp() -> None:
    w = pareto_workload(1883, 100, 1, clients=30, mean_rate=5, alpha=1.5, session=(20, 60), ramp=10)
    assert w.total_clients == 30 and all(p.session is not None and p.session.a == 20 for p in w.profiles)
    assert max(p.start for p in w.profiles) < 10


def test_flash_crowd_is_five_times_the_base_connect_rate() -> None:
    mix = Mix(heavies=3, heavy_rate=250, lights=150, light_rate=4)
    w = flash_crowd_workload(1883, 150, 1, mix=mix, light_session=(20, 60), crowd_at=50, crowd_seconds=30,
                             crowd_factor=5, crowd_rate=2)
    crowd = [p for p in w.profiles if p.name.startswith("crowd")]
    base_rate = 150 / 40  # connects/s of the churning lights
    assert sum(p.count for p in crowd) == round(4 * base_rate * 30)  # the extra 4x on top of the base
    assert min(p.start for p in crowd) == 50 and max(p.start for p in crowd) < 80
    assert all(p.session is None for p in crowd)


# --- policies ------------------------------------------------------------------------------------------


def test_policies_cover_both_bases_and_the_evict_lever() -> None:
    p = policies.POLICIES
    assert (p[policies.WEIGHTED_RR].lb_policy, p[policies.WEIGHTED_LR].lb_policy) == ("ROUND_ROBIN", "LEAST_REQUEST")
    assert not p[policies.ROUND_ROBIN].webhook_acts and p[policies.WEIGHTED_LR].webhook_acts
    assert all(p[n].params["eviction"]["enabled"] is False for n in policies.WITHOUT_EVICTION)
    assert p[policies.WEIGHTED_EVICT].params["eviction"]["enabled"] is True
    assert policies.parse_policies("least-request, round-robin") == ["least-request", "round-robin"]
    for bad in ("", "round-robin,round-robin", "fastest"):
        with pytest.raises(ValueError):
            policies.parse_policies(bad)


# --- figures -------------------------------------------------------------------------------------------


def _sample(t: float, cpu: tuple[float, float, float], weights: tuple[int, int, int] = (100, 100, 100)) -> Sample:
    return Sample(t, dict(zip(NODES, cpu, strict=True)), dict.fromkeys(NODES, 10), dict(zip(NODES, weights,
                                                                                         strict=True)))


def test_settle_from_onset_until_below_for_good() -> None:
    times = [0, 1, 2, 3, 4, 5, 6]
    msd = [0.0, 0.02, 0.05, 0.005, 0.02, 0.001, 0.001]
    s = metrics.settle(times, msd, onset_from=0, threshold=0.01)
    assert s.onset == 1 and s.seconds == 4  # below at 3, up again at 4, below for good from 5
    assert metrics.settle(times, msd, onset_from=5, threshold=0.01) == metrics.Settle(0.01, None, 0.0)
    assert metrics.settle([0, 1], [0.5, 0.5], onset_from=0, threshold=0.01).seconds is None
    with pytest.raises(ValueError):
        metrics.settle([0, 1], [0.5], onset_from=0, threshold=0.01)


def test_weight_reversals_count_changes_of_direction_only() -> None:
    ws = [(100, 100, 100), (80, 120, 100), (60, 120, 100), (60, 120, 100), (90, 110, 100), (70, 110, 100)]
    samples = [_sample(i, (0.5, 0.5, 0.5), w) for i, w in enumerate(ws)]
    # node1: down, down, up (1), down (2); node2: up, down (3); node3: never moves
    assert metrics.weight_reversals(samples, NODES) == 3
    assert metrics.weight_changes(samples, NODES) == 4 + 2
    assert metrics.weight_reversals(samples[:3], NODES) == 0


def test_balance_figures_average_over_the_window() -> None:
    samples = [_sample(0, (0.9, 0.1, 0.5)), _sample(10, (0.7, 0.3, 0.5)), _sample(20, (0.5, 0.5, 0.5))]
    msd, top, mean_cpu, s = metrics.balance_figures(samples, NODES, measure_from=10, onset_from=0, threshold=0.01)
    assert msd == pytest.approx(0.04 / 2) and top == pytest.approx(0.04)
    assert mean_cpu["node1"] == pytest.approx(0.6) and s.onset == 0 and s.seconds == 20
    with pytest.raises(ValueError):
        metrics.balance_figures(samples, NODES, measure_from=30, onset_from=0, threshold=0.01)


def test_ratio_spread_over_shared_seeds() -> None:
    reference = {1: 0.04, 2: 0.02, 3: 0.01, 4: 1.0}
    other = {1: 0.01, 2: 0.01, 3: 0.01}
    of_medians, per_seed = metrics.ratio_spread(reference, other) or (0.0, None)
    assert of_medians == pytest.approx(2.0) and per_seed is not None
    assert (per_seed.median, per_seed.low, per_seed.high, per_seed.n) == pytest.approx((2.0, 1.0, 4.0, 3))
    assert metrics.ratio_spread({1: 0.1}, {2: 0.1}) is None and metrics.ratio_spread({1: 0.1}, {1: 0.0}) is None


# --- report --------------------------------------------------------------------------------------------


def _figures(policy: str, seed: int, msd: float, lost: int = 0) -> metrics.RunFigures:
    return metrics.RunFigures("pareto", policy, seed, 75.0, msd, msd * 2, dict.fromkeys(NODES, 0.5),
                              metrics.Settle(0.04, 12.0, 30.0), 1, 4, 100, lost, 0, 0, 0, True, 0.3, 0.9)


def _records(values: dict[str, list[float]]) -> list[dict[str, object]]:
    return [{"figures": _figures(policy, seed, v).as_dict(), "scenario": "pareto"}
            for policy, series in values.items() for seed, v in enumerate(series, start=1)]


def test_report_gives_medians_ranges_ratios_and_a_verdict() -> None:
    records = _records({
        "round-robin": [0.03, 0.06, 0.09], "least-request": [0.02, 0.01, 0.03],
        "weighted-cpu-rr": [0.02, 0.02, 0.02], "weighted-cpu-lr": [0.005, 0.004, 0.01],
    })
    text = bench_report.render(catalog.scenario("pareto"), records, {"seeds": "1, 2, 3"})
    assert "| `least-request` | 3 | 0.0200 [0.0100-0.0300] |" in text
    # weighted-cpu-lr: median 0.005, RR median 0.06 -> 12x; LR median 0.02 -> 4x; per seed LR 4.0, 2.5, 3.0
    assert "12.00x [6.00-15.00x]" in text and "4.00x [2.50-4.00x]" in text
    assert "Best weighted policy by median: `weighted-cpu-lr`" in text and "**met**" in text
    assert "QoS 1 lost in the runs without eviction: 0 (none)" in text


def test_report_says_when_the_target_is_missed_or_seeds_are_few() -> None:
    records = _records({"round-robin": [0.03], "least-request": [0.01], "weighted-cpu-lr": [0.008]})
    records.append({"figures": _figures("weighted-cpu-rr", 1, 0.02, lost=3).as_dict(), "scenario": "pareto"})
    text = bench_report.render(catalog.scenario("pareto"), records, {})
    assert "**not met**" in text and "only 1 seed(s): no claim rests on this" in text
    assert "**not zero**" in text
    with pytest.raises(ValueError):
        bench_report.render(catalog.scenario("pareto"), [], {})


def test_settling_says_never_imbalanced_not_0_s() -> None:
    """Trial: a run whose spread never reached the threshold had "0 s" of settling, like one that settled at
    once."""
    never = metrics.Settle(0.04, None, 0.0)
    assert never.describe() == "never imbalanced"
    assert metrics.Settle(0.04, 30.0, None).describe() == "onset 30 s, never below"
    assert metrics.Settle(0.04, 30.0, 12.4).describe() == "onset 30 s, 12 s"

    def row(settles: list[metrics.Settle]) -> str:
        runs = {seed: dataclasses.replace(_figures("least-request", seed, 0.01), settle=settle)
                for seed, settle in enumerate(settles, start=1)}
        return bench_report.summary_rows({"least-request": runs})[0][5]

    assert row([never, never, never]) == "never imbalanced"
    assert row([metrics.Settle(0.04, 30.0, 10.0), never, metrics.Settle(0.04, 30.0, 14.0)]) == (
        "12 [10-14] s; never imbalanced: 1 of 3"
    )
    assert row([metrics.Settle(0.04, 30.0, None), never]) == "-; never below: 1 of 2; never imbalanced: 1 of 2"
    assert row([metrics.Settle(0.04, 30.0, 8.0), metrics.Settle(0.04, 31.0, None)]) == "8 [8-8] s; never below: 1 of 2"
    text = bench_report.render(catalog.scenario("pareto"), [{"figures": dataclasses.replace(
        _figures("round-robin", 1, 0.01), settle=never).as_dict(), "scenario": "pareto"}], {})
    assert "| never imbalanced |" in text and "| 0 [0-0] s |" not in text


def test_run_records_round_trip_through_the_runs_directory(tmp_path: Path) -> None:
    f = _figures("weighted-cpu+evict", 2, 0.01)
    (tmp_path / f"{runner.slug(2, f.policy)}.json").write_text(json.dumps({"figures": f.as_dict(), "scenario": "x"}))
    (tmp_path / f"{runner.slug(2, f.policy)}.loadgen.json").write_text("{}")  # not a record
    records = runner.load_runs(tmp_path)
    assert len(records) == 1 and metrics.RunFigures.from_dict(records[0]["figures"]) == f
    assert runner.slug(2, f.policy) == "seed2-weighted-cpu-evict"


def test_cpu_meter_sees_this_process_burn_cpu() -> None:
    from mqttlb.loadgen.scenarios.arm import CpuMeter

    meter = CpuMeter().start()
    deadline = time.monotonic() + 0.3
    while time.monotonic() < deadline:  # one core busy for 0.3 s
        pass
    budget = meter.stop()
    assert budget.cores >= 1
    # at least a fifth of a core even on a busy machine, never more than all of them
    assert 0.2 / budget.cores <= budget.generator <= 1.0 and 0 < budget.machine <= 1.0
