"""Render the native stack (`make stack-up`) into its state directory.

Every component config and command line comes from `mqttlb.stack.builders` with the native
topology (`mqttlb.stack.topology.native_topology`); the compose stack uses the same builders.  This
module adds only what the native stack alone has: the broker nodes (Mosquitto configs, or the HiveMQ
launcher's command lines and token) and supervisord.
The runner calls `render_all` before starting anything.
"""

from __future__ import annotations

import json
import secrets
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from mqttlb.alertmanager_config import render as render_alertmanager_config
from mqttlb.atomic import atomic_write_text
from mqttlb.brokers import hivemq_node, mosquitto_plugin
from mqttlb.rulegen import render_rule_files
from mqttlb.secure import bcrypt_hash, read_secret
from mqttlb.stack import builders
from mqttlb.stack.certs import ensure_certificates
from mqttlb.stack.config import HIVEMQ_JAR, RECORD_FILE, StackConfig, StackConfigError
from mqttlb.stack.topology import BrokerNode, Paths, Service, Topology, native_topology
from mqttlb.webhook.eds import write_eds_file

MAX_UNIX_SOCKET_PATH = 107  # sun_path is 108 bytes on Linux, with the terminating NUL


def mosquitto_config(topo: Topology, node: BrokerNode) -> str:
    """One Mosquitto node's config (text).  Raises PluginMissingError when the eviction plugin is not built."""
    paths = topo.state
    data_dir = paths.mosquitto_dir(node.name) / "data"
    return "\n".join(
        [
            f"# mqttlb stack node {node.name} (generated; edit stack/stack.yaml instead)",
            f"pid_file {node.pid_file}",
            f"listener {node.port} {node.host}",
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
            f"sys_interval {topo.settings.sys_interval}",
            # The eviction plugin (brokers/mosquitto-plugin), built by `make install`; missing -> error.
            # The plugin's own rate bound never below the lever's (a command above it is refused whole).
            *mosquitto_plugin.config_lines(
                mosquitto_plugin.PluginOptions(
                    max_per_second=max(
                        mosquitto_plugin.PluginOptions.max_per_second, topo.settings.params.eviction.max_per_second
                    )
                )
            ),
            "",
        ]
    )


@dataclass(frozen=True)
class Program:
    """One supervised process: its name, command line, and how to tell it is ready."""

    name: str
    command: list[str]
    address: str
    ready_url: str | None = None  # HTTP GET that must answer 200
    ready_port: int | None = None  # else: a TCP port that must accept
    priority: int = 50
    token_file: Path | None = None  # the bearer token the address (and ready_url) requires; named in address
    password_file: Path | None = None  # ... or basic auth of builders.WEB_USER with this password


def _http_program(
    service: Service,
    command: list[str],
    ready_path: str,
    priority: int,
    address_path: str | None = None,
    token_file: Path | None = None,
    password_file: Path | None = None,
) -> Program:
    """The program of the same name as ``service``, serving HTTP there: ready once GET ``ready_path``
    answers 200 (with the bearer token in ``token_file``, or as builders.WEB_USER with the password in
    ``password_file``), shown as its URL with ``address_path`` (default: ``ready_path``) and, when it
    needs one, where its credential is."""
    address = service.url(ready_path if address_path is None else address_path)
    if token_file is not None:
        address += f" (bearer token in {token_file})"
    if password_file is not None:
        address += f" (user {builders.WEB_USER}, password in {password_file})"
    return Program(
        name=service.name,
        command=command,
        address=address,
        ready_url=service.url(ready_path),
        priority=priority,
        token_file=token_file,
        password_file=password_file,
    )


