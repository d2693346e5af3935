"""``mqttlb envoy-exporter``: per-endpoint and per-listener series from the Envoy admin API."""

from __future__ import annotations

import argparse
import sys
from urllib.parse import urlparse

from prometheus_client import CollectorRegistry

from mqttlb import contract
from mqttlb.exporters.broker_config import parse_host_port
from mqttlb.exporters.envoy_collector import EnvoyCollector
from mqttlb.exporters.scrape_errors import ENVOY_REASONS
from mqttlb.exporters.serve import serve_until_signal
from mqttlb.logs import add_log_flags, setup_from_args

METRICS_HELP = f"""\
metrics:
  per endpoint (labels cluster = Envoy cluster, endpoint = host:port, node = EDS hostname):
    {contract.ENVOY_ENDPOINT_CX_ACTIVE} (gauge): active upstream connections
    {contract.ENVOY_ENDPOINT_CX_TOTAL} (counter): upstream connections opened
    {contract.ENVOY_ENDPOINT_CX_FAIL} (counter): upstream connect failures
    {contract.ENVOY_ENDPOINT_WEIGHT} (gauge): load_balancing_weight in force
    {contract.ENVOY_ENDPOINT_HEALTH} (gauge, extra label status=healthy|degraded|draining|unhealthy):
      1 for the current status, 0 for the others
  per cluster (label cluster):
    {contract.ENVOY_CLUSTER_MAX_CONNECTIONS} (gauge, extra label priority=default|high):
      circuit-breaker max_connections now in force (runtime overrides included)
    {contract.ENVOY_CLUSTER_RX_BYTES} (counter): bytes from upstream hosts
    {contract.ENVOY_CLUSTER_TX_BYTES} (counter): bytes to upstream hosts
      (Envoy keeps no per-endpoint byte counters, so bytes are per cluster)
    {contract.ENVOY_CLUSTER_CX_OVERFLOW} (counter): connections refused by the circuit breaker
  per listener (label listener = Envoy's listener stat name, e.g. 127.0.0.1_1883 or admin):
    {contract.ENVOY_LISTENER_CX_ACTIVE} (gauge): active downstream connections
    {contract.ENVOY_LISTENER_CX_TOTAL} (counter): downstream connections accepted
    {contract.ENVOY_LISTENER_CX_OVERFLOW} (counter): refused by the listener connection limit
    {contract.ENVOY_LISTENER_CX_OVERLOAD_REJECT} (counter): rejected by the overload manager
  overload manager (only when Envoy has one configured):
    {contract.ENVOY_OVERLOAD_ACTION_ACTIVE} (gauge, label action): 1 while the action is in force
    {contract.ENVOY_OVERLOAD_PRESSURE} (gauge, label resource): resource monitor pressure, 0..1
  exporter:
    {contract.ENVOY_UP} (gauge): 1 if /clusters was read in time, else 0 (no endpoint series then)
    {contract.ENVOY_SCRAPE_ERRORS} (counter, label reason={"|".join(ENVOY_REASONS)}, each exported
      from 0): scrapes in which an admin request failed or was malformed, +1 per reason met
    {contract.ENVOY_SCRAPE_DURATION} (gauge): seconds taken to read the admin API
  every admin read ends at --timeout, also against an admin that trickles its answer
"""


def _admin_url(value: str) -> str:
    parsed = urlparse(value)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise argparse.ArgumentTypeError(
            f"expected an http(s) URL such as http://127.0.0.1:9901, got {value!r}"
        )
    return value


def _listen(value: str) -> tuple[str, int]:
    try:
        return parse_host_port(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _timeout(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {value!r}") from None
    if not 0 < seconds <= 60:
        raise argparse.ArgumentTypeError(f"timeout must be in (0, 60] seconds, got {value}")
    return seconds


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mqttlb envoy-exporter",
        description="Prometheus exporter for Envoy upstream endpoints, clusters and listeners, read from "
        "the admin API (/clusters?format=json, /stats?format=json) at scrape time.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=METRICS_HELP,
    )
    parser.add_argument(
        "--listen",
        type=_listen,
        default=("127.0.0.1", 9642),
        help="host:port to serve /metrics on (default: 127.0.0.1:9642)",
    )
    parser.add_argument(
        "--envoy-admin",
        type=_admin_url,
        default="http://127.0.0.1:9901",
        help="Envoy admin base URL (default: http://127.0.0.1:9901)",
    )
    parser.add_argument(
        "--timeout",
        type=_timeout,
        default=2.0,
        help="seconds a scrape may wait for the admin API in total (default: 2)",
    )
    parser.add_argument(
        "--cluster",
        action="append",
        dest="clusters",
        metavar="NAME",
        help="export only this Envoy cluster (repeatable; default: every cluster)",
    )
    add_log_flags(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_from_args(args)
    host, port = args.listen
    collector = EnvoyCollector(
        args.envoy_admin, args.timeout, frozenset(args.clusters) if args.clusters else None
    )
    registry = CollectorRegistry()
    registry.register(collector)
    try:
        serve_until_signal(registry, host, port, "envoy-exporter")
    except OSError as exc:
        print(f"envoy-exporter: cannot listen on {host}:{port}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    finally:
        collector.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
