"""The broker exporter's YAML config, validated strictly (unknown keys are errors)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal
from urllib.parse import urlparse

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

NAME_PATTERN = r"^[A-Za-z0-9_.-]+$"
MAX_CONFIG_BYTES = 1_000_000


class ConfigError(ValueError):
    """The config is wrong; the message is one line naming the file and the problem."""


def parse_host_port(value: str) -> tuple[str, int]:
    """``"127.0.0.1:9641"`` -> ``("127.0.0.1", 9641)``; raises ValueError with a clear message."""
    host, sep, port_text = value.rpartition(":")
    if not sep or not host or not port_text.isdigit():
        raise ValueError(f"expected host:port, got {value!r}")
    port = int(port_text)
    if not 1 <= port <= 65535:
        raise ValueError(f"port must be 1..65535, got {port}")
    return host.strip("[]"), port


class NodeConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=NAME_PATTERN, max_length=64)
    kind: Literal["mosquitto", "hivemq"]
    address: str  # host:port of the broker's MQTT listener (for HiveMQ: informational)
    cpu_cores: float = Field(gt=0, le=1024)
    pid_file: Path | None = None  # mosquitto: where to find the process for CPU/memory
    metrics_url: str | None = None  # hivemq: the Prometheus extension's endpoint
    sys_interval_seconds: float | None = Field(default=None, gt=0, le=3600)  # mosquitto override

    @field_validator("address")
    @classmethod
    def _address(cls, value: str) -> str:
        parse_host_port(value)
        return value

    @field_validator("metrics_url")
    @classmethod
    def _metrics_url(cls, value: str | None) -> str | None:
        if value is None:
            return value
        parsed = urlparse(value)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise ValueError(f"metrics_url must be an http(s) URL, got {value!r}")
        return value

    @model_validator(mode="after")
    def _kind_fields(self) -> NodeConfig:
        if self.kind == "hivemq":
            if self.metrics_url is None:
                raise ValueError("a hivemq node needs metrics_url")
            if self.pid_file is not None:
                raise ValueError("pid_file is for mosquitto nodes; hivemq reports its own process CPU")
        if self.kind == "mosquitto" and self.metrics_url is not None:
            raise ValueError("metrics_url is for hivemq nodes")
        return self


class BrokerExporterConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    listen: str = "127.0.0.1:9641"
    cluster: str = Field(pattern=NAME_PATTERN, max_length=64)
    scrape_timeout_seconds: float = Field(default=2.0, gt=0, le=60)
    # Mosquitto's $SYS publish period; values older than stale_factor x this mean "node down".
    sys_interval_seconds: float = Field(default=10.0, gt=0, le=3600)
    stale_factor: float = Field(default=3.0, ge=1.5, le=100)
    nodes: list[NodeConfig] = Field(min_length=1, max_length=1000)

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: str) -> str:
        parse_host_port(value)
        return value

    @model_validator(mode="after")
    def _unique_names(self) -> BrokerExporterConfig:
        seen: set[str] = set()
        for node in self.nodes:
            if node.name in seen:
                raise ValueError(f"node name {node.name!r} appears twice")
            seen.add(node.name)
        return self

    def sys_interval_for(self, node: NodeConfig) -> float:
        return node.sys_interval_seconds or self.sys_interval_seconds


def one_line(error: ValidationError) -> str:
    parts = []
    for item in error.errors():
        where = ".".join(str(p) for p in item["loc"]) or "(top level)"
        parts.append(f"{where}: {item['msg']}")
    return "; ".join(parts)


def parse_config(data: object, source: str = "<config>") -> BrokerExporterConfig:
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level, got {type(data).__name__}")
    try:
        return BrokerExporterConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{source}: {one_line(exc)}") from None


def load_config(path: Path) -> BrokerExporterConfig:
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{path}: larger than {MAX_CONFIG_BYTES} bytes")
    try:
        data = yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}: not valid YAML{where}") from None
    return parse_config(data, str(path))