def _broker_program(topo: Topology, node: BrokerNode, binaries: dict[str, str]) -> Program:
    """One broker node: Mosquitto with its config, or a HiveMQ CE node through the brokers/hivemq launcher
    (ready once its extension's /metrics answers; that stays 200 while the node drains)."""
    if topo.switches.brokers == "mosquitto":
        command = [binaries["mosquitto"], "-c", str(topo.state.mosquitto_conf(node.name))]
        return Program(node.service, command, f"mqtt://{node.address}", ready_port=node.port, priority=10)
    if node.http_port is None or node.api_url is None:
        raise ValueError(f"{node.name}: a native HiveMQ node needs the mqttlb extension's HTTP port")
    args = hivemq_node.launcher_args(
        Path(binaries[HIVEMQ_JAR]), node.port, node.http_port, topo.state.hivemq_dir(node.name), topo.state.hivemq_token
    )
    return Program(
        name=node.service,
        command=[binaries["java"], *args],
        address=f"mqtt://{node.address} (extension {node.api_url})",
        ready_url=node.metrics_url,
        priority=10,
    )


def programs(topo: Topology, binaries: dict[str, str]) -> list[Program]:
    """The supervisord programs in start order (priority), with the shared builders' arguments."""
    mqttlb = [sys.executable, "-m", "mqttlb.cli"]
    admin = topo.envoy_admin
    progs = [_broker_program(topo, node, binaries) for node in topo.nodes]
    alertmanager = [binaries["prometheus-alertmanager"], *builders.alertmanager_args(topo)]
    progs += [
        Program(
            name="envoy",
            command=builders.envoy_command(topo, binaries["envoy"]),
            address=f"mqtt://{topo.envoy_listener.reach} (admin {admin.url()})",
            ready_url=admin.url("/ready"),
            priority=20,
        ),
        *(  # both exporters: /metrics behind the exporters' bearer token
            _http_program(exporter, [*mqttlb, *args], "/metrics", 30, token_file=topo.state.exporter_token)
            for exporter, args in (
                (topo.broker_exporter, builders.broker_exporter_args(topo)),
                (topo.envoy_exporter, builders.envoy_exporter_args(topo)),
            )
        ),
        _http_program(
            topo.webhook, [*mqttlb, *builders.webhook_args(topo)], "/readyz", 30, "/", topo.state.webhook_token
        ),
        _http_program(
            topo.alertmanager, alertmanager, "/-/ready", 40, "/api/v2/status", password_file=topo.state.web_password
        ),
        _http_program(
            topo.prometheus,
            [binaries["prometheus"], *builders.prometheus_args(topo)],
            "/-/ready",
            50,
            "",
            password_file=topo.state.web_password,
        ),
    ]
    return progs


def supervisord_config(topo: Topology, progs: list[Program]) -> str:
    """supervisord.conf (text): its control socket in the state dir (mode 0700, so only this user can
    stop or start a part; no TCP port) and one [program:x] per program."""
    cfg, paths = topo.settings, topo.state
    lines = [
        "; generated by mqttlb from stack/stack.yaml; regenerated on every `make stack-up`",
        "[supervisord]",
        f"logfile={paths.logs / 'supervisord.log'}",
        f"pidfile={paths.supervisord_pid}",
        f"childlogdir={paths.logs}",
        f"directory={paths.root.parent if paths.root.parent.exists() else paths.root}",
        "identifier=mqttlb-" + cfg.cluster,
        # Envoy needs two descriptors per proxied MQTT connection and the brokers one each: raise
        # the soft limit the children inherit to the figure Envoy's connection cap is derived from.
        f"minfds={topo.switches.envoy_open_files}",
        "",
        "[unix_http_server]",
        f"file={paths.supervisor_socket}",
        "chmod=0700",
        "",
        "[rpcinterface:supervisor]",
        "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface",
        "",
        "[supervisorctl]",
        f"serverurl=unix://{paths.supervisor_socket}",
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


def write_secrets(topo: Topology) -> None:
    """Generate, when missing, the stack's secrets (random, mode 0600): the webhook's, its xDS streams' and the
    exporters' bearer tokens, the web password of Prometheus and Alertmanager (secrets/, mode 0700), for HiveMQ
    nodes their extension's token, with ``tls: true`` the CA and server certificate
    (:mod:`mqttlb.stack.certs`); then the web configs that follow the password."""
    paths = topo.state
    tokens = [paths.webhook_token, paths.xds_token, paths.exporter_token, paths.web_password]
    if topo.switches.brokers == "hivemq":
        tokens.append(paths.hivemq_token)
    for token in tokens:
        if not token.exists():
            token.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(token, secrets.token_urlsafe(32) + "\n")
            token.chmod(0o600)
    paths.web_password.parent.chmod(0o700)  # secrets/: the web password, amtool's config, the CA and keys
    if topo.settings.tls:
        ensure_certificates(paths)
    write_web_configs(topo)


def write_web_configs(topo: Topology) -> None:
    """Prometheus's and Alertmanager's web.yml (basic_auth_users: builders.WEB_USER with the bcrypt hash of
    the password in Paths.web_password, which must exist) and amtool's http config, mode 0600."""
    paths = topo.state
    web = _yaml(builders.web_config(bcrypt_hash(read_secret(paths.web_password, "web password")), topo))
    for path, text in (
        (paths.prometheus_web, web),
        (paths.alertmanager_web, web),
        (paths.amtool_config, _yaml(builders.amtool_config(topo))),
    ):
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, text)
        path.chmod(0o600)


