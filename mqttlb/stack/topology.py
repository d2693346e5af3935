"""Where every part of a stack runs and how the others reach it: one value for both stacks.

A `Topology` is made from a `StackConfig` and a set of `Switches`.  Every config builder in
`mqttlb.stack.builders` (Envoy bootstrap and command line, Prometheus, Alertmanager wiring, broker
exporter, Envoy exporter, webhook) takes a Topology and nothing else, and both stacks use the same
builders:

* `native_topology(cfg)`: `make stack-up` -- every process on 127.0.0.1 under supervisord, each on
  its own port, state and configs in the stack's state dir, Mosquitto nodes (or, with
  ``broker: hivemq``, HiveMQ CE nodes run by the brokers/hivemq launcher), EDS from a file.
* `compose_topology(cfg)`: `stack/docker-compose.yml` -- one container per part on a Docker
  network, reached by service name (brokers by fixed IP), HiveMQ nodes, EDS over REST from the
  webhook, configs bind-mounted at the images' usual paths and state in the ``/mqttlb`` volume.

`Switches` lists every way the two stacks differ; everything else is the same by construction
(tests/test_topology.py renders both and checks that the differences are exactly these).
"""

from __future__ import annotations

import ipaddress
import resource
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from mqttlb.stack.config import RECORD_FILE, StackConfig

LOOPBACK = "127.0.0.1"
ANY_ADDRESS = "0.0.0.0"

# --- the compose stack's fixed values ------------------------------------------------------------
# Inside every container the native state layout lives under /mqttlb (one named volume), so the
# pressure file, token and webhook state keep the relative paths `Paths` gives them.
CONTAINER_STATE = Path("/mqttlb")
# Envoy's EDS endpoints must be IP addresses (it does not resolve names in EDS), so the brokers get
# fixed addresses on the compose network; everything else is reached by service name.
SUBNET = "172.30.213.0/24"
BROKER_IP_BASE = "172.30.213.10"  # node i gets .10+i
MQTT_PORT = 1883  # every HiveMQ container listens on the standard port at its own address
HIVEMQ_METRICS_PORT = 9399  # hivemq-prometheus-extension (stack/compose/hivemq/prometheus-extension.properties)
HIVEMQ_METRICS_PATH = "/metrics"
# The Envoy container's open-files limit (its `ulimits` in the compose file); its connection cap follows it.
ENVOY_NOFILE = 65536
# Where the compose file mounts each config, and the images' data directories.
ENVOY_CONFIG_MOUNT = Path("/etc/envoy/envoy.yaml")
# With ADS, Envoy reads its bootstrap with the xDS token filled in (builders.envoy_command) from a
# private in-memory folder of its container (compose: a tmpfs; Kubernetes: an emptyDir of medium Memory).
ENVOY_RUN_DIR = Path("/run/mqttlb-envoy")
MQTTLB_CONFIG_DIR = Path("/etc/mqttlb")
PROMETHEUS_CONFIG_MOUNT = Path("/etc/prometheus/prometheus.yml")
PROMETHEUS_DATA = Path("/prometheus")
ALERTMANAGER_CONFIG_MOUNT = Path("/etc/alertmanager/alertmanager.yml")
ALERTMANAGER_DATA = Path("/alertmanager")

EdsSource = Literal["file", "rest", "grpc", "delta-grpc"]
Addressing = Literal["loopback", "service-names"]
BrokerKind = Literal["mosquitto", "hivemq"]
Layout = Literal["state-dir", "container"]


class TopologyError(ValueError):
    """The settings and switches cannot be laid out as a stack; the message says why."""


@dataclass(frozen=True)
class Switches:
    """The only differences between the native and the compose stack.

    eds: where Envoy reads its endpoints -- ``file`` (a watched JSON file the webhook rewrites),
        ``rest`` (polls the webhook's ``/v3/discovery:endpoints``), ``grpc`` or ``delta-grpc`` (an ADS
        stream, state-of-the-world or incremental, to the webhook's xDS server on ``ports.xds``).
    addressing: ``loopback`` (every part on 127.0.0.1, each on its own port; brokers on
        broker_base + i) or ``service-names`` (each part binds 0.0.0.0 in its own container and is
        reached by its compose service name; brokers at fixed IPs on MQTT port 1883).
    brokers: ``mosquitto`` (CPU read from /proc through a PID file, so on the same host: needs
        ``loopback``) or ``hivemq`` (read from its Prometheus exposition: with ``service-names``
        the official extension on port 9399 of each node's own address; with ``loopback`` the
        mqttlb extension on the node's HTTP port, ``ports.broker_http_base + i - 1``, which also
        serves the eviction API).  The native stack takes it from the stack file's ``broker``.
    layout: where configs, data and state live -- ``state-dir`` (all under the stack's state dir)
        or ``container`` (configs mounted at the images' usual paths, state in the /mqttlb volume).
    envoy_open_files: Envoy's open-files limit (descriptors); its connection cap is derived from it
        unless the stack file sets ``envoy_max_connections``.
    """

    eds: EdsSource
    addressing: Addressing
    brokers: BrokerKind
    layout: Layout
    envoy_open_files: int


