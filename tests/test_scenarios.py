"""The experiment scenarios' pure parts: settling, eviction batches and their bounds from audit entries,
connects per second, QoS 1 accounting, the workloads, the verdicts and the command line's checks."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mqttlb.loadgen.scenarios import analysis
from mqttlb.loadgen.scenarios.analysis import Batch, ConnectSample
from mqttlb.loadgen.scenarios.cli import build_parser, parse_seeds
from mqttlb.loadgen.scenarios.cli import main as scenario_main
from mqttlb.loadgen.scenarios.workloads import Mix, heavy_starts, heterogeneous_workload, restart_workload

# --- settling ------------------------------------------------------------------------------------------


def test_settling_needs_to_stay_below_to_the_end() -> None:
    times = [0, 10, 20, 30, 40, 50]
    values = [0.2, 0.005, 0.02, 0.004, 0.003, 0.002]
    s = analysis.settling(times, values, start=10, threshold=0.01, within=30)
    assert s.first_below == 10  # dipped at once ...
    assert s.settled_at == 30 and s.settle_seconds == 20  # ... but only stayed below from t=30
    assert s.met and s.peak_after == 0.004


def test_settling_not_met_when_late_or_never() -> None:
    times = [0, 100, 200, 300]
    late = analysis.settling(times, [0.2, 0.2, 0.005, 0.005], start=0, threshold=0.01, within=180)
    assert late.settled_at == 200 and not late.met
    never = analysis.settling(times, [0.2, 0.005, 0.005, 0.011], start=0, threshold=0.01, within=180)
    assert never.first_below == 100 and never.settled_at is None and not never.met


def test_settling_threshold_is_strict_and_inputs_checked() -> None:
    assert not analysis.settling([0, 1], [0.01, 0.01], start=0, threshold=0.01, within=5).met
    with pytest.raises(ValueError, match="times but"):
        analysis.settling([0, 1], [0.1], start=0, threshold=0.01, within=5)
    with pytest.raises(ValueError, match="no value at or after"):
        analysis.settling([0, 1], [0.1, 0.1], start=5, threshold=0.01, within=5)


@given(st.lists(st.floats(min_value=0, max_value=1), min_size=1, max_size=40), st.floats(0.001, 0.5))
def test_settling_settled_means_every_later_value_below(values: list[float], threshold: float) -> None:
    times = [float(i) for i in range(len(values))]
    s = analysis.settling(times, values, start=0, threshold=threshold, within=1e9)
    if s.settled_at is None:
        assert values[-1] >= threshold
    else:
        assert all(v < threshold for t, v in zip(times, values, strict=True) if t >= s.settled_at)
        assert s.settled_at == 0 or values[int(s.settled_at) - 1] >= threshold


def test_window_mean() -> None:
    assert analysis.window_mean([0, 1, 2, 3], [4, 1, 2, 3], 1) == 2
    assert analysis.window_mean([0, 1, 2, 3], [4, 1, 2, 3], 1, 3) == 1.5
    with pytest.raises(ValueError):
        analysis.window_mean([0, 1], [1, 1], 5)


# --- batches and bounds ---------------------------------------------------------------------------------


def _entry(node: str, started: float, finished: float, count: int, before: int | None, after: int | None,
           bound: int = 36, applied: bool = True, kind: str = "evict") -> dict:
    after_fields: dict = {
        "node": node, "purpose": "rebalance", "count": count, "clients": [f"lg-pub-{i}" for i in range(count)],
        "bound": bound, "node_clients": 150, "load_moved": 0.2, "surplus": 0.21,
        "started": 1000.0 + started, "finished": 1000.0 + finished,
    }
    if before is not None and after is not None:
        after_fields["broker_counters_before"] = {"evictedTotal": before, "commandsTotal": 3}
        after_fields["broker_counters_after"] = {"evictedTotal": after, "commandsTotal": 5}
    return {"kind": kind, "applied": applied, "time": 1000.0 + finished, "after": after_fields}


def test_batches_from_audit_in_run_time_with_broker_counts() -> None:
    entries = [
        _entry("node2", 60.0, 61.75, 36, 0, 36),
        _entry("node1", 59.0, 60.0, 21, 10, 31),
        _entry("node1", 95.0, 96.0, 5, None, None),
        _entry("node1", 99.0, 100.0, 5, 31, 36, applied=False),  # failed: left out
        {"kind": "rebalance", "applied": True, "after": {"node1": 50}},
        {"kind": "evict", "applied": True, "after": {"node": "node3", "count": 1}},  # no batch times
    ]
    batches = analysis.batches_from_audit(entries, wall_start=1000.0)
    assert [(b.node, b.started, b.count, b.broker_evicted) for b in batches] == [
        ("node1", 59.0, 21, 21),
        ("node2", 60.0, 36, 36),
        ("node1", 95.0, 5, None),
    ]
    assert batches[1].paced_rate == pytest.approx(35 / 1.75)
    check = analysis.check_bounds(batches, max_per_second=20)
    assert check.evicted == 62 and check.batches == 3
    assert check.max_paced_rate == pytest.approx(20.0) and check.max_count_over_bound == 0
    assert check.without_counters == 1 and not check.holds  # a batch the broker gave no counters for
    assert analysis.check_bounds(batches[:2], max_per_second=20).holds


def test_check_bounds_catches_a_fast_batch_an_oversized_one_and_a_counter_mismatch() -> None:
    fast = analysis.batches_from_audit([_entry("node1", 0, 1, 30, 0, 30)], 1000.0)
    assert analysis.check_bounds(fast, 20).max_paced_rate == pytest.approx(29.0)
    assert not analysis.check_bounds(fast, 20).holds
    big = analysis.batches_from_audit([_entry("node1", 0, 10, 40, 0, 40, bound=36)], 1000.0)
    assert analysis.check_bounds(big, 20).max_count_over_bound == 4 and not analysis.check_bounds(big, 20).holds
    hidden = analysis.batches_from_audit([_entry("node1", 0, 10, 10, 0, 12)], 1000.0)
    assert analysis.check_bounds(hidden, 20).counter_mismatches == 1
    assert analysis.check_bounds([], 20).holds


def test_paced_rate_of_small_batches() -> None:
    one = Batch("n", "rebalance", 0, 0, 1, 1, 1, 1, 0, 0, ("a",))
    assert one.paced_rate == 0.0
    instant = Batch("n", "rebalance", 5, 5, 3, 3, 3, 3, 0, 0, ("a", "b", "c"))
    assert math.isinf(instant.paced_rate)


# --- reconnects ------------------------------------------------------------------------------------------


def test_connects_per_second_and_spread_around_batches() -> None:
    samples = [ConnectSample(float(t), {"node1": c1, "node2": c2})
               for t, c1, c2 in [(0, 100, 100), (1, 100, 100), (2, 110, 100), (3, 120, 102), (4, 120, 102),
                                 (5, 121, 102), (10, 221, 102), (11, 5, 102)]]
    rates = analysis.connects_per_second(samples)
    assert rates[1] == (2.0, {"node1": 10.0, "node2": 0.0})
    assert rates[-1] == (11.0, {"node1": 5.0, "node2": 0.0})  # a counter that restarted counts from 0
    batch = Batch("node2", "rebalance", 1.0, 2.5, 20, 20, 36, 150, 0.2, 0.2, ())
    spread = analysis.reconnect_spread(rates, [batch], settle=1.0)
    assert spread.peak_node == 10.0 and spread.peak_total == 12.0 and spread.seconds == 4
    assert spread.reference_peak == 20.0  # (221 - 121) / 5 s, outside the batch
    assert analysis.reconnect_spread(rates, [batch], settle=1.0, reference_from=10.5).reference_peak == 5.0


# --- QoS 1 -------------------------------------------------------------------------------------------------


def test_qos1_in_flight_from_the_load_report() -> None:
    q = analysis.qos1_in_flight(1000, {"acked": 990, "received_without_ack": 4, "lost": 2, "duplicates": 1})
    assert (q.published, q.acked, q.unacked, q.lost, q.redelivered) == (1000, 990, 6, 2, 1)
    assert analysis.qos1_in_flight(0, {}).unacked == 0


def test_median() -> None:
    assert analysis.median([3, 1, 2]) == 2 and analysis.median([1, 4]) == 2.5
    with pytest.raises(ValueError):
        analysis.median([])


# --- workloads ---------------------------------------------------------------------------------------------


def test_restart_workload_is_long_lived_with_qos1_sensors() -> None:
    w = restart_workload(1883, 300, 1, publishers=240, publisher_rate=6, sensors=60, sensor_rate=1)
    assert w.total_clients == 300 and all(p.session is None for p in w.profiles)
    sensor = next(p for p in w.profiles if p.name == "sensor")
    assert sensor.qos == 1 and sensor.checks_delivery


def test_heavy_starts_fall_between_light_groups_and_follow_the_seed() -> None:
    starts = heavy_starts(1, 4, 12.0)
    assert len(set(starts)) == 4 and all(s % 1 == 0.5 and 0 < s < 12 for s in starts)
    assert heavy_starts(1, 4, 12.0) == starts and heavy_starts(2, 4, 12.0) != starts
    assert len(heavy_starts(3, 20, 12.0)) == 20


def test_heterogeneous_workload_scatters_heavies_among_lights() -> None:
    w = heterogeneous_workload(1883, 300, 2, mix=Mix(heavies=4, heavy_rate=250, lights=241, light_rate=4), ramp=12)
    lights = [p for p in w.profiles if p.name.startswith("light")]
    heavies = [p for p in w.profiles if p.name.startswith("heavy")]
    assert sum(p.count for p in lights) == 241 and len(heavies) == 4
    assert all(p.session is None for p in w.profiles)
    first_light, last_light = min(p.start for p in lights), max(p.start for p in lights)
    assert all(first_light < h.start < last_light + 1 for h in heavies)


# --- command line ------------------------------------------------------------------------------------------


def test_parse_seeds() -> None:
    assert parse_seeds("1,2, 3") == [1, 2, 3]
    for bad in ("", "1,1", "a"):
        with pytest.raises(ValueError):
            parse_seeds(bad)


def test_bad_flags_are_refused_before_any_stack_starts(capsys: pytest.CaptureFixture[str]) -> None:
    assert scenario_main(["--scenario", "pareto", "--policies", "round-robin,nope"]) == 2
    assert "--policies" in capsys.readouterr().err
    assert scenario_main(["--scenario", "heterogeneous", "--seeds", "1,1"]) == 2
    assert scenario_main(["--scenario", "pareto", "--nodes", "1"]) == 2
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--scenario", "nope"])


def test_mqttlb_experiment_without_a_scenario_runs_gateway_sites(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from mqttlb.cli import main as mqttlb_main

    args = build_parser().parse_args([])
    assert (args.scenario, args.seeds, args.params) == ("gateway-sites", "1,2,3", "shipped")
    # --report-only on an empty directory: the runner's own path, refused for want of a gateway-sites run
    assert mqttlb_main(["experiment", "--report-only", "--out", str(tmp_path)]) == 2
    assert f"no run of gateway-sites under {tmp_path / 'runs'}" in capsys.readouterr().err


@pytest.mark.parametrize("retired", [["--workload", "w.yaml"], ["--sites", "2"], ["--duration", "30"]])
def test_the_retired_single_seed_flags_are_usage_errors(retired: list[str]) -> None:
    from mqttlb.cli import main as mqttlb_main

    with pytest.raises(SystemExit) as exited:
        mqttlb_main(["experiment", *retired])
    assert exited.value.code == 2


# --- arm settings ------------------------------------------------------------------------------------------


def test_every_arm_derives_from_one_read_of_the_stack_settings(tmp_path: Path) -> None:
    from mqttlb.loadgen.scenarios.arm import ArmSetup, _stack_config, base_config

    base = base_config(3, 0.025)
    off = _stack_config(ArmSetup("off", "", "LEAST_REQUEST", False, {"eviction": {"enabled": False}}), base,
                        tmp_path / "a")
    on = _stack_config(ArmSetup("on", "", None, True), base, tmp_path / "b")
    assert off.lb_policy == "LEAST_REQUEST" and on.lb_policy == base.lb_policy
    assert off.dry_run and not on.dry_run
    assert not off.params.eviction.enabled and on.params == base.params
    assert off.ports.envoy_listener != on.ports.envoy_listener and on.state_dir == tmp_path / "b"
    assert on.node_cpu_cores == off.node_cpu_cores == 0.025
    assert off.params.eviction.max_per_second == base.params.eviction.max_per_second


# --- runs already in --out ----------------------------------------------------------------------------------


def _run_on_disk(out: Path, scenario_name: str, seed: int, policy: str, param_set: str = "shipped") -> Path:
    """One finished run of ``policy`` written under ``out/runs`` the way the runner writes it (figures from
    even 30 % CPU samples, so never imbalanced); the record's path."""
    from mqttlb.loadgen.balance import Sample
    from mqttlb.loadgen.report import Report
    from mqttlb.loadgen.scenarios import catalog, runner
    from mqttlb.loadgen.scenarios.arm import ArmRun, CpuBudget, base_config, recorded_params, recorded_settings
    from mqttlb.loadgen.scenarios.policies import POLICIES

    scenario = catalog.scenario(scenario_name, short=True)
    base = base_config(3, 0.025)
    nodes = ["node1", "node2", "node3"]
    samples = [Sample(float(t), dict.fromkeys(nodes, 0.3), dict.fromkeys(nodes, 10), dict.fromkeys(nodes, 100))
               for t in range(int(scenario.duration) + 1)]
    load = Report("w", seed, scenario.duration, 3, 3, 3, {}, 0, 3, {"1": 10}, 0, 10, {"lost": 0}, {})
    run = ArmRun(POLICIES[policy], nodes, samples, [], [], [], load, 0.0, 0, recorded_params(base),
                 recorded_settings(base), CpuBudget(0.1, 0.5, 2))
    runs = out / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    runner.write_run(runs, run, runner.figures_of(run, scenario, seed), runner.record_meta(scenario, param_set, run,
                                                                                              base))
    return runs / f"{runner.slug(seed, policy)}.json"


