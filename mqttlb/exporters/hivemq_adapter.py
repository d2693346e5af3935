"""HiveMQ node: scrape the HiveMQ Prometheus extension on demand (pull, no background thread).

Reads the official hivemq-prometheus-extension or the mqttlb extension (brokers/hivemq), which serve the
same names.  The released official extension has no name-suffix or label option; the ``suffix`` and
``labels`` of its unmerged pull request #16 are supported (``metric_suffix``; labels are ignored), see
`mqttlb.exporters.hivemq_mapping`.  The only state kept between scrapes is which CPU source the node
reports (`CpuReader`).
"""

from __future__ import annotations

from mqttlb.exporters.hivemq_mapping import CpuReader, HiveMQParseError, parse_values, to_sample
from mqttlb.exporters.http_fetch import FetchError, InflightFetches, fetch_text, new_session
from mqttlb.exporters.node_adapter import BrokerSample
from mqttlb.exporters.scrape_errors import ScrapeErrorReason

MAX_BYTES = 32 * 1024 * 1024


class HiveMQAdapter:
    kind = "hivemq"
    blocking = True

    def __init__(self, name: str, address: str, metrics_url: str, metric_suffix: str | None = None) -> None:
        self.name = name
        self.address = address
        self.metrics_url = metrics_url
        self.metric_suffix = metric_suffix  # the official extension's `suffix` setting (PR #16 builds)
        self._cpu = CpuReader()
        self._session = new_session()  # keep-alive between scrapes; a cut fetch drops its connection
        self._inflight = InflightFetches()

    def start(self) -> None:
        pass

    def close(self) -> None:
        """Ends a scrape in progress at once (down, reason timeout); later snapshots fail at once."""
        self._inflight.abort()
        self._session.close()

    def snapshot(self, timeout: float) -> BrokerSample:
        """The node's values, within ``timeout`` seconds in all (the fetch's own deadline)."""
        try:
            text = fetch_text(self.metrics_url, timeout, MAX_BYTES, self._session, self._inflight)
        except FetchError as exc:
            return BrokerSample.down(str(exc), exc.reason)
        try:
            return to_sample(parse_values(text, self.metric_suffix), self._cpu)
        except HiveMQParseError as exc:
            return BrokerSample.down(f"{self.metrics_url}: {exc}", ScrapeErrorReason.BAD_ANSWER)
