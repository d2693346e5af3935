"""The webhook's config file (``webhook.yaml``, written by the stack runner) and its bearer token.

The file's ``params_overrides`` (overrides of ``mqttlb/params.yaml``) are merged and validated at
load like every other key, so a bad parameter stops the webhook before it serves anything.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from mqttlb.brokers.control import EvictionControl
from mqttlb.contract import ENVOY_CLUSTER
from mqttlb.params import HttpUrl, Params, PositiveDuration, check_rate_window, duration_seconds, with_defaults
from mqttlb.secure import BasicAuth, ClientAuth, ServerTls
from mqttlb.webhook.lease import LeaseConfig
from mqttlb.yamlfile import ConfigError, Sources, invalid, load_yaml_mapping, one_line, parse_yaml_mapping

TOKEN_ENV = "MQTTLB_WEBHOOK_TOKEN"
_LISTEN = re.compile(r"^(?P<host>[^:]+|\[[0-9a-fA-F:]+\]):(?P<port>\d{1,5})$")


class WebhookConfigError(ConfigError):
    """The webhook config (or its token) is unusable; the message is one line naming the source."""


class WebhookNodeConfig(BaseModel):
    """One broker node the webhook steers: its name in EDS, its MQTT address and how to reach its eviction
    side (``mqttlb.brokers.control``; None: the evict lever skips this node)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    host: str = Field(min_length=1)
    port: int = Field(ge=1, le=65535)
    eviction: EvictionControl | None = None

    @field_validator("host")
    @classmethod
    def _host_is_an_ip(cls, value: str) -> str:
        # Envoy's EDS endpoints take IP addresses only: a name or 999.1.1.1 would be refused by Envoy later.
        try:
            ipaddress.ip_address(value)
        except ValueError:
            raise ValueError(f"must be an IPv4 or IPv6 address (Envoy's EDS takes no names), got {value!r}") from None
        return value


class WebhookConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    listen: str = "127.0.0.1:9643"
    cluster: str = Field(default="local", min_length=1)
    envoy_cluster: str = Field(default=ENVOY_CLUSTER, pattern=r"^[A-Za-z0-9_.-]+$")
    envoy_admin: str = "http://127.0.0.1:9901"
    prometheus_url: str = "http://127.0.0.1:9090"
    eds_path: Path
    # The shed lever's hard stop (the last level, mqttlb.webhook.shedding), exactly one of: the overload
    # manager's injected-resource file, which this process writes (Envoy reads it on the same host or
    # volume) ...
    overload_file: Path | None = None
    # ... or the runtime connection limit of this Envoy listener, set to 0 over Envoy's admin API like the
    # shed cap: for an Envoy whose files this process cannot write (Kubernetes: another pod).
    hard_stop_listener: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.-]+$")
    # Shed through every address envoy_admin's host resolves to (a headless Service: every Envoy pod), each
    # call resolving afresh; False: the one Envoy at envoy_admin.  Needs hard_stop_listener.
    envoy_admin_all_addresses: bool = False
    token_file: Path | None = None
    # Accepted next to the bearer token on every route but /healthz and /readyz (mqttlb.webhook.app).
    basic_auth: BasicAuth | None = None
    # Read routes served without a credential: home (/), status, metrics, eds (REST EDS, for Envoys
    # that cannot send a header).  Default: none.
    open_routes: list[Literal["home", "status", "metrics", "eds"]] = Field(default_factory=list)
    # HTTPS (cheroot's TLS; mqttlb.webhook.server); None: plain HTTP.
    tls: ServerTls | None = None
    # How to call Prometheus (the observer's queries) and Alertmanager (the resync): credentials, CA.
    prometheus_auth: ClientAuth | None = None
    alertmanager_auth: ClientAuth | None = None
    state_file: Path
    audit_log: Path
    dry_run: bool = False
    nodes: list[WebhookNodeConfig] = Field(min_length=1)
    # Overrides of mqttlb/params.yaml in the file; after loading, the complete validated parameters.
    params_overrides: Params = Field(default_factory=lambda: Params.model_validate(with_defaults({})))
    # Prometheus' scrape (and rule evaluation) interval: with the rate window, the measurement lag
    # that sets the reconcile loop's cadence.
    scrape_interval: PositiveDuration = "5s"
    # Alertmanager base URLs (every member of an HA pair): the firing set is rebuilt from their
    # /api/v2/alerts at start and every repeat_interval.  Empty: notifications only.
    alertmanager_urls: list[HttpUrl] = Field(default_factory=list, max_length=10)
    http_timeout_seconds: float = Field(default=2.0, gt=0, le=30)
    max_body_bytes: int = Field(default=1024 * 1024, gt=0)
    # host:port of the gRPC xDS server (ADS, SotW and delta; mqttlb.webhook.xds_grpc); None: off.
    xds_grpc_listen: str | None = None
    # The bearer token every xDS stream must carry (Envoy's ADS initial_metadata): its own, not token_file's,
    # and accepted on no HTTP route -- it only reads the endpoint snapshot.  Needed with xds_grpc_listen.
    xds_token_file: Path | None = None
    # Replicas: the leader lease (mqttlb.webhook.lease); None: this process always acts.
    lease: LeaseConfig | None = None

    @field_validator("listen", "xds_grpc_listen")
    @classmethod
    def _check_listen(cls, value: str | None) -> str | None:
        if value is None:
            return value
        match = _LISTEN.match(value)
        if not match or not 0 < int(match["port"]) < 65536:
            raise ValueError("must be host:port")
        return value

    @field_validator("params_overrides", mode="before")
    @classmethod
    def _params_with_defaults(cls, value: Any) -> Any:
        return with_defaults(value)

    @model_validator(mode="after")
    def _check_hard_stop(self) -> WebhookConfig:
        if (self.overload_file is None) == (self.hard_stop_listener is None):
            raise invalid(
                "set exactly one of overload_file and hard_stop_listener (the shed hard stop)",
                "overload_file",
                "hard_stop_listener",
            )
        if self.envoy_admin_all_addresses and self.hard_stop_listener is None:
            raise invalid(
                "envoy_admin_all_addresses needs hard_stop_listener (one file cannot stop many Envoys)",
                "envoy_admin_all_addresses",
            )
        return self

    @model_validator(mode="after")
    def _check_xds_token(self) -> WebhookConfig:
        if self.xds_grpc_listen is not None and self.xds_token_file is None:
            raise invalid(
                "xds_grpc_listen needs xds_token_file (the bearer token Envoy sends on its ADS stream)",
                "xds_token_file",
            )
        return self

    @model_validator(mode="after")
    def _rate_window_spans_two_scrapes(self) -> WebhookConfig:
        check_rate_window(self.params_overrides, self.scrape_interval, "params_overrides.rate_window")
        return self

    @model_validator(mode="after")
    def _check_nodes(self) -> WebhookConfig:
        names = [n.name for n in self.nodes]
        if len(set(names)) != len(names):
            raise invalid(f"node names must be unique, got {names}", "nodes")
        return self

    @property
    def node_names(self) -> list[str]:
        return [n.name for n in self.nodes]

    @property
    def scrape_interval_seconds(self) -> float:
        return duration_seconds(self.scrape_interval)

    def params(self) -> Params:
        """The parameters: mqttlb/params.yaml with ``params_overrides`` applied, validated at load."""
        return self.params_overrides

    def listen_host_port(self) -> tuple[str, int]:
        match = _LISTEN.match(self.listen)
        assert match is not None
        return match["host"].strip("[]"), int(match["port"])