def test_runs_kept_are_those_of_the_same_scenario_and_parameter_set(tmp_path: Path) -> None:
    from mqttlb.loadgen.scenarios import catalog, runner
    from mqttlb.loadgen.scenarios.arm import base_config

    _run_on_disk(tmp_path, "pareto", 1, "round-robin")
    _run_on_disk(tmp_path, "pareto", 2, "round-robin", param_set="fast")
    _run_on_disk(tmp_path, "heterogeneous", 1, "least-request")
    identity = runner.run_identity(catalog.scenario("pareto", short=True), "shipped", base_config(3, 0.025))
    kept = runner.kept_runs(tmp_path / "runs", identity, [1, 2], ["round-robin", "least-request"])
    assert kept == [(1, "round-robin")]


@pytest.mark.parametrize("other", [{"nodes": 5}, {"node_cpu_cores": 0.5}, {"duration": 150.0}])
def test_a_run_of_other_nodes_cores_or_length_is_run_again(tmp_path: Path, other: dict[str, object]) -> None:
    """Trial: `--nodes 5 --node-cpu-cores 0.5` reused a 3-node run, and a full run would have reused a --short one."""
    from mqttlb.loadgen.scenarios import catalog, runner
    from mqttlb.loadgen.scenarios.arm import base_config

    _run_on_disk(tmp_path, "pareto", 1, "round-robin")
    identity = runner.run_identity(catalog.scenario("pareto", short=True), "shipped", base_config(3, 0.025))
    assert runner.kept_runs(tmp_path / "runs", identity, [1], ["round-robin"]) == [(1, "round-robin")]
    assert runner.kept_runs(tmp_path / "runs", {**identity, **other}, [1], ["round-robin"]) == []


