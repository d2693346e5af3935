"""Prometheus text format 0.0.4 for collector output, and the HTTP server that serves it.

prometheus-client's ``generate_latest`` validates and escapes every label of every sample; for an
Envoy with 1,000 endpoints (about 8,000 samples sharing 1,000 label sets) that alone took longer
than the whole scrape budget.  Here the collectors are still prometheus-client custom collectors
(registered in a ``CollectorRegistry``); only the serialisation is done with the label string of
each distinct label set escaped once per scrape.  Output is the same text format (checked by
``promtool check metrics`` in the tests).  ``metric_family`` builds the collectors' empty families.
"""

from __future__ import annotations

import http.server
import logging
import ssl
from collections.abc import Iterable, Sequence
from socketserver import ThreadingMixIn

from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import CollectorRegistry

from mqttlb.secure import Credentials

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_SPECIAL = {"nan": "NaN", "inf": "+Inf", "-inf": "-Inf"}  # Python repr -> text format
_TYPE_MAP = {"info": "gauge", "stateset": "gauge", "gaugehistogram": "histogram", "unknown": "untyped"}

log = logging.getLogger(__name__)
REQUEST_TIMEOUT_SECONDS = 10  # a connection idle this long (TLS handshake or request) is closed


def _escape_label_value(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def label_text(labels: dict[str, str]) -> str:
    return "{" + ",".join(f'{k}="{_escape_label_value(str(v))}"' for k, v in labels.items()) + "}"


class LabelSet(dict[str, str]):
    """A label dict that carries its rendered text.  Collectors that put the same label set on many
    samples (an Envoy endpoint has eight) build one of these, so rendering costs one lookup."""

    __slots__ = ("text",)

    def __init__(self, labels: dict[str, str]) -> None:
        super().__init__(labels)
        self.text = label_text(labels)

    def plus(self, name: str, value: str) -> LabelSet:
        """This label set with one more label (the new text is derived, not re-escaped)."""
        suffix = _SUFFIXES.get((name, value))
        if suffix is None:
            suffix = f',{name}="{_escape_label_value(value)}"}}'
            if len(_SUFFIXES) < 1024:  # meant for a few constant values such as health statuses
                _SUFFIXES[(name, value)] = suffix
        extended = LabelSet.__new__(LabelSet)
        dict.update(extended, self)
        extended[name] = value
        extended.text = self.text[:-1] + suffix
        return extended


_SUFFIXES: dict[tuple[str, str], str] = {}  # (name, value) -> ',name="value"}' for LabelSet.plus


def metric_family(
    name: str, documentation: str, labels: Sequence[str] = (), *, counter: bool = False
) -> GaugeMetricFamily | CounterMetricFamily:
    """An empty gauge family (a counter family with ``counter``) whose samples carry the label
    names ``labels``; ``name`` without the ``_total`` a counter's samples get."""
    kind = CounterMetricFamily if counter else GaugeMetricFamily
    return kind(name, documentation, labels=list(labels))


def render(registry: CollectorRegistry) -> bytes:
    return render_families(registry.collect())


def render_families(families: Iterable[Metric]) -> bytes:
    out: list[str] = []
    # Label sets are escaped once: by identity for dicts shared between samples (the collectors
    # share one dict per endpoint/node), else by content.
    by_id: dict[int, tuple[dict[str, str], str]] = {}  # holds the dict so its id is not reused
    by_content: dict[tuple[tuple[str, str], ...], str] = {}
    append = out.append
    for family in families:
        name = family.name + ("_total" if family.type == "counter" else "")
        if family.type == "info":
            name = family.name + "_info"
        documentation = family.documentation.replace("\\", r"\\").replace("\n", r"\n")
        append(f"# HELP {name} {documentation}\n# TYPE {name} {_TYPE_MAP.get(family.type, family.type)}\n")
        created = family.name + "_created"  # OpenMetrics-only sample, not in this format
        for sample_name, labels, value, *_rest in family.samples:
            text = repr(float(value))
            if text[-1] in "fn":  # nan, inf, -inf
                text = _SPECIAL[text]
            if not labels:
                if sample_name != created:
                    append(f"{sample_name} {text}\n")
                continue
            if type(labels) is LabelSet:
                rendered = labels.text
            elif (cached := by_id.get(id(labels))) is not None:
                rendered = cached[1]
            else:
                key = tuple(labels.items())
                found = by_content.get(key)
                if found is None:
                    found = by_content[key] = label_text(labels)
                rendered = found
                by_id[id(labels)] = (labels, rendered)
            if sample_name != created:
                append(f"{sample_name}{rendered} {text}\n")
    return "".join(out).encode("utf-8")


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
    """An HTTP server answering ``GET /metrics`` (rendered at request time) and ``GET /``.

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
                    body, status, ctype = render(registry), 200, CONTENT_TYPE
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
