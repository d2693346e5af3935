"""What the two exporter commands (``mqttlb broker-exporter``, ``mqttlb envoy-exporter``) share.

- ``exporter_parser``: the start of their command line (help layout, ``--log-level``/``--log-format``,
  and the ``--web-*`` flags: credentials and TLS of ``/metrics``, read by :func:`web_security`);
- ``serve_collector``: what they do after parsing their input — register the collector, serve
  ``/metrics`` until SIGTERM/SIGINT, close what they opened, and give ``main``'s exit status; SIGHUP
  reloads the config (:mod:`mqttlb.reload`: checked first, refused in one log line or restarted in
  place) when the command has one, and is logged and ignored when every setting is a flag;
- ``serve_until_signal``: the blocking server loop for a whole registry.
"""

from __future__ import annotations

import argparse
import logging
import signal
import ssl
import sys
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from prometheus_client import CollectorRegistry
from prometheus_client.registry import Collector

from mqttlb.exporters.exposition import make_server
from mqttlb.logs import add_log_flags
from mqttlb.reload import reload_on_sighup
from mqttlb.secure import BasicAuth, Credentials, ServerTls, load_credentials

log = logging.getLogger(__name__)

EXIT_CANNOT_LISTEN = 1  # the address could not be bound


class Closable(Protocol):
    def close(self) -> None: ...


class ClosableCollector(Collector, Closable, Protocol):
    """A prometheus-client collector that holds resources (worker pools, sessions) until ``close()``."""


def exporter_parser(prog: str, description: str, epilog: str) -> argparse.ArgumentParser:
    """A parser with the logging flags (``mqttlb.logs.add_log_flags``) whose ``epilog`` (the config
    and metric reference) keeps its line breaks; the command adds its own arguments."""
    parser = argparse.ArgumentParser(
        prog=prog, description=description, formatter_class=argparse.RawDescriptionHelpFormatter, epilog=epilog
    )
    add_log_flags(parser)
    web = parser.add_argument_group("/metrics credentials and TLS (none set: open, plain HTTP)")
    web.add_argument("--web-token-file", type=Path, metavar="FILE", help="bearer token (>= 16 characters) to require")
    web.add_argument("--web-basic-auth-user", metavar="USER", help="basic-auth user to accept")
    web.add_argument(
        "--web-basic-auth-password-file", type=Path, metavar="FILE", help="that user's password (with the user)"
    )
    web.add_argument("--web-tls-cert-file", type=Path, metavar="FILE", help="serve HTTPS with this PEM certificate")
    web.add_argument("--web-tls-key-file", type=Path, metavar="FILE", help="... and this PEM key")
    return parser


@dataclass(frozen=True)
class WebSecurity:
    """What ``/metrics`` requires (credentials; none: open) and its TLS context (None: plain HTTP)."""

    credentials: Credentials = field(default_factory=Credentials)
    tls: ssl.SSLContext | None = None


def web_security(args: argparse.Namespace) -> WebSecurity:
    """The ``--web-*`` flags read: secret files loaded, TLS context built.  Raises ValueError (a
    SecretError naming the file, or a flag given without its pair)."""
    user, password = args.web_basic_auth_user, args.web_basic_auth_password_file
    if (user is None) != (password is None):
        raise ValueError("--web-basic-auth-user and --web-basic-auth-password-file go together")
    cert, key = args.web_tls_cert_file, args.web_tls_key_file
    if (cert is None) != (key is None):
        raise ValueError("--web-tls-cert-file and --web-tls-key-file go together")
    basic = BasicAuth(username=user, password_file=password) if user is not None else None
    tls = ServerTls(cert_file=cert, key_file=key).context() if cert is not None else None
    return WebSecurity(load_credentials(args.web_token_file, basic), tls)


def serve_collector(
    collector: ClosableCollector,
    host: str,
    port: int,
    name: str,
    *,
    close_first: Iterable[Closable] = (),
    reload_check: Callable[[], str] | None = None,
    web: WebSecurity | None = None,
) -> int:
    """Serve ``collector`` alone on ``http://host:port/metrics`` until SIGTERM/SIGINT (blocks).

    Afterwards, or when the address cannot be bound, closes ``close_first`` in order, then the
    collector (and so before a SIGHUP restart).  ``web``: credentials and TLS of /metrics (None: open,
    plain HTTP).  ``reload_check``: validates the command's config
    file again for SIGHUP (see :func:`mqttlb.reload.reload_on_sighup`); None: nothing to reload.
    Returns the exit status for ``main``: 0 after a signal, ``EXIT_CANNOT_LISTEN`` (1) with one line
    ``<name>: cannot listen on <host>:<port>: <reason>`` on stderr.
    """
    registry = CollectorRegistry()
    registry.register(collector)
    closing = list(close_first)

    def release() -> None:
        for resource in closing:
            resource.close()
        collector.close()

    try:
        serve_until_signal(registry, host, port, name, reload_check, release, web)
    except OSError as exc:
        print(f"{name}: cannot listen on {host}:{port}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_CANNOT_LISTEN
    finally:
        release()
    return 0


def serve_until_signal(
    registry: CollectorRegistry,
    host: str,
    port: int,
    name: str,
    reload_check: Callable[[], str] | None = None,
    before_reload: Callable[[], None] = lambda: None,
    web: WebSecurity | None = None,
) -> None:
    """Blocks; raises OSError if the address cannot be bound.  SIGHUP: ``reload_check`` and, when it
    passes, ``before_reload`` and a restart in place; without ``reload_check``, a log line."""
    web = web or WebSecurity()
    server = make_server(registry, host, port, name, credentials=web.credentials, tls=web.tls)
    thread = threading.Thread(target=server.serve_forever, name=f"{name}-http", daemon=True)
    thread.start()
    stop = threading.Event()
    in_main = threading.current_thread() is threading.main_thread()
    previous_hup = signal.getsignal(signal.SIGHUP) if in_main else None
    if reload_check is not None:
        reload_on_sighup(name, reload_check, before_reload)
    elif in_main:
        signal.signal(signal.SIGHUP, lambda signum, frame: log.info("%s: SIGHUP: nothing to reload (flags only)", name))

    def _stop(signum: int, frame: object) -> None:
        log.info("%s: signal %d, shutting down", name, signum)
        stop.set()

    previous = {sig: signal.signal(sig, _stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    scheme = "https" if web.tls is not None else "http"
    log.info("%s: serving on %s://%s:%d/metrics", name, scheme, host, server.server_address[1])
    try:
        stop.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if previous_hup is not None:
            signal.signal(signal.SIGHUP, previous_hup)
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
