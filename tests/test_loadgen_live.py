"""The load generator against a real Mosquitto: delivery accounting, churn, bounded stop, hot node."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from mqttlb.loadgen.cli import main as loadgen_main
from mqttlb.loadgen.engine import run
from mqttlb.loadgen.hot import HotNodeDriver
from mqttlb.loadgen.shard import run_sharded
from mqttlb.loadgen.standalone import StandaloneBroker, free_port, standalone_mosquitto
from mqttlb.loadgen.workload import build_workload, parse_profile

pytestmark = pytest.mark.live


@pytest.fixture(scope="module")
def broker() -> Iterator[StandaloneBroker]:
    with standalone_mosquitto() as b:
        yield b


def test_qos1_delivery_is_complete_under_churn_and_the_run_stops_by_itself(broker: StandaloneBroker) -> None:
    workload = build_workload(
        [
            parse_profile("sensor:30:rate=20,qos=1,session=uniform:0.5:1.5,pause=0.1"),
            parse_profile("heavy:1:rate=300,qos=1,size=512"),
            parse_profile("fire:2:rate=200,qos=0"),
        ],
        port=broker.port,
        duration=4,
        seed=3,
        connect_rate=300,
        progress_interval=1,
    )
    started = time.monotonic()
    report = asyncio.run(run(workload))
    took = time.monotonic() - started

    assert took < workload.duration + workload.drain + 3
    assert not report.stopped_early
    q = report.qos1
    assert q["acked"] > 1000
    assert q["lost"] == 0 and q["duplicates"] == 0
    assert q["received_unique"] == q["acked"] + q["received_without_ack"]
    assert report.published["1"] >= q["acked"]
    assert report.published["0"] > 1000
    # churn: sessions of 0.5..1.5 s in a 4 s run mean several sessions per sensor
    assert report.connects_ok > 30 + 30
    assert report.connect_failures == {} and report.unexpected_disconnects == 0
    assert report.latency_ms["count"] == report.received and report.latency_ms["p99"] is not None
    assert report.timeline and report.timeline[-1]["connects_ok"] <= report.connects_ok


def test_stop_event_ends_a_long_run_early_and_gracefully(broker: StandaloneBroker) -> None:
    workload = build_workload([parse_profile("sensor:20:rate=5,qos=1")], port=broker.port, duration=600)

    async def scenario() -> tuple[float, object]:
        stop = asyncio.Event()
        asyncio.get_running_loop().call_later(1.5, stop.set)
        started = time.monotonic()
        report = await run(workload, stop=stop)
        return time.monotonic() - started, report

    took, report = asyncio.run(scenario())
    assert took < 1.5 + workload.drain + 3
    assert report.stopped_early  # type: ignore[attr-defined]
    assert report.qos1["acked"] > 0 and report.qos1["lost"] == 0  # type: ignore[attr-defined]


def test_connect_failures_are_counted_and_bounded_when_nothing_listens() -> None:
    workload = build_workload([parse_profile("a:5:rate=1")], port=free_port(), duration=2, connect_rate=50)
    started = time.monotonic()
    report = asyncio.run(run(workload))
    assert time.monotonic() - started < 2 + 5
    assert report.connects_ok == 0 and report.peak_connected == 0
    assert report.connect_failures.get("tcp connect refused", 0) >= 5
    assert report.connect_attempts == report.connect_failures_total


def test_subscribers_receive_publishers_on_the_same_broker(broker: StandaloneBroker) -> None:
    workload = build_workload(
        [parse_profile("sub:2"), parse_profile("pub:3:rate=50,start=0.5")],
        port=broker.port,
        duration=2.5,
        topic_prefix="mqttlb/subtest",
    )
    report = asyncio.run(run(workload))
    # each of the 2 subscribers sees every message of the 3 publishers, except the few still in
    # flight when everyone leaves at the deadline (3 x 50 msg/s: a handful per 10 ms tick)
    assert report.published["0"] > 100
    assert 2 * report.published["0"] - 30 <= report.received <= 2 * report.published["0"]


def test_hot_node_driver_loads_one_broker_and_stops_when_the_block_ends(broker: StandaloneBroker) -> None:
    proc = psutil.Process(broker.pid)
    cpu_before = sum(proc.cpu_times()[:2])
    started = time.monotonic()
    with HotNodeDriver(broker.port, publishers=2, rate=1000, duration=60) as hot:
        time.sleep(2.0)
    took = time.monotonic() - started
    report = hot.report
    assert report is not None and report.stopped_early
    assert took < 2.0 + 10
    assert report.published["0"] > 0.5 * 2 * 1000 * 1.5
    assert sum(proc.cpu_times()[:2]) - cpu_before > 0.02


def test_cli_writes_a_json_report_and_refuses_bad_input(broker: StandaloneBroker, tmp_path: Path) -> None:
    out = tmp_path / "report.json"
    rc = loadgen_main(
        [
            "--port",
            str(broker.port),
            "--duration",
            "2",
            "--seed",
            "5",
            "--quiet",
            "--fail-on-loss",
            "--profile",
            "sensor:10:rate=10,qos=1",
            "--churn",
            "fixed:0.7",
            "--json-out",
            str(out),
        ]
    )
    assert rc == 0
    data = json.loads(out.read_text())
    assert data["seed"] == 5 and data["qos1"]["lost"] == 0 and data["qos1"]["acked"] > 50
    assert data["connects_ok"] > 10  # fixed 0.7 s sessions: every sensor reconnected
    assert {"p50", "p95", "p99"} <= set(data["latency_ms"])

    bad = tmp_path / "bad.json"
    assert (
        loadgen_main(
            ["--port", str(broker.port), "--profile", "x:1:qos=7", "--duration", "1", "--json-out", str(bad)]
        )
        == 2
    )
    assert loadgen_main(["--profile", "x:1:rate=1", "--json-out", str(bad)]) == 2  # no --duration
    assert loadgen_main(["--host", "192.0.2.1", "--profile", "x:1:rate=1", "--duration", "1"]) == 2
    assert not bad.exists()


def test_two_worker_processes_split_the_clients_and_merge_one_report(broker: StandaloneBroker) -> None:
    workload = build_workload(
        [parse_profile("sensor:20:rate=10,qos=1,session=fixed:1"), parse_profile("idle:30:rate=0")],
        port=broker.port,
        duration=3,
        progress_interval=1,
        client_prefix="shard",
    )
    ticks: list[dict[str, object]] = []
    report = run_sharded(workload, 2, progress=ticks.append)
    assert report.clients == 50
    assert report.qos1["acked"] > 100 and report.qos1["lost"] == 0 and report.qos1["duplicates"] == 0
    assert report.qos1["streams"] >= 20 * 2  # every sensor ran at least two 1 s sessions
    assert report.peak_connected == 50 and report.connect_failures == {}
    assert ticks and all(tick["connected"] <= 50 for tick in ticks)
