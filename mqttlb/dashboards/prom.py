"""The few Prometheus HTTP API calls the dashboard tools need (range queries and label values)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

import requests


class PrometheusError(RuntimeError):
    """Prometheus refused a query or could not be reached; the message says which and why."""


@dataclass(frozen=True)
class Series:
    labels: dict[str, str]
    points: list[tuple[float, float]]  # (unix time, value); NaN kept as NaN


def check_url(url: str) -> str:
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise ValueError(f"Prometheus URL must look like http://host:port, got {url!r}")
    return url.rstrip("/")


class Prometheus:
    def __init__(self, base_url: str, timeout: float = 10.0, session: requests.Session | None = None) -> None:
        self.base_url = check_url(base_url)
        self.timeout = timeout
        self.session = session or requests.Session()

    def _get(self, path: str, params: dict[str, Any]) -> Any:
        url = f"{self.base_url}{path}"
        try:
            response = self.session.get(url, params=params, timeout=self.timeout)
        except requests.RequestException as exc:
            raise PrometheusError(f"cannot reach Prometheus at {url}: {exc}") from exc
        try:
            body = response.json()
        except ValueError as exc:
            raise PrometheusError(f"{url} answered HTTP {response.status_code} without JSON") from exc
        if body.get("status") != "success":
            raise PrometheusError(
                f"{body.get('errorType', 'error')}: {body.get('error', response.text[:200])}"
            )
        return body["data"]

    def query_range(self, expr: str, start: float, end: float, step: float) -> list[Series]:
        data = self._get("/api/v1/query_range", {"query": expr, "start": start, "end": end, "step": step})
        if data.get("resultType") != "matrix":
            raise PrometheusError(f"expected a matrix for {expr!r}, got {data.get('resultType')}")
        result = []
        for item in data.get("result", []):
            points = [(float(t), _to_float(v)) for t, v in item.get("values", [])]
            result.append(Series(dict(item.get("metric", {})), points))
        return result

    def label_values(self, selector: str, label: str, start: float, end: float) -> list[str]:
        data = self._get(f"/api/v1/label/{label}/values", {"match[]": selector, "start": start, "end": end})
        return [str(v) for v in data]


def _to_float(value: str) -> float:
    try:
        return float(value)
    except ValueError:
        return math.nan
