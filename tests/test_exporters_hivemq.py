"""The broker exporter's HiveMQ side on the real CE 2025.5 output (tests/fixtures/hivemq/ce-2025.5-*.txt):
non-finite values never reach the exporter's output (issue 16's NaN CPU), and the name suffix and labels of
the official Prometheus extension's pull request #16 are read (its released versions have neither)."""

from __future__ import annotations

import http.server
import math
import re
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from stackutil import StubHandler, serve_stub

from mqttlb import contract
from mqttlb.exporters.adapters import build_adapter
from mqttlb.exporters.broker_collector import BrokerCollector, NodeEntry
from mqttlb.exporters.broker_config import BrokerExporterConfigError, parse_config
from mqttlb.exporters.hivemq_adapter import HiveMQAdapter
from mqttlb.exporters.hivemq_mapping import CPU_JVM_NS, CpuReader, HiveMQParseError, parse_values, to_sample

FIXTURES = Path(__file__).parent / "fixtures" / "hivemq"
CE_TEXT = (FIXTURES / "ce-2025.5-metrics.txt").read_text()
# CE_TEXT with com_hivemq_system_os_process_time_spent_user NaN (a JVM's first reading)
NAN_CPU_TEXT = (FIXTURES / "ce-2025.5-nan-cpu.txt").read_text()
CE_OS_CPU_SECONDS = (2550.0 + 240.0) / 1000  # user + kernel ms of the fixture
CE_JVM_CPU_SECONDS = 2.79  # com_hivemq_system_process_cpu_time 2.79E9 ns
NAME = re.compile(r"^(# (?:HELP|TYPE) )?([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?")


def replace_sample(text: str, name: str, value: str) -> str:
    new, count = re.subn(rf"^{name} \S+$", f"{name} {value}", text, flags=re.MULTILINE)
    assert count == 1, name
    return new


def with_pr16_options(text: str, suffix: str, label: str) -> str:
    """``text`` as a hivemq-prometheus-extension build of pull request #16 serves it with ``suffix=<suffix>``
    and ``labels=<label>``: every name + ``"_" + sanitised suffix``, the label after a sample's own labels."""
    ending = re.sub(r"[^a-zA-Z0-9:_]", "_", "." + suffix)

    def rename(match: re.Match[str]) -> str:
        comment, name, labels = match.group(1), match.group(2), match.group(3)
        if comment:
            return comment + name + ending
        return f"{name}{ending}{{{(labels or '{}')[1:-1]}{label},}}"

    return "\n".join(NAME.sub(rename, line) for line in text.splitlines()) + "\n"


class Serve(StubHandler):
    body: ClassVar[str] = ""

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        self.answer(200, Serve.body, "text/plain; version=0.0.4")


@pytest.fixture
def serving() -> Iterator[str]:
    """The URL of a server answering ``Serve.body`` (set it before scraping)."""
    server: http.server.ThreadingHTTPServer = serve_stub(Serve)
    try:
        yield f"http://127.0.0.1:{server.server_port}/metrics"
    finally:
        server.shutdown()
        server.server_close()


def exported(adapter: HiveMQAdapter) -> str:
    """The broker exporter's /metrics text for one node read by ``adapter``."""
    registry = CollectorRegistry()
    registry.register(BrokerCollector("local", [NodeEntry(adapter, 1)], timeout=2))
    return generate_latest(registry).decode()


def node_values(text: str) -> dict[str, float]:
    return {
        s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples if s.labels.get("node")
    }


# --- NaN and infinite samples ----------------------------------------------------------------------
def test_a_nan_os_cpu_reading_falls_back_to_the_jvm_cpu_time() -> None:
    assert to_sample(parse_values(CE_TEXT)).cpu_seconds == pytest.approx(CE_OS_CPU_SECONDS)
    sample = to_sample(parse_values(NAN_CPU_TEXT))
    assert sample.up and sample.cpu_seconds == pytest.approx(CE_JVM_CPU_SECONDS)


def test_no_finite_cpu_source_drops_the_cpu_sample_and_keeps_the_node_up(serving: str) -> None:
    Serve.body = replace_sample(NAN_CPU_TEXT, CPU_JVM_NS, "+Inf")
    text = exported(HiveMQAdapter("hq", "h:1883", serving))
    values = node_values(text)
    assert values[contract.BROKER_UP] == 1 and values[contract.BROKER_CLIENTS_CONNECTED] == 2
    assert contract.BROKER_CPU_SECONDS not in values
    assert all(math.isfinite(v) for v in values.values()), text


