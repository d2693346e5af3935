"""What the two exporter commands (``mqttlb broker-exporter``, ``mqttlb envoy-exporter``) share.

- ``exporter_parser``: the start of their command line (help layout, ``--log-level``/``--log-format``);
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
import sys
import threading
from collections.abc import Callable, Iterable
from typing import Protocol

from prometheus_client import CollectorRegistry
from prometheus_client.registry import Collector

from mqttlb.exporters.exposition import make_server
from mqttlb.logs import add_log_flags
from mqttlb.reload import reload_on_sighup

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
    return parser


def serve_collector(
    collector: ClosableCollector,
    host: str,
    port: int,
    name: str,
    *,
    close_first: Iterable[Closable] = (),
    reload_check: Callable[[], str] | None = None,
) -> int:
    """Serve ``collector`` alone on ``http://host:port/metrics`` until SIGTERM/SIGINT (blocks).

    Afterwards, or when the address cannot be bound, closes ``close_first`` in order, then the
    collector (and so before a SIGHUP restart).  ``reload_check``: validates the command's config
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
        serve_until_signal(registry, host, port, name, reload_check, release)
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
) -> None:
    """Blocks; raises OSError if the address cannot be bound.  SIGHUP: ``reload_check`` and, when it
    passes, ``before_reload`` and a restart in place; without ``reload_check``, a log line."""
    server = make_server(registry, host, port, name)
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
    log.info("%s: serving on http://%s:%d/metrics", name, host, server.server_address[1])
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
