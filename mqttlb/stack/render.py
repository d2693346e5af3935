"""Render every config of the local stack from the StackConfig into its state directory.

The runner calls `render_all` before starting anything; each function returns text so
tests (and the docker-compose check) can look at a config without touching disk.
"""

from __future__ import annotations

import json
import resource
import secrets
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from mqttlb import contract
from mqttlb.alertmanager_config import render as render_alertmanager_config
from mqttlb.atomic import atomic_write_text
from mqttlb.rulegen import render_rule_files
from mqttlb.stack.config import RECORD_FILE, StackConfig
from mqttlb.webhook.eds import Endpoint, write_eds_file

LOOPBACK = "127.0.0.1"


@dataclass(frozen=True)
class Paths:
    """Where each part keeps its config, data, logs and PID inside the state dir."""

    root: Path

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def supervisord_conf(self) -> Path:
        return self.root / "supervisord.conf"

    @property
    def supervisord_pid(self) -> Path:
        return self.root / "supervisord.pid"

    @property
    def envoy_yaml(self) -> Path:
        return self.root / "envoy" / "envoy.yaml"

    @property
    def pressure_file(self) -> Path:
        return self.root / "envoy" / "pressure"

    @property
    def eds_file(self) -> Path:
        return self.root / "eds" / "eds.json"

    def mosquitto_dir(self, node: str) -> Path:
        return self.root / "mosquitto" / node

    def mosquitto_conf(self, node: str) -> Path:
        return self.mosquitto_dir(node) / "mosquitto.conf"

    def mosquitto_pid(self, node: str) -> Path:
        return self.mosquitto_dir(node) / "mosquitto.pid"

    @property
    def prometheus_yaml(self) -> Path:
        return self.root / "prometheus" / "prometheus.yml"

    @property
    def prometheus_rules(self) -> Path:
        return self.root / "prometheus" / "rules"

    @property
    def prometheus_data(self) -> Path:
        return self.root / "prometheus" / "data"

    @property
    def alertmanager_yaml(self) -> Path:
        return self.root / "alertmanager" / "alertmanager.yml"

    @property
    def alertmanager_data(self) -> Path:
        return self.root / "alertmanager" / "data"

    @property
    def broker_exporter_yaml(self) -> Path:
        return self.root / "exporters" / "broker.yaml"

    @property
    def webhook_dir(self) -> Path:
        return self.root / "webhook"

    @property
    def webhook_yaml(self) -> Path:
        return self.webhook_dir / "webhook.yaml"

    @property
    def webhook_token(self) -> Path:
        return self.webhook_dir / "token"


def url(port: int, path: str = "") -> str:
    return f"http://{LOOPBACK}:{port}{path}"


# Descriptors Envoy keeps for itself (admin, listeners, EDS watch, logs, stats flushing).
ENVOY_FD_RESERVE = 256


