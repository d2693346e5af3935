"""Prometheus text format 0.0.4 for collector output, and the HTTP server that serves it.

prometheus-client's ``generate_latest`` validates and escapes every label of every sample; for an
Envoy with 1,000 endpoints (about 8,000 samples sharing 1,000 label sets) that alone took longer
than the whole scrape budget.  Here the collectors are still prometheus-client custom collectors
(registered in a ``CollectorRegistry``); only the serialisation is done with the label string of
each distinct label set escaped once per scrape.  Output is the same text format (checked by
``promtool check metrics`` in the tests).
"""

from __future__ import annotations

import http.server
import logging
import math
from collections.abc import Iterable
from socketserver import ThreadingMixIn

from prometheus_client.registry import CollectorRegistry
from prometheus_client.samples import Sample

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_TYPE_MAP = {"info": "gauge", "stateset": "gauge", "gaugehistogram": "histogram", "unknown": "untyped"}

log = logging.getLogger(__name__)


def _escape_label_value(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def format_value(value: float) -> str:
    if value == math.inf:
        return "+Inf"
    if value == -math.inf:
        return "-Inf"
    if value != value:
        return "NaN"
    return repr(float(value))


def render(registry: CollectorRegistry) -> bytes:
    return render_families(registry.collect())


def render_families(families: Iterable) -> bytes:
    out: list[str] = []
    label_cache: dict[tuple[tuple[str, str], ...], str] = {}
    for family in families:
        name = family.name + ("_total" if family.type == "counter" else "")
        if family.type == "info":
            name = family.name + "_info"
        documentation = family.documentation.replace("\\", r"\\").replace("\n", r"\n")
        out.append(f"# HELP {name} {documentation}\n# TYPE {name} {_TYPE_MAP.get(family.type, family.type)}\n")
        sample: Sample
        for sample in family.samples:
            if sample.name.endswith("_created"):
                continue  # OpenMetrics-only sample
            if sample.labels:
                key = tuple(sample.labels.items())
                labels = label_cache.get(key)
                if labels is None:
                    inner = ",".join(f'{k}="{_escape_label_value(str(v))}"' for k, v in key)
                    labels = label_cache[key] = "{" + inner + "}"
                out.append(f"{sample.name}{labels} {format_value(sample.value)}\n")
            else:
                out.append(f"{sample.name} {format_value(sample.value)}\n")
    return "".join(out).encode("utf-8")


class _ThreadingServer(ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True


def make_server(registry: CollectorRegistry, host: str, port: int, title: str) -> http.server.HTTPServer:
    """An HTTP server answering ``GET /metrics`` (rendered at request time) and ``GET /``."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server API)
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                try:
                    body, status, ctype = render(registry), 200, CONTENT_TYPE
                except Exception:  # a collector bug: answer 500, keep serving
                    log.exception("rendering /metrics failed")
                    body, status, ctype = b"internal error while collecting metrics\n", 500, "text/plain"
            elif path == "/":
                body, status, ctype = f"{title}: metrics at /metrics\n".encode(), 200, "text/plain"
            else:
                body, status, ctype = b"not found; metrics are at /metrics\n", 404, "text/plain"
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            log.debug("%s %s", self.address_string(), format % args)

    return _ThreadingServer((host, port), Handler)