class _Below:
    """A fixed path below a state dir: as an attribute of `Paths`, ``paths.root / part / ...``."""

    def __init__(self, *parts: str) -> None:
        self.parts = parts

    def __get__(self, paths: Paths, owner: type | None = None) -> Path:
        return paths.root.joinpath(*self.parts)


@dataclass(frozen=True)
class Paths:
    """Where each part keeps its config, data, logs and PID inside a state dir (the native layout).

    The compose stack uses the same layout under /mqttlb for the files its containers share
    (pressure file, EDS file, webhook token and state).
    """

    root: Path

    logs = _Below("logs")
    supervisord_conf = _Below("supervisord.conf")
    supervisord_pid = _Below("supervisord.pid")
    envoy_yaml = _Below("envoy", "envoy.yaml")
    envoy_bootstrap = _Below("secrets", "envoy.yaml")  # eds=grpc / delta-grpc: envoy.yaml with the xDS token
    pressure_file = _Below("envoy", "pressure")
    eds_file = _Below("eds", "eds.json")
    prometheus_yaml = _Below("prometheus", "prometheus.yml")
    prometheus_rules = _Below("prometheus", "rules")  # a directory of *.yml rule files
    prometheus_data = _Below("prometheus", "data")
    alertmanager_yaml = _Below("alertmanager", "alertmanager.yml")
    alertmanager_data = _Below("alertmanager", "data")
    broker_exporter_yaml = _Below("exporters", "broker.yaml")
    webhook_dir = _Below("webhook")
    webhook_yaml = _Below("webhook", "webhook.yaml")
    webhook_token = _Below("webhook", "token")
    webhook_state = _Below("webhook", "state.json")
    webhook_audit = _Below("webhook", "audit.jsonl")
    # The bearer token of the webhook's gRPC xDS streams only (Envoy sends it; no HTTP route takes it); generated.
    # Its own folder: the compose stack mounts it (a volume of its own) into Envoy and the webhook only.
    xds_token = _Below("xds", "token")
    # The bearer token the exporters' /metrics require (Prometheus scrapes with it); generated.
    exporter_token = _Below("exporters", "token")
    # The stack's web user's password (builders.WEB_USER): Prometheus's and Alertmanager's APIs want it.
    web_password = _Below("secrets", "web-password")
    prometheus_web = _Below("prometheus", "web.yml")  # --web.config.file: basic_auth_users (bcrypt)
    alertmanager_web = _Below("alertmanager", "web.yml")
    amtool_config = _Below("secrets", "amtool.yml")  # amtool --http.config.file: the same login
    # tls: true -- the stack's CA and the server certificate every HTTP part presents (mqttlb.stack.certs)
    tls_ca = _Below("secrets", "ca.crt")
    tls_ca_key = _Below("secrets", "ca.key")
    tls_cert = _Below("secrets", "server.crt")
    tls_key = _Below("secrets", "server.key")
    # supervisord's control socket (mode 0700: only this user); the runner speaks XML-RPC over it.
    supervisor_socket = _Below("supervisord.sock")

    def mosquitto_dir(self, node: str) -> Path:
        return self.root / "mosquitto" / node

    def mosquitto_conf(self, node: str) -> Path:
        return self.mosquitto_dir(node) / "mosquitto.conf"

    def mosquitto_pid(self, node: str) -> Path:
        return self.mosquitto_dir(node) / "mosquitto.pid"

    def hivemq_dir(self, node: str) -> Path:
        """A HiveMQ node's folder (the launcher's ``--data-dir``: conf/, data/, extensions/)."""
        return self.root / "hivemq" / node

    @property
    def hivemq_token(self) -> Path:
        """The bearer token of every HiveMQ node's mqttlb extension API (the webhook reads it too)."""
        return self.root / "hivemq" / "token"


def layout_names() -> frozenset[str]:
    """The names a stack writes directly in its state dir: the first part of each :class:`Paths` entry, the broker
    folders (``mosquitto/``, ``hivemq/``) and ``stack.json`` (``config.RECORD_FILE``)."""
    below = {entry.parts[0] for entry in vars(Paths).values() if isinstance(entry, _Below)}
    return frozenset(below | {"mosquitto", "hivemq", RECORD_FILE})


