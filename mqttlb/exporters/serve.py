"""Serve a prometheus-client registry on host:port until SIGTERM/SIGINT."""

from __future__ import annotations

import logging
import signal
import threading

from prometheus_client import CollectorRegistry

from mqttlb.exporters.exposition import make_server

log = logging.getLogger(__name__)


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


def setup_logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
