"""Smoke runs of the scenario runner on real stacks (``--short``: about 80 s and 70 s).

The short ``pareto`` run is the benchmark's short variant in ``make test``; the ``restart-pileup`` one (marker
``scenario``) runs in ``make test-scenarios``. They prove the pipeline — one runner for every scenario and
policy, stacks, timed node stop and start, sampling, run records, the report — not the scenarios' figures,
which need the full-length runs with seeds (``make experiment SCENARIO=... SEEDS=1,2,3``).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest

from mqttlb.loadgen.scenarios.cli import main

pytestmark = [pytest.mark.live]


def _records(out: Path) -> dict[str, dict[str, Any]]:
    records = {}
    for path in (out / "runs").glob("seed*.json"):
        if not path.name.endswith(".loadgen.json"):
            record = json.loads(path.read_text())
            records[record["figures"]["policy"]] = record
    return records


def test_pareto_smoke_runs_least_request_and_weighted_cpu_on_it(tmp_path: Path) -> None:
    out = tmp_path / "pareto"
    rc = main(["--scenario", "pareto", "--short", "--seeds", "1", "--policies", "least-request,weighted-cpu-lr",
               "--out", str(out), "--log-level", "WARNING"])
    assert rc == 0
    records = _records(out)
    assert set(records) == {"least-request", "weighted-cpu-lr"}
    assert records["weighted-cpu-lr"]["stack_settings"]["lb_policy"] == "LEAST_REQUEST"
    for record in records.values():
        figures = record["figures"]
        assert figures["qos1_lost"] == 0 and figures["msd"] >= 0
        assert 0 < figures["generator_cpu_share"] < 1 and 0 < figures["machine_cpu_share"] <= 1
    report = (out / "report.md").read_text()
    assert "| `weighted-cpu-lr` | 1 |" in report and "x lower than least request" in report
    assert (out / "msd.png").read_bytes().startswith(b"\x89PNG") and "](msd.png)" in report
    # a second invocation keeps the runs on disk and only redraws
    assert main(["--scenario", "pareto", "--short", "--seeds", "1", "--policies", "least-request",
                 "--out", str(out), "--log-level", "WARNING"]) == 0


@pytest.mark.scenario
def test_restart_pileup_smoke_stops_and_restarts_the_node_and_the_lever_refills_it(tmp_path: Path) -> None:
    """node3 stops at t=10 s and returns empty at t=15 s beside long-lived clients.  At 0.01 cores per node the
    pile-up is above the imbalance threshold, nobody connects, so the lever arms after eviction.idle_after
    (10 s) and evicted clients land on node3 through Envoy before the run ends at t=50 s."""
    out = tmp_path / "restart"
    rc = main(["--scenario", "restart-pileup", "--short", "--seeds", "1", "--policies", "weighted-cpu+evict",
               "--node-cpu-cores", "0.01", "--out", str(out), "--log-level", "WARNING"])
    assert rc == 0
    record = _records(out)["weighted-cpu+evict"]
    assert [e[1:] for e in record["events"]] == [["stop", "node3"], ["start", "node3"]]
    rows = list(csv.DictReader((out / "runs" / "seed1-weighted-cpu-evict.samples.csv").open()))
    # node3 is stopped from t=10 s to t=15 s: its clients go to the others
    down = [r for r in rows if 12 <= float(r["t"]) <= 14]
    assert down and all(int(r["connections_node3"]) == 0 for r in down)
    assert max(int(r["connections_node3"]) for r in rows if float(r["t"]) < 9) > 0
    load = json.loads((out / "runs" / "seed1-weighted-cpu-evict.loadgen.json").read_text())
    assert load["unexpected_disconnects"] > 0 and load["qos1"]["acked"] > 0
    assert record["figures"]["evicted"] > 0, record["figures"]
    audit = [json.loads(line) for line in (out / "runs" / "seed1-weighted-cpu-evict.evictions.jsonl").open()]
    assert audit and all("node3" in a["details"]["recipients"] for a in audit)
    assert max(int(r["connections_node3"]) for r in rows if float(r["t"]) > 40) > 0  # refilled