@dataclass(frozen=True)
class Files:
    """Where each component reads its config and keeps its data, as that component sees the path."""

    envoy_config: Path
    envoy_bootstrap: Path  # what Envoy reads with eds=grpc / delta-grpc: envoy_config with the xDS token
    prometheus_config: Path
    prometheus_rules: Path  # a directory of *.yml rule files
    prometheus_data: Path
    alertmanager_config: Path
    alertmanager_data: Path
    broker_exporter_config: Path
    webhook_config: Path


@dataclass(frozen=True)
class Service:
    """One network service: where it binds (``listen``) and where the other parts reach it."""

    name: str  # compose service name (native: the supervisord program of the same name)
    listen_host: str
    reach_host: str
    port: int
    scheme: str = "http"  # https with the stack file's tls: true

    @property
    def listen(self) -> str:
        """``host:port`` to bind."""
        return f"{self.listen_host}:{self.port}"

    @property
    def reach(self) -> str:
        """``host:port`` the other parts connect to."""
        return f"{self.reach_host}:{self.port}"

    def url(self, path: str = "") -> str:
        """``<scheme>://<reach><path>``."""
        return f"{self.scheme}://{self.reach}{path}"


@dataclass(frozen=True)
class BrokerNode:
    """One MQTT broker node and how the proxy, the exporter and the webhook reach it."""

    name: str  # the `node` label and the EDS hostname, e.g. node1
    service: str  # supervisord program (mosquitto-node1) or compose service and DNS name (hivemq1)
    host: str  # where the broker exporter connects (loopback or the service name)
    ip: str  # where Envoy sends clients: EDS endpoints must be IP addresses
    port: int  # MQTT port at ``host`` and ``ip``
    pid_file: Path | None  # mosquitto: the exporter reads the process's CPU through it
    metrics_url: str | None  # hivemq: the Prometheus extension's exposition
    api_url: str | None = None  # hivemq with the mqttlb extension: its HTTP API (eviction, availability)
    http_port: int | None = None  # ... and the port it listens on (native stack: broker_http_base + i - 1)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True)
class Topology:
    """Everything the config builders need: the settings, the switches, every address and path."""

    settings: StackConfig
    switches: Switches
    state: Paths  # the state dir as the components see it
    files: Files
    nodes: tuple[BrokerNode, ...]
    envoy_listener: Service  # MQTT clients connect here
    envoy_admin: Service
    prometheus: Service
    alertmanager: Service
    broker_exporter: Service
    envoy_exporter: Service
    webhook: Service
    webhook_xds: Service  # the webhook's gRPC xDS server (eds=grpc / delta-grpc)


