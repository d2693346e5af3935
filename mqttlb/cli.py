"""The `mqttlb` command: one entry point that dispatches to each part's own CLI."""

from __future__ import annotations

import importlib
import sys

from mqttlb.reload import catch_sighup_early

# subcommand -> (module with main(argv), one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "stack": ("mqttlb.stack.cli", "start, stop and inspect the local stack (up|down|status|check)"),
    "broker-exporter": (
        "mqttlb.exporters.broker_cli",
        "Prometheus exporter for MQTT brokers (Mosquitto, HiveMQ)",
    ),
    "envoy-exporter": ("mqttlb.exporters.envoy_cli", "Prometheus exporter for Envoy's per-endpoint state"),
    "webhook": ("mqttlb.webhook.cli", "the rebalancer: Alertmanager webhook and reconcile loop for Envoy"),
    "status": ("mqttlb.status", "what the rebalancer sees and does now, per node (--json for scripts)"),
    "test-alert": ("mqttlb.testalert", "send a test alert via Alertmanager: the webhook records it, acts on nothing"),
    "rules": ("mqttlb.rulegen", "generate / check the Prometheus rule files from params.yaml"),
    "alertmanager-config": ("mqttlb.alertmanager_config", "render the Alertmanager config"),
    "dashboards": ("mqttlb.dashboards.cli", "generate, check and render the Grafana dashboards"),
    "loadgen": ("mqttlb.loadgen.cli", "MQTT load generator (loopback only unless told otherwise)"),
    "experiment": ("mqttlb.loadgen.scenarios.cli", "run a named scenario under each balancing policy and seed"),
}

# Commands that reload on SIGHUP: they queue SIGHUP before their (slow) imports, see mqttlb.reload.
RELOADING = frozenset({"webhook", "broker-exporter", "envoy-exporter"})


def usage() -> str:
    lines = ["usage: mqttlb <command> [options]   (mqttlb <command> --help for each)", "", "commands:"]
    lines += [f"  {name:<20} {help_}" for name, (_, help_) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in ("-h", "--help"):
        print(usage())
        return 0 if args else 2
    if args[0] in ("-V", "--version"):
        from mqttlb import __version__

        print(f"mqttlb {__version__}")
        return 0
    if args[0] not in COMMANDS:
        print(f"mqttlb: unknown command '{args[0]}'\n\n{usage()}", file=sys.stderr)
        return 2
    if args[0] in RELOADING:
        catch_sighup_early()
    module = importlib.import_module(COMMANDS[args[0]][0])
    return int(module.main(args[1:]) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
