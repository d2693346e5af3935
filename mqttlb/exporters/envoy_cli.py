"""``mqttlb envoy-exporter``: what Envoy's own /stats/prometheus lacks, read from its admin API."""

from __future__ import annotations

import argparse
from urllib.parse import urlparse

from mqttlb import contract
from mqttlb.commandline import argument_type, parse_args, refuse
from mqttlb.exporters.broker_config import parse_host_port
from mqttlb.exporters.envoy_collector import EnvoyCollector
from mqttlb.exporters.scrape_errors import ENVOY_REASONS
from mqttlb.exporters.serve import exporter_parser, serve_collector, web_security

METRICS_HELP = f"""\
Envoy itself serves per-endpoint connections and health ({contract.ENVOY_ENDPOINT_CX_ACTIVE},
{contract.ENVOY_ENDPOINT_CX_TOTAL}, {contract.ENVOY_ENDPOINT_CX_FAIL}, {contract.ENVOY_ENDPOINT_HEALTHY}
with the cluster's track_cluster_stats: {{per_endpoint_stats: true}}), cluster bytes and overflows and
listener counts on /stats/prometheus: scrape Envoy for those.  This exporter adds what Envoy lacks.
/metrics answers in the Prometheus text format, or OpenMetrics when asked (Accept), gzip-compressed
when the scraper accepts it.

metrics:
  per endpoint (labels envoy_cluster_name = Envoy cluster, envoy_endpoint_address = host:port, node = EDS hostname):
    {contract.ENVOY_ENDPOINT_WEIGHT} (gauge): load_balancing_weight in force
    {contract.ENVOY_ENDPOINT_HEALTH} (gauge, extra label status=healthy|degraded|draining|unhealthy):
      1 for the current status (EDS status and Envoy's health flags), 0 for the others
  per cluster (label envoy_cluster_name):
    {contract.ENVOY_CLUSTER_MAX_CONNECTIONS} (gauge, extra label priority=default|high):
      circuit-breaker max_connections now in force (runtime overrides included): the shed cap
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


def _timeout(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {value!r}") from None
    if not 0 < seconds <= 60:
        raise argparse.ArgumentTypeError(f"timeout must be in (0, 60] seconds, got {value}")
    return seconds


def build_parser() -> argparse.ArgumentParser:
    parser = exporter_parser(
        "mqttlb envoy-exporter",
        "Prometheus exporter for what Envoy's own /stats/prometheus lacks (endpoint weights, detailed health, "
        "the connection cap, overload state), read from the admin API (/clusters?format=json, "
        "/stats?format=json) at scrape time.",
        METRICS_HELP,
    )
    parser.add_argument(
        "--listen",
        type=argument_type(parse_host_port),
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
    return parser


def main(argv: list[str] | None = None) -> int:
    args = parse_args(build_parser(), argv)
    host, port = args.listen
    try:
        web = web_security(args)
    except ValueError as exc:
        return refuse(exc, "envoy-exporter")
    collector = EnvoyCollector(args.envoy_admin, args.timeout, frozenset(args.clusters) if args.clusters else None)
    return serve_collector(collector, host, port, "envoy-exporter", web=web)


if __name__ == "__main__":
    raise SystemExit(main())
