"""What the two exporter commands (``mqttlb broker-exporter``, ``mqttlb envoy-exporter``) share.

- ``exporter_parser``: the start of their command line (help layout, ``--log-level``/``--log-format``);
- ``serve_collector``: what they do after parsing their input — register the collector, serve
  ``/metrics`` until SIGTERM/SIGINT, close what they opened, and give ``main``'s exit status;
- ``serve_until_signal``: the blocking server loop for a whole registry.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from collections.abc import Iterable
from typing import Protocol

from prometheus_client import CollectorRegistry
from prometheus_client.registry import Collector

from mqttlb.exporters.exposition import make_server
from mqttlb.logs import add_log_flags

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
    collector: ClosableCollector, host: str, port: int, name: str, *, close_first: Iterable[Closable] = ()
) -> int:
    """Serve ``collector`` alone on ``http://host:port/metrics`` until SIGTERM/SIGINT (blocks).

    Afterwards, or when the address cannot be bound, closes ``close_first`` in order, then the
    collector.  Returns the exit status for ``main``: 0 after a signal, ``EXIT_CANNOT_LISTEN`` (1)
    with one line ``<name>: cannot listen on <host>:<port>: <reason>`` on stderr.
    """
    registry = CollectorRegistry()
    registry.register(collector)
    try:
        serve_until_signal(registry, host, port, name)
    except OSError as exc:
        print(f"{name}: cannot listen on {host}:{port}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_CANNOT_LISTEN
    finally:
        for resource in close_first:
            resource.close()
        collector.close()
    return 0


def serve_until_signal(registry: CollectorRegistry, host: str, port: int, name: str) -> None:
    """Blocks; raises OSError if the address cannot be bound."""
    server = make_server(registry, host, port, name)
    thread = threading.Thread(target=server.serve_forever, name=f"{name}-http", daemon=True)
    thread.start()
    stop = threading.Event()

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
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
