"""Minimal Prometheus HTTP API client for instant queries (``/api/v1/query``) with a timeout."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import requests


class PrometheusError(RuntimeError):
    """Prometheus could not answer (down, slow, error status or an unexpected response)."""


@dataclass(frozen=True)
class InstantSample:
    labels: dict[str, str]
    value: float
    timestamp: float


def parse_vector(document: Any) -> list[InstantSample]:
    """Parse an instant-query response; only ``resultType: vector`` is accepted."""
    if not isinstance(document, dict):
        raise PrometheusError("response is not a JSON object")
    if document.get("status") != "success":
        raise PrometheusError(f"query failed: {document.get('errorType')}: {document.get('error')}")
    data = document.get("data")
    if not isinstance(data, dict) or data.get("resultType") != "vector":
        raise PrometheusError(f"expected a vector result, got {data!r:.200}")
    samples = []
    for item in data.get("result") or []:
        try:
            labels = {str(k): str(v) for k, v in item["metric"].items()}
            ts_raw, value_raw = item["value"]
            value = float(value_raw)
            timestamp = float(ts_raw)
        except (KeyError, TypeError, ValueError) as exc:
            raise PrometheusError(f"malformed vector element {item!r:.200}") from exc
        if not math.isfinite(timestamp):
            raise PrometheusError(f"non-finite timestamp in {item!r:.200}")
        samples.append(InstantSample(labels, value, timestamp))
    return samples


class PrometheusClient:
    def __init__(self, base_url: str, timeout: float = 2.0, session: requests.Session | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.session = session or requests.Session()

    def query(self, expr: str) -> list[InstantSample]:
        try:
            response = self.session.get(
                f"{self.base_url}/api/v1/query", params={"query": expr}, timeout=self.timeout
            )
        except requests.Timeout as exc:
            raise PrometheusError(f"timeout after {self.timeout}s querying {expr!r}") from exc
        except requests.RequestException as exc:
            raise PrometheusError(f"cannot reach Prometheus at {self.base_url}: {exc}") from exc
        try:
            document = response.json()
        except ValueError as exc:
            raise PrometheusError(f"HTTP {response.status_code}: response is not JSON") from exc
        return parse_vector(document)
