"""Delivery accounting, latency percentiles and the payload stamp (pure code)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st
from stackutil import sample_report

from mqttlb.loadgen.payload import MAGIC, Stamp, decode, encode, header_size
from mqttlb.loadgen.shard import merge_reports
from mqttlb.loadgen.stats import LatencyHistogram, SequenceTracker


def test_tracker_counts_loss_duplicates_and_unacked_receipts_on_a_synthetic_sequence() -> None:
    t = SequenceTracker()
    for seq in range(10):
        t.acked("c1", 0, seq)
    for seq in [0, 1, 2, 2, 3, 5, 6, 6, 6, 7, 8, 11]:  # 4 and 9 missing, 2 twice, 6 three times
        t.receive("c1", 0, seq)
    counts = t.counts()
    assert counts["acked"] == 10
    assert counts["lost"] == 2
    assert counts["duplicates"] == 3
    assert counts["received"] == 12
    assert counts["received_unique"] == 9
    assert counts["received_without_ack"] == 1  # seq 11: delivered, PUBACK never seen (allowed)
    assert t.missing("c1", 0) == 2


def test_tracker_keeps_sessions_and_clients_apart() -> None:
    t = SequenceTracker()
    t.acked("c1", 0, 0)
    t.acked("c1", 1, 0)
    t.acked("c2", 0, 0)
    assert t.receive("c1", 0, 0) is False
    assert t.receive("c1", 1, 0) is False
    assert t.receive("c1", 1, 0) is True
    counts = t.counts()
    assert (counts["lost"], counts["duplicates"], counts["streams"]) == (1, 1, 3)
    assert t.missing("c2", 0) == 1 and t.missing("c1", 0) == 0 and t.missing("nobody", 0) == 0
    with pytest.raises(ValueError):
        t.acked("c1", 0, -1)


def test_receipt_before_ack_is_not_loss() -> None:
    t = SequenceTracker()
    t.receive("c", 0, 0)  # echo can overtake the PUBACK
    t.acked("c", 0, 0)
    assert t.counts()["lost"] == 0 and t.counts()["received_without_ack"] == 0


def test_latency_percentiles_are_within_the_bucket_precision() -> None:
    h = LatencyHistogram(precision=0.02)
    values = [i / 1000 for i in range(1, 1001)]  # 1 ms .. 1000 ms
    h.extend(values)
    for p, exact in [(50, 0.5), (95, 0.95), (99, 0.99), (100, 1.0)]:
        got = h.percentile(p)
        assert got is not None and exact <= got <= exact * 1.021, (p, got)
    summary = h.summary_ms()
    assert summary["count"] == 1000 and summary["max"] == 1000.0
    assert math.isclose(summary["mean"] or 0, 500.5, rel_tol=1e-6)


def test_empty_histogram_and_bad_percentiles() -> None:
    h = LatencyHistogram()
    assert h.percentile(99) is None
    assert h.summary_ms()["p50"] is None
    with pytest.raises(ValueError):
        h.percentile(0)
    with pytest.raises(ValueError):
        LatencyHistogram(precision=1.5)


@given(
    client_id=st.text(min_size=1, max_size=40),
    session=st.integers(0, 2**32 - 1),
    seq=st.integers(0, 2**64 - 1),
    sent_ns=st.integers(0, 2**64 - 1),
    size=st.integers(0, 2048),
)
def test_payload_round_trips_and_has_the_requested_size(
    client_id: str, session: int, seq: int, sent_ns: int, size: int
) -> None:
    stamp = Stamp(client_id, session, seq, sent_ns)
    payload = encode(stamp, size)
    assert len(payload) == max(size, header_size(client_id))
    assert decode(payload) == stamp


@pytest.mark.parametrize("payload", [b"", b"hello world, not ours", MAGIC + b"\x01", MAGIC + bytes(30)])
def test_foreign_or_truncated_payloads_decode_to_none(payload: bytes) -> None:
    assert decode(payload) is None


def test_truncated_client_id_decodes_to_none() -> None:
    payload = encode(Stamp("a-long-client-id", 0, 1, 2), 0)
    assert decode(payload[:-3]) is None


def test_merging_shard_reports_sums_counts_and_merges_latency_exactly() -> None:
    a_values, b_values = [0.001 * i for i in range(1, 200)], [0.01 * i for i in range(1, 50)]
    ha, hb, whole = LatencyHistogram(), LatencyHistogram(), LatencyHistogram()
    ha.extend(a_values)
    hb.extend(b_values)
    whole.extend(a_values + b_values)
    a = sample_report(latency_state=ha.state())
    b = sample_report(
        elapsed_s=11.0,
        connect_failures={"connack timeout": 2, "tcp connect refused": 1},
        qos1={"acked": 5, "received_unique": 4, "lost": 1, "duplicates": 2},
        connects_by_second=[1, 1, 4],
        latency_state=hb.state(),
        stopped_early=True,
    )
    m = merge_reports([a, b])
    assert (m.clients, m.connects_ok, m.connect_attempts, m.peak_connected) == (10, 10, 12, 10)
    assert m.connect_failures == {"connack timeout": 3, "tcp connect refused": 1}
    assert m.qos1 == {"acked": 25, "received_unique": 24, "lost": 1, "duplicates": 2}
    assert m.published == {"0": 20, "1": 40} and m.elapsed_s == 11.0 and m.stopped_early
    assert m.connects_by_second == [4, 3, 4]
    assert m.timeline[0]["connected"] == 10 and m.timeline[0]["t"] == 5.0
    assert m.latency_ms == whole.summary_ms()
    with pytest.raises(ValueError):
        merge_reports([])


def test_report_text_says_when_no_latency_was_measured() -> None:
    """Trial of 2026-12-01: a run without subscribers printed "latency ms: p50 None p95 None ..."."""
    from mqttlb.loadgen.report import Report

    def text(latency: dict[str, float | None]) -> str:
        return Report("w", 1, 5.0, 5, 5, 5, {}, 0, 5, {"0": 5}, 0, 0, {}, latency).to_text()

    assert "latency ms: none measured" in text({"p50": None, "p95": None, "p99": None, "max": None, "count": 0})
    assert "None" not in text({"count": 0})
    measured = text({"p50": 1.0, "p95": 2.0, "p99": 3.0, "max": 4.0, "count": 9})
    assert "latency ms: p50 1.0 p95 2.0 p99 3.0 max 4.0 (n=9)" in measured
    assert "5 ok of 5 attempts (1.0 ok/s over the run)" in measured
