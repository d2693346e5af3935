"""The webhook's HTTP server: waitress with connection limits, idle timeouts and JSON errors.

waitress' defaults let 150 idle TCP connections (no token needed) hold the webhook unreachable for
about 2 minutes (``connection_limit`` 100, ``channel_timeout`` 120 s), and it answered a too-large
body with a plain-text 413 that the webhook neither counted nor logged.  Here:

- at most ``CONNECTION_LIMIT`` connections; one idle for ``CHANNEL_TIMEOUT_SECONDS`` is closed
  (checked every ``CLEANUP_INTERVAL_SECONDS``); ``THREADS`` workers run the app, and waitress
  buffers a request completely before a worker sees it, so a slow client holds no worker;
- a body of more than ``max_body_bytes`` (by Content-Length, or counted while a chunked body
  arrives) and a request waitress cannot parse are answered by waitress itself, before the app:
  in JSON ``{"error": ...}``, reported to ``on_error`` (which counts and logs them).

waitress has no TLS: with the config's ``tls``, :func:`create_tls_webhook_server` serves the same app
over HTTPS with cheroot (CherryPy's threaded WSGI server) and its builtin ``ssl`` adapter, with the same
thread count and idle timeout; bodies over the limit are then refused by the app (a JSON 413, counted).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from cheroot import wsgi
from cheroot.ssl.builtin import BuiltinSSLAdapter
from waitress import create_server
from waitress.channel import HTTPChannel
from waitress.server import BaseWSGIServer
from waitress.task import ErrorTask
from waitress.wasyncore import close_all

from mqttlb.secure import ServerTls

log = logging.getLogger(__name__)

CONNECTION_LIMIT = 1000
CHANNEL_TIMEOUT_SECONDS = 10
CLEANUP_INTERVAL_SECONDS = 2
THREADS = 8
IDENT = "mqttlb-webhook"

#: ``on_error(method, path, status, client)`` -> the short error message to answer with.
ErrorHook = Callable[[str, str, int, str], str]


def _channel_class(on_error: ErrorHook) -> type[HTTPChannel]:
    class JsonErrorTask(ErrorTask):
        """waitress' own refusals (413, 400, 431, ...) in JSON, reported to ``on_error``."""

        def execute(self) -> None:
            error = self.request.error
            addr = self.channel.addr
            client = str(addr[0]) if isinstance(addr, tuple) and addr else str(addr)
            # a request that failed to parse may have no method or path yet
            method = getattr(self.request, "command", None) or "-"
            path = getattr(self.request, "path", None) or "-"
            message = on_error(str(method), str(path), int(error.code), client)
            body = json.dumps({"error": message}).encode()
            self.status = f"{error.code} {error.reason}"
            self.response_headers.append(("Content-Type", "application/json"))
            self.set_close_on_finish()
            self.content_length = len(body)
            self.write(body)

    class JsonErrorChannel(HTTPChannel):
        error_task_class = JsonErrorTask

    return JsonErrorChannel


class Serving(Protocol):
    """A bound server: ``run()`` serves until ``close()``; ``port`` is the port bound."""

    @property
    def port(self) -> int: ...

    def run(self) -> None: ...

    def close(self) -> None: ...


@dataclass
class WebhookServer:
    """A bound, not yet running waitress server; ``run()`` serves until ``close()``."""

    server: Any  # waitress' TcpWSGIServer or MultiSocketServer
    socket_map: dict[int, Any] = field(repr=False)

    @property
    def port(self) -> int:
        """The port bound (useful with port 0); the first one when several addresses are bound."""
        servers = [s for s in self.socket_map.values() if isinstance(s, BaseWSGIServer)]
        return int(servers[0].effective_port)

    def run(self) -> None:
        self.server.run()

    def close(self) -> None:
        """Close the listening sockets and every connection; ``run()`` returns."""
        close_all(self.socket_map)
        self.server.task_dispatcher.shutdown(timeout=1)


def create_webhook_server(
    app: Callable[..., Any], host: str, port: int, *, max_body_bytes: int, on_error: ErrorHook
) -> WebhookServer:
    """Bind ``app`` (a WSGI app) on ``host:port`` (0 = any free port) with the settings above.

    Bodies of up to ``max_body_bytes`` bytes reach the app; larger ones get a JSON 413 from waitress.
    Raises OSError when the address cannot be bound."""
    socket_map: dict[int, Any] = {}
    server = create_server(
        app,
        map=socket_map,
        host=host,
        port=port,
        threads=THREADS,
        connection_limit=CONNECTION_LIMIT,
        channel_timeout=CHANNEL_TIMEOUT_SECONDS,
        cleanup_interval=CLEANUP_INTERVAL_SECONDS,
        asyncore_use_poll=True,  # select() cannot watch more than 1024 descriptors
        max_request_body_size=max_body_bytes + 1,  # waitress refuses a body of this size or more
        ident=IDENT,
    )
    channel_class = _channel_class(on_error)
    for dispatcher in list(socket_map.values()):
        if isinstance(dispatcher, BaseWSGIServer):
            dispatcher.channel_class = channel_class
    return WebhookServer(server, socket_map)


@dataclass
class TlsWebhookServer:
    """A bound cheroot server serving HTTPS; ``run()`` serves until ``close()``."""

    server: wsgi.Server

    @property
    def port(self) -> int:
        return int(self.server.bind_addr[1])

    def run(self) -> None:
        self.server.serve()

    def close(self) -> None:
        self.server.stop()


def create_tls_webhook_server(
    app: Callable[..., Any], host: str, port: int, *, tls: ServerTls
) -> TlsWebhookServer:
    """Bind ``app`` over HTTPS on ``host:port`` (0 = any free port) with ``tls``'s certificate and key
    (and client CA, if set).  Raises OSError when the address cannot be bound, SecretError when a
    TLS file cannot be loaded."""
    server = wsgi.Server(
        (host, port), app, numthreads=THREADS, timeout=CHANNEL_TIMEOUT_SECONDS, server_name=IDENT
    )
    adapter = BuiltinSSLAdapter(str(tls.cert_file), str(tls.key_file))
    adapter.context = tls.context()  # TLS >= 1.2 and the client CA (mqttlb.secure)
    server.ssl_adapter = adapter
    server.prepare()  # binds; OSError when it cannot
    return TlsWebhookServer(server)
