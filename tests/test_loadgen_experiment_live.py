"""The experiment harness end to end: a real stack, a short seeded load, a complete report dir."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from mqttlb.loadgen.experiment import main

pytestmark = [pytest.mark.live, pytest.mark.slow]


def test_short_experiment_writes_tables_charts_and_per_policy_data(tmp_path: Path) -> None:
    out = tmp_path / "report"
    rc = main(
        [
            "--policies",
            "round-robin",
            "--duration",
            "12",
            "--sites",
            "2",
            "--uplink-rate",
            "300",
            "--mobiles",
            "6",
            "--sensors",
            "10",
            "--sample-interval",
            "1",
            "--out",
            str(out),
            "--log-level",
            "WARNING",
        ]
    )
    assert rc == 0
    report = (out / "report.md").read_text()
    assert "| round-robin |" in report and "2 gateway site(s)" in report and "1 uplink (300 msg/s" in report
    for png in ("cpu_per_node.png", "deviation.png", "connections.png", "weights.png"):
        data = (out / png).read_bytes()
        assert data.startswith(b"\x89PNG") and len(data) > 5000
        assert f"]({png})" in report

    load = json.loads((out / "loadgen-round-robin.json").read_text())
    assert load["qos1"]["acked"] > 0 and load["qos1"]["lost"] == 0
    assert load["connect_failures_total"] == 0

    rows = list(csv.DictReader((out / "samples-round-robin.csv").open()))
    nodes = ("node1", "node2", "node3")
    assert len(rows) >= 8
    assert max(sum(int(r[f"connections_{n}"]) for n in nodes) for r in rows) >= 12
    assert all(int(r[f"weight_{n}"]) > 0 for r in rows for n in nodes)
    # Round robin aliasing: each site connects uplink, link, link, so both 300 msg/s uplinks land on
    # the same node, which stands out in broker CPU (6 mobiles at 30 msg/s join at t = 2 s, spread).
    late = [r for r in rows if float(r["t"]) >= 4]
    mean = {n: sum(float(r[f"cpu_{n}"]) for r in late) / len(late) for n in nodes}
    hot = max(mean, key=lambda n: mean[n])
    assert mean[hot] > 0.15, mean
    assert all(mean[hot] > 1.5 * mean[n] for n in nodes if n != hot), mean

    summary = json.loads((out / "summary.json").read_text())
    balance = summary["policies"]["round-robin"]["balance"]
    assert set(balance["mean_cpu"]) == set(nodes)
    assert balance["cpu_msd_mean"] > 0.005  # the aliasing shows in the max squared deviation too
    assert not (out / "state").exists()  # stack state lives in a temp dir unless --keep-state
