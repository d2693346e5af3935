"""The Prometheus HTTP API calls mqttlb makes: instant queries (the webhook's per-node samples),
range queries and label values (the dashboard tools).  One client, one error type.

Every request is bounded by the client's ``timeout`` (seconds, connect and read).  Values are
floats; Prometheus's ``"NaN"``, ``"+Inf"`` and ``"-Inf"`` become the float values they name.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

import requests

from mqttlb.http_call import send


class PrometheusApiError(RuntimeError):
    """Prometheus could not answer (down, slow), refused the query (the API's errorType and error
    are in the message), or answered with something that is not the documented shape."""


@dataclass(frozen=True)
class InstantSample:
    labels: dict[str, str]
    value: float
    timestamp: float  # unix seconds of the evaluation


@dataclass(frozen=True)
class RangeSeries:
    labels: dict[str, str]
    points: list[tuple[float, float]]  # (unix seconds, value), ascending; NaN kept as NaN


def check_url(url: str) -> str:
    """``url`` without a trailing slash; ValueError unless it looks like http(s)://host[:port]."""
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise ValueError(f"Prometheus URL must look like http://host:port, got {url!r}")
    return url.rstrip("/")


def _data(document: Any, result_type: str | None) -> Any:
    """The ``data`` of a successful API answer (of ``result_type`` if given)."""
    if not isinstance(document, dict):
        raise PrometheusApiError("response is not a JSON object")
    if document.get("status") != "success":
        raise PrometheusApiError(f"query failed: {document.get('errorType')}: {document.get('error')}")
    data = document.get("data")
    if result_type is not None and (not isinstance(data, dict) or data.get("resultType") != result_type):
        raise PrometheusApiError(f"expected a {result_type} result, got {data!r:.200}")
    return data


def _labels(item: Any) -> dict[str, str]:
    return {str(k): str(v) for k, v in item["metric"].items()}


def parse_vector(document: Any) -> list[InstantSample]:
    """An instant-query answer (``resultType: vector``) -> its samples; raises PrometheusApiError."""
    samples = []
    for item in _data(document, "vector").get("result") or []:
        try:
            ts_raw, value_raw = item["value"]
            sample = InstantSample(_labels(item), float(value_raw), float(ts_raw))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise PrometheusApiError(f"malformed vector element {item!r:.200}") from exc
        if not math.isfinite(sample.timestamp):
            raise PrometheusApiError(f"non-finite timestamp in {item!r:.200}")
        samples.append(sample)
    return samples


def parse_matrix(document: Any) -> list[RangeSeries]:
    """A range-query answer (``resultType: matrix``) -> its series; raises PrometheusApiError."""
    series = []
    for item in _data(document, "matrix").get("result") or []:
        try:
            points = [(float(t), float(v)) for t, v in item["values"]]
            series.append(RangeSeries(_labels(item), points))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise PrometheusApiError(f"malformed matrix element {item!r:.200}") from exc
    return series


class PrometheusApi:
    """Prometheus at ``base_url`` (``http://host:port``; ValueError otherwise)."""

    def __init__(self, base_url: str, timeout: float = 2.0, session: requests.Session | None = None) -> None:
        self.base_url = check_url(base_url)
        self.timeout = timeout
        self.session = session if session is not None else requests.Session()

    def _get(self, path: str, params: dict[str, Any]) -> Any:
        """The decoded JSON answer of ``GET path``, whatever its status."""
        url = f"{self.base_url}{path}"
        response = send(
            self.session, "GET", url, what=f"GET {url}", error=PrometheusApiError, timeout=self.timeout,
            unreachable=f"cannot reach Prometheus at {self.base_url}: ", params=params,
        )
        try:
            return response.json()
        except ValueError:
            raise PrometheusApiError(f"{url} answered HTTP {response.status_code} without JSON") from None

    def query(self, expr: str, at: float | None = None) -> list[InstantSample]:
        """``/api/v1/query``: ``expr`` evaluated now (or at unix time ``at``)."""
        params: dict[str, Any] = {"query": expr}
        if at is not None:
            params["time"] = at
        return parse_vector(self._get("/api/v1/query", params))

    def query_range(self, expr: str, start: float, end: float, step: float) -> list[RangeSeries]:
        """``/api/v1/query_range`` from ``start`` to ``end`` (unix seconds) every ``step`` seconds."""
        return parse_matrix(
            self._get("/api/v1/query_range", {"query": expr, "start": start, "end": end, "step": step})
        )

    def label_values(self, selector: str, label: str, start: float, end: float) -> list[str]:
        """Values of ``label`` on series matching ``selector`` between ``start`` and ``end``."""
        data = _data(
            self._get(f"/api/v1/label/{label}/values", {"match[]": selector, "start": start, "end": end}), None
        )
        if not isinstance(data, list):
            raise PrometheusApiError(f"label values of {label}: expected a list, got {data!r:.200}")
        return [str(v) for v in data]
