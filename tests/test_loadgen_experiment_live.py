"""The experiment harness end to end: a real stack, a short seeded load, a complete report dir."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from loadgen.experiment import main

pytestmark = pytest.mark.live


def test_short_experiment_writes_tables_charts_and_per_policy_data(tmp_path: Path) -> None:
    out = tmp_path / "report"
    rc = main(
        [
            "--policies",
            "weighted-cpu",
            "--duration",
            "8",
            "--sensors",
            "10",
            "--heavy-count",
            "2",
            "--heavy-rate",
            "300",
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
    assert "| weighted-cpu |" in report and "heavy: 2 publisher(s) x 300 msg/s" in report
    for png in ("cpu_per_node.png", "deviation.png", "connections.png", "weights.png"):
        data = (out / png).read_bytes()
        assert data.startswith(b"\x89PNG") and len(data) > 5000
        assert f"]({png})" in report

    load = json.loads((out / "loadgen-weighted-cpu.json").read_text())
    assert load["qos1"]["acked"] > 0 and load["qos1"]["lost"] == 0
    assert load["connect_failures_total"] == 0

    rows = list(csv.DictReader((out / "samples-weighted-cpu.csv").open()))
    assert len(rows) >= 5
    # the sampler saw the load: Envoy connections on the nodes, and the heavy publishers' CPU
    assert max(sum(int(r[f"connections_node{i}"]) for i in (1, 2, 3)) for r in rows) >= 12
    assert max(float(r[f"cpu_node{i}"]) for r in rows for i in (1, 2, 3)) > 0.05
    assert all(int(r["weight_node1"]) > 0 for r in rows)

    summary = json.loads((out / "summary.json").read_text())
    balance = summary["policies"]["weighted-cpu"]["balance"]
    assert set(balance["mean_cpu"]) == {"node1", "node2", "node3"}
    assert not (out / "state").exists()  # stack state lives in a temp dir unless --keep-state