def test_reused_runs_are_said_with_how_to_run_them_again(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Trial: a second `mqttlb experiment --out X` reported the old runs as new, saying nothing."""
    _run_on_disk(tmp_path, "pareto", 1, "round-robin")
    _run_on_disk(tmp_path, "pareto", 1, "least-request")
    argv = ["--scenario", "pareto", "--short", "--seeds", "1", "--policies", "round-robin,least-request",
            "--out", str(tmp_path)]
    assert scenario_main(argv) == 0  # nothing left to run: no stack started
    err = capsys.readouterr().err
    line = (f"reusing 2 runs already in {tmp_path / 'runs'} (same scenario, parameters, nodes, cores and length) "
            "instead of running them: seed1-round-robin, seed1-least-request; to run them again pass --fresh, a new "
            "--out, or delete their files")
    reuse = [entry for entry in err.splitlines() if "reusing" in entry]
    assert len(reuse) == 1 and reuse[0].endswith(f" WARNING mqttlb.loadgen.scenarios: {line}"), err
    assert (tmp_path / "report.md").is_file()


def test_a_short_run_is_not_reported_as_a_full_one(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Trial of 2026-12-01: --report-only without --short described a --short run as the full scenario
    (240 publishers, measured from t = 75 s) with the short run's figures."""
    _run_on_disk(tmp_path, "pareto", 1, "round-robin")
    assert scenario_main(["--scenario", "pareto", "--report-only", "--out", str(tmp_path)]) == 2
    assert "lasted 30 s, not the 150 s of pareto as asked" in capsys.readouterr().err
    assert scenario_main(["--scenario", "pareto", "--short", "--report-only", "--out", str(tmp_path)]) == 0


def test_a_report_never_pools_runs_made_with_other_settings(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Trial of 2026-12-01: --report-only pooled a seed run with `--params fast` on 5 nodes into the median of a
    shipped one, labelled with the first run's settings; and --params/--nodes/--node-cpu-cores went unchecked."""
    _run_on_disk(tmp_path, "pareto", 1, "round-robin")
    other = _run_on_disk(tmp_path, "pareto", 2, "round-robin", param_set="fast")
    argv = ["--scenario", "pareto", "--short", "--report-only", "--out", str(tmp_path)]
    assert scenario_main(argv) == 2
    assert ("1 run under " in (err := capsys.readouterr().err) and "was made with other settings than asked "
            "(seed2-round-robin: param_set fast (asked shipped))" in err), err
    other.unlink()
    assert scenario_main(argv) == 0
    assert scenario_main([*argv, "--node-cpu-cores", "0.5"]) == 2
    assert "node_cpu_cores 0.025 (asked 0.5)" in capsys.readouterr().err


def test_fresh_runs_again_and_excludes_report_only(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    _run_on_disk(tmp_path, "pareto", 1, "round-robin")
    monkeypatch.setenv("PATH", str(tmp_path / "no-binaries"))  # a run that does start fails at once
    argv = ["--scenario", "pareto", "--short", "--seeds", "1", "--policies", "round-robin", "--out", str(tmp_path)]
    assert scenario_main([*argv, "--fresh"]) == 1
    err = capsys.readouterr().err
    assert "reusing" not in err and "missing binary" in err
    with pytest.raises(SystemExit) as exited:
        scenario_main([*argv, "--fresh", "--report-only"])
    assert exited.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err
    assert scenario_main([*argv, "--report-only"]) == 0
    assert "reusing" not in capsys.readouterr().err


NEWER_KEYS = {"eviction": ["idle_after", "min_recipient_share"], "policy": ["steer_target", "count_gain",
                                                                           "steer_below_alert", "cooldown_seconds"]}


def test_the_settings_table_has_the_newer_keys_and_a_dash_for_a_record_that_predates_one(tmp_path: Path) -> None:
    """Trial: the smoke report's Settings table lacked the keys added since the first benchmark."""
    import json

    from mqttlb.loadgen.scenarios import catalog
    from mqttlb.loadgen.scenarios.cli import write_report

    scenario = catalog.scenario("pareto", short=True)
    record = _run_on_disk(tmp_path, "pareto", 1, "round-robin")
    text = write_report(scenario, tmp_path, None).read_text()
    assert "steer_target spare-share, count_gain 0.5, steer_below_alert false" in text
    assert "idle_after 10s" in text and "min_recipient_share 0.8" in text
    assert "neutral_weight 100, min_weight 10, max_weight 400" in text and "ewma_alpha 0.5" in text
    assert "min_improvement 0.25" in text and "allow_persistent false" in text
    assert "step interval 35 s (scrape + rate_window)" in text  # trial: the value was not given
    old = json.loads(record.read_text())
    for section, keys in NEWER_KEYS.items():
        for key in keys:
            del old["stack_params"][section][key]
    record.write_text(json.dumps(old))
    text = write_report(scenario, tmp_path, None).read_text()
    assert "steer_target -, count_gain -, steer_below_alert -" in text
    assert "idle_after -" in text and "min_recipient_share -" in text
    assert "step interval 35 s (scrape + rate_window)" in text
