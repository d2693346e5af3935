"""The scenarios' CPU balance figure per sample (pure)."""

from __future__ import annotations

import pytest

from mqttlb.loadgen.balance import Sample, cpu_msd_series, max_squared_deviation

NODES = ["node1", "node2", "node3"]


def test_max_squared_deviation_matches_the_recording_rule_definition() -> None:
    assert max_squared_deviation([0.9, 0.3, 0.3]) == pytest.approx(0.16)  # mean 0.5, worst 0.4
    assert max_squared_deviation([0.5, 0.5, 0.5]) == 0
    assert max_squared_deviation([]) == 0


def test_cpu_series_has_one_figure_per_sample_and_counts_a_missing_node_as_idle() -> None:
    samples = [
        Sample(0, dict(zip(NODES, (0.9, 0.3, 0.3), strict=True)), {}, {}),
        Sample(2, {"node1": 0.6, "node2": 0.0}, {}, {}),  # node3 not sampled: 0
    ]
    assert cpu_msd_series(samples, NODES) == pytest.approx([0.16, 0.16])
    assert cpu_msd_series([], NODES) == []
