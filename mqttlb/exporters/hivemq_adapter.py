"""HiveMQ node: scrape the HiveMQ Prometheus extension on demand (pull, no background state)."""

from __future__ import annotations

from mqttlb.exporters.hivemq_mapping import HiveMQParseError, parse_values, to_sample
from mqttlb.exporters.http_fetch import FetchError, fetch_text
from mqttlb.exporters.node_adapter import BrokerSample

MAX_BYTES = 32 * 1024 * 1024


class HiveMQAdapter:
    kind = "hivemq"
    blocking = True

    def __init__(self, name: str, address: str, metrics_url: str) -> None:
        self.name = name
        self.address = address
        self.metrics_url = metrics_url

    def start(self) -> None:
        pass

    def close(self) -> None:
        pass

    def snapshot(self, timeout: float) -> BrokerSample:
        try:
            text = fetch_text(self.metrics_url, timeout, MAX_BYTES)
            return to_sample(parse_values(text))
        except (FetchError, HiveMQParseError) as exc:
            return BrokerSample.down(str(exc))