def fd_limit(ceiling: int = 1_048_576) -> int:
    """This host's hard open-files limit (capped): supervisord raises its children's soft limit to it."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    return ceiling if hard == resource.RLIM_INFINITY or hard < 0 else min(hard, ceiling)


def native_switches(
    open_files: int | None = None, brokers: BrokerKind = "mosquitto", eds: EdsSource = "file"
) -> Switches:
    """`make stack-up`: ``eds`` (the stack file's ``eds``: file, grpc or delta-grpc), loopback, ``brokers``
    (the stack file's ``broker``), the state dir, this host's open-files limit."""
    return Switches(
        eds=eds,
        addressing="loopback",
        brokers=brokers,
        layout="state-dir",
        envoy_open_files=fd_limit() if open_files is None else open_files,
    )


COMPOSE_SWITCHES = Switches(
    eds="grpc", addressing="service-names", brokers="hivemq", layout="container", envoy_open_files=ENVOY_NOFILE
)


def native_topology(cfg: StackConfig, open_files: int | None = None) -> Topology:
    """The native stack's topology; ``open_files`` defaults to this host's hard limit."""
    return topology(cfg, native_switches(open_files, cfg.broker, cfg.eds))


def compose_topology(cfg: StackConfig) -> Topology:
    """The compose stack's topology (stack/docker-compose.yml)."""
    return topology(cfg, COMPOSE_SWITCHES)


def topology(cfg: StackConfig, switches: Switches) -> Topology:
    """Lay ``cfg`` out as ``switches`` say.

    Raises TopologyError for a combination that cannot run (see `Switches`) or for more nodes than
    the compose subnet has fixed addresses for.
    """
    if switches.brokers == "mosquitto" and switches.addressing != "loopback":
        raise TopologyError(f"brokers=mosquitto needs addressing=loopback, not {switches.addressing}")
    state = Paths(cfg.state_dir if switches.layout == "state-dir" else CONTAINER_STATE)
    loopback = switches.addressing == "loopback"

    def service(name: str, port: int, scheme: str = "http") -> Service:
        if loopback:
            return Service(name, LOOPBACK, LOOPBACK, port, scheme)
        return Service(name, ANY_ADDRESS, name, port, scheme)

    https = "https" if cfg.tls else "http"  # the HTTP parts mqttlb configures (Envoy's admin stays plain)

    p = cfg.ports
    return Topology(
        settings=cfg,
        switches=switches,
        state=state,
        files=_files(state, switches.layout),
        nodes=_nodes(cfg, switches, state),
        envoy_listener=service("envoy", p.envoy_listener),
        envoy_admin=service("envoy", p.envoy_admin),
        prometheus=service("prometheus", p.prometheus, https),
        alertmanager=service("alertmanager", p.alertmanager, https),
        broker_exporter=service("broker-exporter", p.broker_exporter, https),
        envoy_exporter=service("envoy-exporter", p.envoy_exporter, https),
        webhook=service("webhook", p.webhook, https),
        webhook_xds=service("webhook", p.xds),
    )


def _files(state: Paths, layout: Layout) -> Files:
    if layout == "state-dir":
        return Files(
            envoy_config=state.envoy_yaml,
            envoy_bootstrap=state.envoy_bootstrap,
            prometheus_config=state.prometheus_yaml,
            prometheus_rules=state.prometheus_rules,
            prometheus_data=state.prometheus_data,
            alertmanager_config=state.alertmanager_yaml,
            alertmanager_data=state.alertmanager_data,
            broker_exporter_config=state.broker_exporter_yaml,
            webhook_config=state.webhook_yaml,
        )
    return Files(
        envoy_config=ENVOY_CONFIG_MOUNT,
        envoy_bootstrap=ENVOY_RUN_DIR / ENVOY_CONFIG_MOUNT.name,
        prometheus_config=PROMETHEUS_CONFIG_MOUNT,
        prometheus_rules=state.prometheus_rules,  # rules/ mounted where the native stack keeps them
        prometheus_data=PROMETHEUS_DATA,
        alertmanager_config=ALERTMANAGER_CONFIG_MOUNT,
        alertmanager_data=ALERTMANAGER_DATA,
        broker_exporter_config=MQTTLB_CONFIG_DIR / "broker-exporter.yaml",
        webhook_config=MQTTLB_CONFIG_DIR / "webhook.yaml",
    )


def broker_ips(nodes: int) -> list[str]:
    """The fixed compose-network addresses of ``nodes`` brokers; TopologyError if they do not fit."""
    first = ipaddress.IPv4Address(BROKER_IP_BASE)
    network = ipaddress.IPv4Network(SUBNET)
    ips = [first + i for i in range(1, nodes + 1)]
    if ips[-1] not in network or ips[-1] == network.broadcast_address:
        raise TopologyError(f"{nodes} nodes do not fit after {BROKER_IP_BASE} in {SUBNET}")
    return [str(ip) for ip in ips]


def _nodes(cfg: StackConfig, switches: Switches, state: Paths) -> tuple[BrokerNode, ...]:
    kind = switches.brokers
    # (service, host, ip, port) of each node
    places: list[tuple[str, str, str, int]]
    if switches.addressing == "loopback":
        ports = zip(cfg.node_names, cfg.broker_ports, strict=True)
        places = [(f"{kind}-{node}", LOOPBACK, LOOPBACK, port) for node, port in ports]
    else:
        places = [(f"{kind}{i}", f"{kind}{i}", ip, MQTT_PORT) for i, ip in enumerate(broker_ips(cfg.nodes), start=1)]
    if kind == "mosquitto":
        return tuple(
            BrokerNode(node, service, host, ip, port, pid_file=state.mosquitto_pid(node), metrics_url=None)
            for node, (service, host, ip, port) in zip(cfg.node_names, places, strict=True)
        )
    if switches.addressing == "service-names":  # the official Prometheus extension of the HiveMQ image
        return tuple(
            BrokerNode(
                node, service, host, ip, port, None, f"http://{host}:{HIVEMQ_METRICS_PORT}{HIVEMQ_METRICS_PATH}"
            )
            for node, (service, host, ip, port) in zip(cfg.node_names, places, strict=True)
        )
    # loopback: HiveMQ CE nodes run by the launcher, the mqttlb extension on each node's own HTTP port
    http_ports = [cfg.ports.broker_http_base + i for i in range(cfg.nodes)]
    return tuple(
        BrokerNode(
            node,
            service,
            host,
            ip,
            port,
            pid_file=None,
            metrics_url=f"http://{host}:{http}{HIVEMQ_METRICS_PATH}",
            api_url=f"http://{host}:{http}",
            http_port=http,
        )
        for node, (service, host, ip, port), http in zip(cfg.node_names, places, http_ports, strict=True)
    )
