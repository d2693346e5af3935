"""Smoke runs of the named experiment scenarios on real stacks (``--short``: about 70 s and 60 s).

Too slow for ``make test`` (marker ``scenario``); ``make test-scenarios`` runs them.  They prove the
pipeline — stacks, timed node stop and start, sampling, audit, report — not the scenarios' targets,
which need the full-length runs (``make experiment SCENARIO=...``).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from mqttlb.loadgen.experiment import main

pytestmark = [pytest.mark.live, pytest.mark.scenario]

PNGS = ("msd.png", "cpu_per_node.png", "connections.png", "weights.png", "evictions.png")


def _pngs_linked(out: Path) -> None:
    report = (out / "report.md").read_text()
    for png in PNGS:
        assert (out / png).read_bytes().startswith(b"\x89PNG")
        assert f"]({png})" in report


def test_restart_pileup_smoke_stops_and_restarts_the_node_in_both_arms(tmp_path: Path) -> None:
    out = tmp_path / "restart"
    assert main(["--scenario", "restart-pileup", "--short", "--out", str(out), "--log-level", "WARNING"]) == 0
    _pngs_linked(out)
    summary = json.loads((out / "summary.json").read_text())
    arms = summary["seeds"]["1"]
    assert [a["arm"] for a in arms] == ["evict on", "evict off"]
    for arm in ("evict-on", "evict-off"):
        rows = list(csv.DictReader((out / f"samples-seed1-{arm}.csv").open()))
        # node3 is stopped from t=10 s to t=16 s: its clients go to the others, and none come back
        down = [r for r in rows if 13 <= float(r["t"]) <= 15]
        assert down and all(int(r["connections_node3"]) == 0 for r in down)
        assert max(int(r["connections_node3"]) for r in rows if float(r["t"]) < 9) > 0
        load = json.loads((out / f"loadgen-seed1-{arm}.json").read_text())
        assert load["unexpected_disconnects"] > 0 and load["qos1"]["acked"] > 0
    assert all(a["bounds"]["holds"] for a in arms)
    assert all(a["returned_at"] >= 16 for a in arms)


def test_heterogeneous_smoke_writes_both_arms_and_a_verdict(tmp_path: Path) -> None:
    out = tmp_path / "heterogeneous"
    rc = main(["--scenario", "heterogeneous", "--short", "--seeds", "1", "--out", str(out), "--log-level", "WARNING"])
    assert rc == 0
    _pngs_linked(out)
    summary = json.loads((out / "summary.json").read_text())
    assert [a["arm"] for a in summary["arms"]] == ["least-request", "weighted-cpu+evict"]
    assert summary["verdict"]["median_least_request"] > 0
    rows = list(csv.DictReader((out / "samples-seed1-least-request.csv").open()))
    assert max(sum(int(r[f"connections_node{i}"]) for i in (1, 2, 3)) for r in rows) >= 30