def envoy_connection_limit(cfg: StackConfig, fd_limit: int | None = None) -> int:
    """The most client connections Envoy may hold: the stack file's value, or what its fds allow.

    Each proxied connection costs Envoy two descriptors (client and broker side).  When socket(2)
    fails with EMFILE, Envoy 1.40 hits an ENVOY_BUG and then dies with SIGSEGV, dropping every
    connection; with this cap it refuses the extra clients instead.
    """
    if cfg.envoy_max_connections is not None:
        return cfg.envoy_max_connections
    limit = _fd_limit() if fd_limit is None else fd_limit
    return max(1, (limit - min(ENVOY_FD_RESERVE, limit // 4)) // 2)


def envoy_config(cfg: StackConfig, paths: Paths, fd_limit: int | None = None) -> dict[str, Any]:
    lb_key = "round_robin_lb_config" if cfg.lb_policy == "ROUND_ROBIN" else "least_request_lb_config"
    slow_start = {
        "slow_start_window": cfg.slow_start_window,
        "aggression": {"default_value": 1.0, "runtime_key": "mqttlb.slow_start.aggression"},
        "min_weight_percent": {"value": 10},
    }
    return {
        "node": {"id": f"mqttlb-{cfg.cluster}", "cluster": cfg.cluster},
        "admin": {"address": {"socket_address": {"address": LOOPBACK, "port_value": cfg.ports.envoy_admin}}},
        "layered_runtime": {
            "layers": [
                {"name": "static", "static_layer": {}},
                {"name": "admin", "admin_layer": {}},
            ]
        },
        "overload_manager": {
            "refresh_interval": "0.25s",
            "resource_monitors": [
                {
                    "name": "envoy.resource_monitors.injected_resource",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.resource_monitors."
                        "injected_resource.v3.InjectedResourceConfig",
                        "filename": str(paths.pressure_file),
                    },
                },
                {
                    # Proactive: Envoy refuses connections above the cap at accept time.
                    "name": "envoy.resource_monitors.global_downstream_max_connections",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.resource_monitors."
                        "downstream_connections.v3.DownstreamConnectionsConfig",
                        "max_active_downstream_connections": envoy_connection_limit(cfg, fd_limit),
                    },
                },
            ],
            "actions": [
                {
                    "name": "envoy.overload_actions.reject_incoming_connections",
                    "triggers": [
                        {"name": "envoy.resource_monitors.injected_resource", "threshold": {"value": 0.9}}
                    ],
                }
            ],
        },
        "static_resources": {
            "listeners": [
                {
                    "name": "mqtt",
                    "address": {
                        "socket_address": {"address": LOOPBACK, "port_value": cfg.ports.envoy_listener}
                    },
                    "filter_chains": [
                        {
                            "filters": [
                                {
                                    "name": "envoy.filters.network.tcp_proxy",
                                    "typed_config": {
                                        "@type": "type.googleapis.com/envoy.extensions.filters.network."
                                        "tcp_proxy.v3.TcpProxy",
                                        "stat_prefix": "mqtt",
                                        "cluster": cfg.envoy_cluster,
                                    },
                                }
                            ]
                        }
                    ],
                }
            ],
            "clusters": [
                {
                    "name": cfg.envoy_cluster,
                    "connect_timeout": "1s",
                    "type": "EDS",
                    "lb_policy": cfg.lb_policy,
                    lb_key: {"slow_start_config": slow_start},
                    # The default cap (1024) would shed a normal fleet; the webhook lowers it at
                    # runtime (circuit_breakers.<cluster>.default.max_connections) when shedding.
                    "circuit_breakers": {"thresholds": [{"priority": "DEFAULT", "max_connections": 100000}]},
                    "eds_cluster_config": {
                        "eds_config": {
                            "resource_api_version": "V3",
                            "path_config_source": {
                                "path": str(paths.eds_file),
                                "watched_directory": {"path": str(paths.eds_file.parent)},
                            },
                        }
                    },
                }
            ],
        },
    }


def mosquitto_config(cfg: StackConfig, paths: Paths, node: str, port: int) -> str:
    data_dir = paths.mosquitto_dir(node) / "data"
    return "\n".join(
        [
            f"# mqttlb stack node {node} (generated; edit stack/stack.yaml instead)",
            f"pid_file {paths.mosquitto_pid(node)}",
            f"listener {port} {LOOPBACK}",
            "allow_anonymous true",
            "max_connections -1",
            # Ignored unless started as root, where it stops Mosquitto dropping to a user that
            # cannot write the state dir.
            "user root",
            "persistence true",
            f"persistence_location {data_dir}/",
            "log_dest stdout",
            # Connect/disconnect notices on $SYS/broker/log/N are how the exporter counts connects.
            "log_dest topic",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "connection_messages true",
            f"sys_interval {cfg.sys_interval}",
            "",
        ]
    )


def prometheus_config(cfg: StackConfig, paths: Paths) -> dict[str, Any]:
    def job(name: str, port: int, metrics_path: str = "/metrics") -> dict[str, Any]:
        return {
            "job_name": name,
            "metrics_path": metrics_path,
            "static_configs": [{"targets": [f"{LOOPBACK}:{port}"]}],
        }

    return {
        "global": {
            "scrape_interval": cfg.scrape_interval,
            "evaluation_interval": cfg.scrape_interval,
            "scrape_timeout": cfg.scrape_interval,
        },
        "rule_files": [str(paths.prometheus_rules / "*.yml")],
        "alerting": {
            "alertmanagers": [{"static_configs": [{"targets": [f"{LOOPBACK}:{cfg.ports.alertmanager}"]}]}]
        },
        "scrape_configs": [
            job(contract.JOB_PROMETHEUS, cfg.ports.prometheus),
            job(contract.JOB_BROKERS, cfg.ports.broker_exporter),
            job(contract.JOB_ENVOY_EXPORTER, cfg.ports.envoy_exporter),
            job(contract.JOB_ENVOY, cfg.ports.envoy_admin, "/stats/prometheus"),
            job(contract.JOB_ALERTMANAGER, cfg.ports.alertmanager),
            job(contract.JOB_WEBHOOK, cfg.ports.webhook),
        ],
    }


def broker_exporter_config(cfg: StackConfig, paths: Paths) -> dict[str, Any]:
    return {
        "listen": f"{LOOPBACK}:{cfg.ports.broker_exporter}",
        "cluster": cfg.cluster,
        "scrape_timeout_seconds": 2,
        "sys_interval_seconds": cfg.sys_interval,
        "nodes": [
            {
                "name": node,
                "kind": "mosquitto",
                "address": f"{LOOPBACK}:{port}",
                "pid_file": str(paths.mosquitto_pid(node)),
                "cpu_cores": cfg.node_cpu_cores,
            }
            for node, port in zip(cfg.node_names, cfg.broker_ports, strict=True)
        ],
    }


def webhook_config(cfg: StackConfig, paths: Paths) -> dict[str, Any]:
    return {
        "listen": f"{LOOPBACK}:{cfg.ports.webhook}",
        "cluster": cfg.cluster,
        "envoy_cluster": cfg.envoy_cluster,
        "envoy_admin": url(cfg.ports.envoy_admin),
        "prometheus_url": url(cfg.ports.prometheus),
        "eds_path": str(paths.eds_file),
        "overload_file": str(paths.pressure_file),
        "token_file": str(paths.webhook_token),
        "state_file": str(paths.webhook_dir / "state.json"),
        "audit_log": str(paths.webhook_dir / "audit.jsonl"),
        "dry_run": cfg.dry_run,
        "nodes": [
            {"name": node, "host": LOOPBACK, "port": port}
            for node, port in zip(cfg.node_names, cfg.broker_ports, strict=True)
        ],
        "params_overrides": cfg.params.model_dump(mode="json"),
    }


@dataclass(frozen=True)
class Program:
    """One supervised process: its name, command line, and how to tell it is ready."""

    name: str
    command: list[str]
    address: str
    ready_url: str | None = None  # HTTP GET that must answer 200
    ready_port: int | None = None  # else: a TCP port that must accept
    priority: int = 50


def programs(cfg: StackConfig, paths: Paths, binaries: dict[str, str]) -> list[Program]:
    # One Envoy worker: round robin then cycles through the endpoints exactly (each worker keeps
    # its own cursor), which keeps policy comparisons honest; one worker proxies far more MQTT
    # traffic than the local brokers can take.
    python = sys.executable
    progs = [
        Program(
            name=f"mosquitto-{node}",
            command=[binaries["mosquitto"], "-c", str(paths.mosquitto_conf(node))],
            address=f"mqtt://{LOOPBACK}:{port}",
            ready_port=port,
            priority=10,
        )
        for node, port in zip(cfg.node_names, cfg.broker_ports, strict=True)
    ]
    progs += [
        Program(
            name="envoy",
            command=[
                binaries["envoy"],
                "-c",
                str(paths.envoy_yaml),
                "--concurrency", "1",
                "--log-level",
                "warning",
                "--base-id",
                str(cfg.ports.envoy_admin),
            ],
            address=f"mqtt://{LOOPBACK}:{cfg.ports.envoy_listener} (admin {url(cfg.ports.envoy_admin)})",
            ready_url=url(cfg.ports.envoy_admin, "/ready"),
            priority=20,
        ),
        Program(
            name="broker-exporter",
            command=[
                python,
                "-m",
                "mqttlb.cli",
                "broker-exporter",
                "--config",
                str(paths.broker_exporter_yaml),
            ],
            address=url(cfg.ports.broker_exporter, "/metrics"),
            ready_url=url(cfg.ports.broker_exporter, "/metrics"),
            priority=30,
        ),
        Program(
            name="envoy-exporter",
            command=[
                python,
                "-m",
                "mqttlb.cli",
                "envoy-exporter",
                "--listen",
                f"{LOOPBACK}:{cfg.ports.envoy_exporter}",
                "--envoy-admin",
                url(cfg.ports.envoy_admin),
                "--timeout",
                "2",
            ],
            address=url(cfg.ports.envoy_exporter, "/metrics"),
            ready_url=url(cfg.ports.envoy_exporter, "/metrics"),
            priority=30,
        ),
        Program(
            name="webhook",
            command=[python, "-m", "mqttlb.cli", "webhook", "--config", str(paths.webhook_yaml)],
            address=url(cfg.ports.webhook, "/alerts"),
            ready_url=url(cfg.ports.webhook, "/readyz"),
            priority=30,
        ),
        Program(
            name="alertmanager",
            command=[
                binaries["prometheus-alertmanager"],
                f"--config.file={paths.alertmanager_yaml}",
                f"--storage.path={paths.alertmanager_data}",
                f"--web.listen-address={LOOPBACK}:{cfg.ports.alertmanager}",
                "--cluster.listen-address=",  # a single local Alertmanager: no gossip port
            ],
            address=url(cfg.ports.alertmanager),
            ready_url=url(cfg.ports.alertmanager, "/-/ready"),
            priority=40,
        ),
        Program(
            name="prometheus",
            command=[
                binaries["prometheus"],
                f"--config.file={paths.prometheus_yaml}",
                f"--storage.tsdb.path={paths.prometheus_data}",
                f"--web.listen-address={LOOPBACK}:{cfg.ports.prometheus}",
                "--storage.tsdb.retention.time=2d",
                "--web.enable-lifecycle",
            ],
            address=url(cfg.ports.prometheus),
            ready_url=url(cfg.ports.prometheus, "/-/ready"),
            priority=50,
        ),
    ]
    return progs


def supervisord_config(cfg: StackConfig, paths: Paths, progs: list[Program]) -> str:
    lines = [
        "; generated by mqttlb from stack/stack.yaml; regenerated on every `make stack-up`",
        "[supervisord]",
        f"logfile={paths.logs / 'supervisord.log'}",
        f"pidfile={paths.supervisord_pid}",
        f"childlogdir={paths.logs}",
        f"directory={paths.root.parent if paths.root.parent.exists() else paths.root}",
        "identifier=mqttlb-" + cfg.cluster,
        # Envoy needs two descriptors per proxied MQTT connection and the brokers one each:
        # raise the soft limit the children inherit as far as the hard limit allows.
        f"minfds={_fd_limit()}",
        "",
        "[inet_http_server]",
        f"port={LOOPBACK}:{cfg.ports.supervisor}",
        "",
        "[rpcinterface:supervisor]",
        "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface",
        "",
        "[supervisorctl]",
        f"serverurl=http://{LOOPBACK}:{cfg.ports.supervisor}",
        "",
    ]
    for prog in progs:
        lines += [
            f"[program:{prog.name}]",
            "command=" + " ".join(_quote(part) for part in prog.command),
            f"priority={prog.priority}",
            "autostart=true",
            "autorestart=true",
            "startsecs=1",
            "startretries=5",
            "stopasgroup=true",
            "killasgroup=true",
            "stopwaitsecs=10",
            "redirect_stderr=true",
            f"stdout_logfile={paths.logs / (prog.name + '.log')}",
            "stdout_logfile_maxbytes=20MB",
            "stdout_logfile_backups=2",
            "",
        ]
    return "\n".join(lines)


def _fd_limit(ceiling: int = 1_048_576) -> int:
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    return ceiling if hard == resource.RLIM_INFINITY or hard < 0 else min(hard, ceiling)


def _quote(part: str) -> str:
    if not part or any(c in part for c in " \t\"'%;"):
        escaped = part.replace("%", "%%").replace('"', '\\"')
        return f'"{escaped}"'
    return part


def initial_endpoints(cfg: StackConfig) -> list[Endpoint]:
    neutral = cfg.params.policy.neutral_weight
    return [
        Endpoint(node=node, host=LOOPBACK, port=port, weight=neutral)
        for node, port in zip(cfg.node_names, cfg.broker_ports, strict=True)
    ]


def render_all(cfg: StackConfig, binaries: dict[str, str]) -> tuple[Paths, list[Program]]:
    """Write every config under the state dir; data dirs are created, never wiped."""
    paths = Paths(cfg.state_dir)
    for directory in (
        paths.logs,
        paths.envoy_yaml.parent,
        paths.eds_file.parent,
        paths.prometheus_rules,
        paths.prometheus_data,
        paths.alertmanager_data,
        paths.broker_exporter_yaml.parent,
        paths.webhook_dir,
    ):
        directory.mkdir(parents=True, exist_ok=True)
    for node, port in zip(cfg.node_names, cfg.broker_ports, strict=True):
        (paths.mosquitto_dir(node) / "data").mkdir(parents=True, exist_ok=True)
        atomic_write_text(paths.mosquitto_conf(node), mosquitto_config(cfg, paths, node, port))

    atomic_write_text(paths.envoy_yaml, yaml.safe_dump(envoy_config(cfg, paths), sort_keys=False))
    if not paths.pressure_file.exists():
        atomic_write_text(paths.pressure_file, "0\n")
    write_eds_file(paths.eds_file, 1, cfg.envoy_cluster, initial_endpoints(cfg))

    atomic_write_text(paths.prometheus_yaml, yaml.safe_dump(prometheus_config(cfg, paths), sort_keys=False))
    for stale in paths.prometheus_rules.glob("*.yml"):
        stale.unlink()
    for name, text in render_rule_files(cfg.params).items():
        atomic_write_text(paths.prometheus_rules / name, text)

    if not paths.webhook_token.exists():
        atomic_write_text(paths.webhook_token, secrets.token_urlsafe(32) + "\n")
        paths.webhook_token.chmod(0o600)
    atomic_write_text(
        paths.alertmanager_yaml,
        render_alertmanager_config(
            cfg.params,
            webhook_url=url(cfg.ports.webhook, "/alerts"),
            page_url=url(cfg.ports.webhook, "/page"),
            token_file=str(paths.webhook_token),
        ),
    )
    atomic_write_text(
        paths.broker_exporter_yaml, yaml.safe_dump(broker_exporter_config(cfg, paths), sort_keys=False)
    )
    atomic_write_text(paths.webhook_yaml, yaml.safe_dump(webhook_config(cfg, paths), sort_keys=False))

    progs = programs(cfg, paths, binaries)
    atomic_write_text(paths.supervisord_conf, supervisord_config(cfg, paths, progs))
    atomic_write_text(paths.root / RECORD_FILE, json.dumps(cfg.model_dump(mode="json"), indent=2) + "\n")
    return paths, progs