def load_config(
    path: Path,
    overrides: Mapping[str, Any] | None = None,
    overrides_source: str = "command line",
    read_from: Path | None = None,
) -> WebhookConfig:
    """The webhook config from the YAML file at ``path`` (its text read from ``read_from`` when given: a
    checked copy, messages still name ``path``), with ``overrides`` (top-level keys) on top.

    Raises :class:`WebhookConfigError`, one line naming the key and its source (``path`` or
    ``overrides_source``), e.g. ``"webhook.yaml: params_overrides.policy.bogus: unknown key"``."""
    path = Path(path)
    if read_from is None:
        raw = load_yaml_mapping(path, WebhookConfigError)
    else:
        try:
            raw = parse_yaml_mapping(Path(read_from).read_bytes(), str(path), WebhookConfigError)
        except OSError as exc:
            raise WebhookConfigError(f"{path}: checked copy {read_from}: cannot read: {exc.strerror}") from None
    sources = Sources(str(path))
    sources.add(str(path), raw)
    sources.add(overrides_source, overrides or {})
    try:
        return WebhookConfig.model_validate({**raw, **(overrides or {})})
    except ValidationError as exc:
        raise WebhookConfigError(one_line(exc, sources)) from None


def load_token(config: WebhookConfig, env: dict[str, str] | None = None) -> str:
    """The bearer token: from ``token_file`` if set, else from $MQTTLB_WEBHOOK_TOKEN.

    Raises :class:`WebhookConfigError` naming the file or variable if it is unreadable or the token
    is shorter than 16 characters."""
    env = dict(os.environ) if env is None else env
    if config.token_file is not None:
        try:
            token = Path(config.token_file).read_text().strip()
        except OSError as exc:
            raise WebhookConfigError(f"{config.token_file}: cannot read: {exc.strerror or exc}") from None
        source = str(config.token_file)
    else:
        token = env.get(TOKEN_ENV, "").strip()
        source = f"environment variable {TOKEN_ENV}"
    if len(token) < 16:
        raise WebhookConfigError(f"{source}: bearer token is missing or shorter than 16 characters")
    return token
