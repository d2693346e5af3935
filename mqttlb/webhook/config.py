"""The webhook's config file (``webhook.yaml``, written by the stack runner) and its bearer token."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from mqttlb.contract import ENVOY_CLUSTER
from mqttlb.params import Params, load_params
from mqttlb.webhook.shedding import validate_fractions

TOKEN_ENV = "MQTTLB_WEBHOOK_TOKEN"
_LISTEN = re.compile(r"^(?P<host>[^:]+|\[[0-9a-fA-F:]+\]):(?P<port>\d{1,5})$")


class ConfigError(ValueError):
    """The webhook config (or its token) is unusable."""


class NodeConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    host: str = Field(min_length=1)
    port: int = Field(ge=1, le=65535)


class WebhookConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    listen: str = "127.0.0.1:9643"
    cluster: str = Field(default="local", min_length=1)
    envoy_cluster: str = Field(default=ENVOY_CLUSTER, pattern=r"^[A-Za-z0-9_.-]+$")
    envoy_admin: str = "http://127.0.0.1:9901"
    prometheus_url: str = "http://127.0.0.1:9090"
    eds_path: Path
    overload_file: Path
    token_file: Path | None = None
    state_file: Path
    audit_log: Path
    dry_run: bool = False
    nodes: list[NodeConfig] = Field(min_length=1)
    params_overrides: dict[str, Any] = Field(default_factory=dict)
    http_timeout_seconds: float = Field(default=2.0, gt=0, le=30)
    max_body_bytes: int = Field(default=1024 * 1024, gt=0)

    @field_validator("listen")
    @classmethod
    def _check_listen(cls, value: str) -> str:
        match = _LISTEN.match(value)
        if not match or not 0 < int(match["port"]) < 65536:
            raise ValueError(f"listen must be host:port, got {value!r}")
        return value

    @model_validator(mode="after")
    def _check_nodes(self) -> WebhookConfig:
        names = [n.name for n in self.nodes]
        if len(set(names)) != len(names):
            raise ValueError(f"node names must be unique, got {names}")
        return self

    @property
    def node_names(self) -> list[str]:
        return [n.name for n in self.nodes]

    def params(self) -> Params:
        try:
            params = load_params(self.params_overrides)
        except ValidationError as exc:
            raise ConfigError(f"params_overrides invalid: {exc}") from exc
        p = params.policy
        try:
            validate_fractions(p.shed_levels)
        except ValueError as exc:
            raise ConfigError(str(exc)) from exc
        if not p.min_weight <= p.neutral_weight <= p.max_weight:
            raise ConfigError(f"need min_weight <= neutral_weight <= max_weight, got {p}")
        return params

    def listen_host_port(self) -> tuple[str, int]:
        match = _LISTEN.match(self.listen)
        assert match is not None
        return match["host"].strip("[]"), int(match["port"])


def load_config(path: Path, overrides: dict[str, Any] | None = None) -> WebhookConfig:
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"config {path} is not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"config {path} must be a mapping")
    raw.update(overrides or {})
    try:
        config = WebhookConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"config {path} invalid: {exc}") from exc
    config.params()  # fail now, not at the first alert
    return config


def load_token(config: WebhookConfig, env: dict[str, str] | None = None) -> str:
    """The bearer token: from ``token_file`` if set, else from $MQTTLB_WEBHOOK_TOKEN."""
    env = dict(os.environ) if env is None else env
    if config.token_file is not None:
        try:
            token = Path(config.token_file).read_text().strip()
        except OSError as exc:
            raise ConfigError(f"cannot read token file {config.token_file}: {exc}") from exc
        source = str(config.token_file)
    else:
        token = env.get(TOKEN_ENV, "").strip()
        source = f"${TOKEN_ENV}"
    if len(token) < 16:
        raise ConfigError(f"bearer token from {source} is missing or shorter than 16 characters")
    return token
