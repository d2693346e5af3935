"""The broker exporter's YAML config, validated strictly at load (unknown keys are errors)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal
from urllib.parse import urlparse

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from mqttlb import contract
from mqttlb.params import ClusterLabel
from mqttlb.secure import MqttTls
from mqttlb.yamlfile import ConfigError, invalid, kind_of, load_yaml_mapping, one_line

NAME_PATTERN = r"^[A-Za-z0-9_.-]+$"
MAX_CONFIG_BYTES = 1_000_000


class BrokerExporterConfigError(ConfigError):
    """The broker exporter's config is wrong; the message is one line naming the file and the problem."""


def parse_host_port(value: str) -> tuple[str, int]:
    """``"127.0.0.1:9641"`` -> ``("127.0.0.1", 9641)``; raises ValueError with a clear message."""
    host, sep, port_text = value.rpartition(":")
    if not sep or not host or not port_text.isdigit():
        raise ValueError(f"expected host:port, got {value!r}")
    port = int(port_text)
    if not 1 <= port <= 65535:
        raise ValueError(f"port must be 1..65535, got {port}")
    return host.strip("[]"), port


class BrokerTargetConfig(BaseModel):
    """One broker the exporter reads: its kind, address and where its CPU figures come from."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=NAME_PATTERN, max_length=64)
    kind: Literal["mosquitto", "hivemq"]
    address: str  # host:port of the broker's MQTT listener (for HiveMQ: informational)
    cpu_cores: float = Field(gt=0, le=1024)
    pid_file: Path | None = None  # mosquitto: where to find the process for CPU/memory
    metrics_url: str | None = None  # hivemq: the Prometheus extension's endpoint
    # hivemq: the official Prometheus extension's `suffix` setting when set (builds of its pull request #16
    # append "_<suffix>" to every name); the released extension and the mqttlb one have none.
    metric_suffix: str | None = Field(default=None, min_length=1, max_length=255)
    sys_interval_seconds: float | None = Field(default=None, gt=0, le=3600)  # mosquitto override
    # mosquitto: the MQTT identity (the password read from its file at start) and TLS of the $SYS connection
    username: str | None = Field(default=None, min_length=1)
    password_file: Path | None = None
    tls: MqttTls | None = None

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
            raise ValueError("must be an http(s) URL")
        return value

    @model_validator(mode="after")
    def _kind_fields(self) -> BrokerTargetConfig:
        if self.kind == "hivemq":
            if self.metrics_url is None:
                raise invalid("a hivemq node needs metrics_url", "metrics_url")
            if self.pid_file is not None:
                raise invalid("pid_file is for mosquitto nodes; hivemq reports its own process CPU", "pid_file")
        if self.kind == "mosquitto" and self.metrics_url is not None:
            raise invalid("metrics_url is for hivemq nodes", "metrics_url")
        if self.kind == "mosquitto" and self.metric_suffix is not None:
            raise invalid("metric_suffix is for hivemq nodes", "metric_suffix")
        for key in ("username", "password_file", "tls"):
            if self.kind == "hivemq" and getattr(self, key) is not None:
                raise invalid(f"{key} is for mosquitto nodes (the MQTT $SYS connection)", key)
        if self.password_file is not None and self.username is None:
            raise invalid("password_file needs username", "username")
        return self


class BrokerExporterConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    listen: str = "127.0.0.1:9641"
    cluster: str = Field(pattern=NAME_PATTERN, max_length=64)
    # Name of the label that carries `cluster` (the parameter mqtt_cluster_label; never `cluster`).
    cluster_label: ClusterLabel = contract.CLUSTER_LABEL
    scrape_timeout_seconds: float = Field(default=2.0, gt=0, le=60)
    # Mosquitto's $SYS publish period; values older than stale_factor x this mean "node down".
    sys_interval_seconds: float = Field(default=10.0, gt=0, le=3600)
    stale_factor: float = Field(default=3.0, ge=1.5, le=100)
    nodes: list[BrokerTargetConfig] = Field(min_length=1, max_length=1000)

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
                raise invalid(f"node name {node.name!r} appears twice", "nodes")
            seen.add(node.name)
        return self

    def sys_interval_for(self, node: BrokerTargetConfig) -> float:
        return node.sys_interval_seconds or self.sys_interval_seconds


def parse_config(data: object, source: str = "<config>") -> BrokerExporterConfig:
    """Validate an already parsed config; raises :class:`BrokerExporterConfigError`, one line
    ``"<source>: <key>: <problem>"``."""
    if not isinstance(data, dict):
        raise BrokerExporterConfigError(f"{source}: must be a mapping of keys to values, got {kind_of(data)}")
    try:
        return BrokerExporterConfig.model_validate(data)
    except ValidationError as exc:
        raise BrokerExporterConfigError(one_line(exc, source)) from None


def load_config(path: Path) -> BrokerExporterConfig:
    """Read and validate the YAML config at ``path``; raises :class:`BrokerExporterConfigError`."""
    return parse_config(load_yaml_mapping(path, BrokerExporterConfigError, MAX_CONFIG_BYTES), str(path))
