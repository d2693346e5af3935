"""``mqttlb broker-exporter``: one Prometheus schema for every MQTT broker kind."""

from __future__ import annotations

import argparse
import logging
import socket
from pathlib import Path

from mqttlb import contract
from mqttlb.commandline import parse_args, plural, refuse
from mqttlb.exporters.adapters import build_nodes
from mqttlb.exporters.broker_collector import SAMPLE_METRICS, BrokerCollector
from mqttlb.exporters.broker_config import (
    BrokerExporterConfig,
    BrokerExporterConfigError,
    load_config,
    parse_host_port,
)
from mqttlb.exporters.scrape_errors import BROKER_REASONS
from mqttlb.exporters.serve import exporter_parser, serve_collector, web_security

log = logging.getLogger("exporters.broker")

CONFIG_HELP = """\
config file (YAML):
  listen: "127.0.0.1:9641"        # host:port to serve /metrics (overridden by --listen)
  cluster: local                  # value of the MQTT cluster label
  cluster_label: mqtt_cluster     # its name (the parameter mqtt_cluster_label; `cluster` is refused)
  scrape_timeout_seconds: 2       # a node that has not answered by then is reported down
  sys_interval_seconds: 10        # Mosquitto sys_interval (set it to the brokers' value)
  stale_factor: 3                 # Mosquitto data older than stale_factor x sys_interval = down
  nodes:
  - {name: node1, kind: mosquitto, address: "127.0.0.1:18831", cpu_cores: 0.5,
     pid_file: /path/mosquitto.pid}          # pid_file optional: else the listening port's process
  - {name: hq1, kind: hivemq, address: "10.0.0.5:1883", cpu_cores: 4,
     metrics_url: "http://10.0.0.5:9399/metrics"}
  Per node also: sys_interval_seconds (mosquitto override); for mosquitto nodes the MQTT login and TLS of
  the $SYS connection: username, password_file, tls: {ca_file, cert_file, key_file}.
"""


def metrics_help() -> str:
    lines = ["metrics (labels <cluster_label>, node on every series):"]
    fixed = [
        (contract.BROKER_UP, "gauge", "1 if the node answered the last scrape, else 0"),
        (contract.BROKER_INFO, "gauge", "always 1; extra labels kind, address"),
        (contract.BROKER_CPU_CAPACITY, "gauge", "CPU cores credited to the node (config cpu_cores)"),
        (contract.BROKER_SCRAPE_DURATION, "gauge", "seconds taken to sample the node"),
        (
            contract.BROKER_SCRAPE_ERRORS,
            "counter",
            f"scrapes of the node that failed or were partial; extra label reason = "
            f"{'|'.join(BROKER_REASONS)}, every one exported from 0",
        ),
    ]
    for name, kind, text in fixed:
        lines.append(f"  {name} ({kind}): {text}")
    for _field, name, text, is_counter in SAMPLE_METRICS:
        lines.append(f"  {name} ({'counter' if is_counter else 'gauge'}): {text}")
    lines.append("  A down node exports only up/info/capacity/scrape series; unsupported values are omitted.")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = exporter_parser(
        "mqttlb broker-exporter",
        "Prometheus exporter for MQTT broker nodes (Mosquitto via $SYS + process stats, "
        "HiveMQ via its Prometheus extension), sampled at scrape time.",
        CONFIG_HELP + "\n" + metrics_help(),
    )
    parser.add_argument(
        "--config",
        required=True,
        type=Path,
        help="broker exporter YAML config (see below); SIGHUP reads it again: refused in one log line if a "
        "start would refuse it, else the exporter restarts in place (same PID)",
    )
    parser.add_argument(
        "--listen",
        help="host:port to serve /metrics on (default: config 'listen', which defaults to 127.0.0.1:9641)",
    )
    parser.add_argument(
        "--check-config",
        action="store_true",
        help="validate the config, print a summary and exit (0 = valid)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = parse_args(build_parser(), argv)
    try:
        config = load_config(args.config)
        host, port = parse_host_port(args.listen or config.listen)
        web = web_security(args)
    except (BrokerExporterConfigError, ValueError) as exc:
        return refuse(exc, "broker-exporter")
    if args.check_config:
        kinds = sorted({n.kind for n in config.nodes})
        print(f"config ok: cluster {config.cluster}, {plural(len(config.nodes), 'node')} ({', '.join(kinds)})")
        return 0
    try:
        nodes = build_nodes(config)  # reads the nodes' MQTT password and TLS files
    except ValueError as exc:
        return refuse(exc, "broker-exporter")
    collector = BrokerCollector(config.cluster, nodes, config.scrape_timeout_seconds, config.cluster_label)
    for entry in nodes:
        entry.adapter.start()
    # the adapters close first, so that no worker of the collector's pool is busy with them
    adapters = [entry.adapter for entry in nodes]
    return serve_collector(
        collector,
        host,
        port,
        "broker-exporter",
        close_first=adapters,
        reload_check=lambda: check_reload(args.config, args.listen, config),
        web=web,
    )


def check_reload(path: Path, listen: str | None, running: BrokerExporterConfig) -> str:
    """SIGHUP: the config at ``path`` as a start would read it (``listen``: the --listen flag, which
    wins); raises BrokerExporterConfigError or ValueError (one line) for what a start would refuse,
    OSError for a changed listen address that cannot be bound.  Returns what changed, for the log."""
    config = load_config(path)
    host, port = parse_host_port(listen or config.listen)
    if (host, port) != parse_host_port(listen or running.listen):
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
            probe.bind((host, port))
    before, after = running.model_dump(mode="json"), config.model_dump(mode="json")
    keys = sorted(key for key in after if before.get(key) != after[key])
    return f"changed: {', '.join(keys)}" if keys else "no setting changed"


if __name__ == "__main__":
    raise SystemExit(main())