def _quote(part: str) -> str:
    if not part or any(c in part for c in " \t\"'%;"):
        escaped = part.replace("%", "%%").replace('"', '\\"')
        return f'"{escaped}"'
    return part


def _yaml(data: dict[str, Any]) -> str:
    return yaml.safe_dump(data, sort_keys=False)


def render_all(cfg: StackConfig, binaries: dict[str, str]) -> tuple[Paths, list[Program]]:
    """Write every config under the state dir; data dirs are created, never wiped.

    Raises StackConfigError when the state dir's path is too long for supervisord's control socket.
    The pressure file and the secrets (:func:`write_secrets`) are written only when missing (the
    webhook's state survives a restart); the EDS file starts every node at the neutral weight.
    """
    topo = native_topology(cfg)
    paths, files = topo.state, topo.files
    if len(str(paths.supervisor_socket).encode()) > MAX_UNIX_SOCKET_PATH:
        raise StackConfigError(
            f"state_dir: {paths.root}: too long for supervisord's control socket {paths.supervisor_socket.name} "
            f"(a Unix socket path has at most {MAX_UNIX_SOCKET_PATH} bytes); choose a shorter state_dir"
        )
    for directory in (
        paths.logs,
        files.envoy_config.parent,
        paths.eds_file.parent,
        files.prometheus_rules,
        files.prometheus_data,
        files.alertmanager_data,
        files.broker_exporter_config.parent,
        paths.webhook_dir,
    ):
        directory.mkdir(parents=True, exist_ok=True)
    for node in topo.nodes:
        if topo.switches.brokers == "hivemq":
            paths.hivemq_dir(node.name).mkdir(parents=True, exist_ok=True)  # the launcher writes conf/ in it
            continue
        (paths.mosquitto_dir(node.name) / "data").mkdir(parents=True, exist_ok=True)
        atomic_write_text(paths.mosquitto_conf(node.name), mosquitto_config(topo, node))
    write_secrets(topo)

    atomic_write_text(files.envoy_config, _yaml(builders.envoy_bootstrap(topo)))
    if not paths.pressure_file.exists():
        atomic_write_text(paths.pressure_file, "0\n")
    write_eds_file(paths.eds_file, 1, cfg.envoy_cluster, builders.initial_endpoints(topo))

    atomic_write_text(files.prometheus_config, _yaml(builders.prometheus_config(topo)))
    for stale in files.prometheus_rules.glob("*.yml"):
        stale.unlink()
    for name, text in render_rule_files(builders.rule_params(cfg.params, topo.webhook.url())).items():
        atomic_write_text(files.prometheus_rules / name, text)

    atomic_write_text(files.alertmanager_config, render_alertmanager_config(builders.alertmanager_config(topo)))
    atomic_write_text(files.broker_exporter_config, _yaml(builders.broker_exporter_config(topo)))
    atomic_write_text(files.webhook_config, _yaml(builders.webhook_config(topo)))

    progs = programs(topo, binaries)
    atomic_write_text(paths.supervisord_conf, supervisord_config(topo, progs))
    atomic_write_text(paths.root / RECORD_FILE, json.dumps(cfg.model_dump(mode="json"), indent=2) + "\n")
    return paths, progs
