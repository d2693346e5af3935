"""The exporters' ``/metrics``: prometheus-client's own exposition behind mqttlb's credentials and TLS.

The collectors are prometheus-client custom collectors registered in a ``CollectorRegistry``; the text
is prometheus-client's (``prometheus_client.exposition.choose_encoder``): the Prometheus text format
0.0.4 by default, OpenMetrics when the scraper's ``Accept`` asks for ``application/openmetrics-text``
(Prometheus does), gzip-compressed when its ``Accept-Encoding`` allows gzip (Prometheus sends it).
``metric_family`` builds the collectors' empty families.
"""

from __future__ import annotations

import gzip
import http.server
import logging
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from socketserver import ThreadingMixIn

from prometheus_client.exposition import choose_encoder, gzip_accepted
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import CollectorRegistry

from mqttlb.secure import Credentials

log = logging.getLogger(__name__)
REQUEST_TIMEOUT_SECONDS = 10  # a connection idle this long (TLS handshake or request) is closed


def metric_family(
    name: str, documentation: str, labels: Sequence[str] = (), *, counter: bool = False
) -> GaugeMetricFamily | CounterMetricFamily:
    """An empty gauge family (a counter family with ``counter``) whose samples carry the label
    names ``labels``; ``name`` without the ``_total`` a counter's samples get."""
    kind = CounterMetricFamily if counter else GaugeMetricFamily
    return kind(name, documentation, labels=list(labels))


@dataclass(frozen=True)
class Exposition:
    """One rendered ``/metrics`` answer: the body and its ``Content-Type`` / ``Content-Encoding``."""

    body: bytes
    content_type: str
    content_encoding: str | None = None  # "gzip", or None for an uncompressed body


def render(registry: CollectorRegistry, accept: str | None = None, accept_encoding: str | None = None) -> Exposition:
    """Collect ``registry`` now and encode it as the request's ``Accept`` header asks (None: text 0.0.4,
    ``application/openmetrics-text``: OpenMetrics), gzip-compressed if ``Accept-Encoding`` allows gzip.
    Raises whatever a collector raises."""
    encoder, content_type = choose_encoder(accept or "")
    body = encoder(registry)
    if gzip_accepted(accept_encoding or ""):
        return Exposition(gzip.compress(body, compresslevel=1), content_type, "gzip")
    return Exposition(body, content_type)


class _ThreadingServer(ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True


def make_server(
    registry: CollectorRegistry,
    host: str,
    port: int,
    title: str,
    *,
    credentials: Credentials | None = None,
    tls: ssl.SSLContext | None = None,
) -> http.server.HTTPServer:
    """An HTTP server answering ``GET /metrics`` (rendered at request time by :func:`render`) and ``GET /``.

    ``credentials`` (required ones): both paths answer 401 with ``WWW-Authenticate`` without an accepted
    ``Authorization`` header.  ``tls``: a server SSLContext: HTTPS, the handshake done in the request's
    own thread (a slow client holds no other).  Raises OSError when the address cannot be bound."""
    guard = credentials if credentials is not None and credentials.required else None

    class Handler(http.server.BaseHTTPRequestHandler):
        timeout = REQUEST_TIMEOUT_SECONDS

        def do_GET(self) -> None:  # noqa: N802 (http.server API)
            path = self.path.split("?", 1)[0]
            extra: list[tuple[str, str]] = []
            if path in ("/metrics", "/") and guard is not None and not guard.allows(self.headers.get("Authorization")):
                body, status, ctype = b"missing or wrong credentials\n", 401, "text/plain"
                extra.append(("WWW-Authenticate", guard.schemes()))
            elif path == "/metrics":
                try:
                    answer = render(registry, self.headers.get("Accept"), self.headers.get("Accept-Encoding"))
                    body, status, ctype = answer.body, 200, answer.content_type
                    if answer.content_encoding is not None:
                        extra.append(("Content-Encoding", answer.content_encoding))
                except Exception:  # a collector bug: answer 500, keep serving
                    log.exception("rendering /metrics failed")
                    body, status, ctype = b"internal error while collecting metrics\n", 500, "text/plain"
            elif path == "/":
                body, status, ctype = f"{title}: metrics at /metrics\n".encode(), 200, "text/plain"
            else:
                body, status, ctype = b"not found; metrics are at /metrics\n", 404, "text/plain"
            self.send_response(status)
            for header, value in extra:
                self.send_header(header, value)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            log.debug("%s %s", self.address_string(), format % args)

    server = _ThreadingServer((host, port), Handler)
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True, do_handshake_on_connect=False)
    return server