def test_a_node_keeps_its_cpu_source_and_drops_a_bad_reading_instead_of_switching(serving: str) -> None:
    """user+kernel ms and the JVM's ns count differently: a switch between scrapes could go backwards,
    which rate() takes for a counter reset (a CPU spike that never happened)."""
    adapter = HiveMQAdapter("hq", "h:1883", serving)
    Serve.body = CE_TEXT
    assert node_values(exported(adapter))[contract.BROKER_CPU_SECONDS] == pytest.approx(CE_OS_CPU_SECONDS)
    Serve.body = NAN_CPU_TEXT
    assert contract.BROKER_CPU_SECONDS not in node_values(exported(adapter))
    Serve.body = CE_TEXT
    assert node_values(exported(adapter))[contract.BROKER_CPU_SECONDS] == pytest.approx(CE_OS_CPU_SECONDS)


def test_a_reader_that_started_on_the_jvm_time_stays_on_it() -> None:
    reader = CpuReader()
    assert reader.seconds(parse_values(NAN_CPU_TEXT)) == pytest.approx(CE_JVM_CPU_SECONDS)
    assert (reader.source, reader.seconds(parse_values(CE_TEXT))) == ("jvm", pytest.approx(CE_JVM_CPU_SECONDS))


@pytest.mark.parametrize("bad", ["NaN", "+Inf", "-Inf"])
def test_non_finite_values_of_mapped_series_are_left_out(bad: str) -> None:
    text = replace_sample(CE_TEXT, "com_hivemq_networking_connections_current", bad)
    sample = to_sample(parse_values(text))
    assert sample.up and sample.clients_connected is None and sample.retained == 1


# --- the official extension's suffix and labels (pull request #16) -----------------------------------
def test_a_node_with_a_name_suffix_and_labels_is_up_when_the_suffix_is_configured(serving: str) -> None:
    Serve.body = with_pr16_options(CE_TEXT, "cluster-01", 'host="hq1"')
    assert 'com_hivemq_networking_connections_current_cluster_01{host="hq1",} 2.0' in Serve.body
    assert 'mqttlb_hivemq_evict_command_size_cluster_01{quantile="0.5",host="hq1",} 1.0' in Serve.body
    config = parse_config(
        {
            "cluster": "local",
            "nodes": [
                {
                    "name": "hq",
                    "kind": "hivemq",
                    "address": "h:1883",
                    "cpu_cores": 1,
                    "metrics_url": serving,
                    "metric_suffix": "cluster-01",
                }
            ],
        }
    )
    adapter = build_adapter(config.nodes[0], config)
    assert isinstance(adapter, HiveMQAdapter)
    values = node_values(exported(adapter))
    assert values[contract.BROKER_UP] == 1 and values[contract.BROKER_CLIENTS_CONNECTED] == 2
    assert values[contract.BROKER_CPU_SECONDS] == pytest.approx(CE_OS_CPU_SECONDS)
    Serve.body = CE_TEXT  # the same node without the options: the same values
    plain = node_values(exported(HiveMQAdapter("hq", "h:1883", serving)))
    timing = contract.BROKER_SCRAPE_DURATION
    assert {k: v for k, v in values.items() if k != timing} == {k: v for k, v in plain.items() if k != timing}


def test_a_suffix_that_is_not_configured_is_named_in_the_down_reason(serving: str) -> None:
    Serve.body = with_pr16_options(CE_TEXT, "cluster-01", 'host="hq1"')
    down = HiveMQAdapter("hq", "h:1883", serving).snapshot(2)
    assert not down.up
    assert "none of the expected names with no metric_suffix" in (down.error or "")
    assert "set metric_suffix" in (down.error or "")
    with pytest.raises(HiveMQParseError, match="with metric_suffix 'other'"):
        parse_values(Serve.body, "other")


def test_metric_suffix_is_for_hivemq_nodes_only() -> None:
    node = {"name": "m", "kind": "mosquitto", "address": "h:1883", "cpu_cores": 1, "metric_suffix": "x"}
    with pytest.raises(BrokerExporterConfigError, match="metric_suffix is for hivemq nodes"):
        parse_config({"cluster": "local", "nodes": [node]})
