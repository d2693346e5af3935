"""How the webhook reaches one node's eviction side: the per-node ``eviction`` block of ``webhook.yaml``
and the factory that opens the matching :class:`~mqttlb.brokers.eviction.EvictionAdapter`.

One model per broker kind, told apart by ``kind``::

    nodes:
      - {name: node1, host: 127.0.0.1, port: 1883, eviction: {kind: mosquitto}}
      - {name: node2, host: 10.0.0.2, port: 1883,
         eviction: {kind: hivemq, url: "http://10.0.0.2:9399", token_file: /etc/mqttlb/hivemq-token}}
      - {name: node3, host: 10.0.0.3, port: 1883,
         eviction: {kind: emqx, url: "http://10.0.0.3:18083", node: "emqx@10.0.0.3",
                    api_key: mqttlb, api_secret_file: /etc/mqttlb/emqx-secret}}

A node without an ``eviction`` block cannot be evicted from (the evict lever skips it and says so).
Secrets are read from files at open time, never kept in the YAML.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from mqttlb import contract
from mqttlb.brokers.eviction import EvictionAdapter, EvictionError
from mqttlb.params import HttpUrl
from mqttlb.secure import MqttTls, SecretError


class _Control(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MosquittoControl(_Control):
    """The mqttlb Mosquitto plugin, over MQTT straight to the node's ``host:port`` (never through Envoy).

    ``client_id`` (and ``username`` / ``password_file`` when the broker requires them): the control
    identity the plugin is configured with (``plugin_opt_control_client_id``).  ``tls``: connect over
    TLS (CA file, optional client certificate and key), e.g. to a listener with ``require_certificate``."""

    kind: Literal["mosquitto"]
    client_id: str = Field(default=contract.EVICTION_CONTROL_CLIENT_ID, min_length=1, max_length=65535)
    username: str | None = None
    password_file: Path | None = None
    tls: MqttTls | None = None

    @model_validator(mode="after")
    def _password_needs_username(self) -> MosquittoControl:
        if self.password_file is not None and self.username is None:
            raise ValueError("password_file needs username (MQTT sends a password only with a username)")
        return self


class HivemqControl(_Control):
    """The mqttlb HiveMQ extension's HTTP API (``brokers/hivemq``) at ``url``, bearer token in ``token_file``."""

    kind: Literal["hivemq"]
    url: HttpUrl
    token_file: Path


class EmqxControl(_Control):
    """EMQX's REST API at ``url`` (the dashboard listener, e.g. ``http://host:18083``) for the cluster node
    named ``node``; an API key and the file holding its secret."""

    kind: Literal["emqx"]
    url: HttpUrl
    node: str = Field(min_length=1)
    api_key: str = Field(min_length=1)
    api_secret_file: Path


EvictionControl = Annotated[MosquittoControl | HivemqControl | EmqxControl, Field(discriminator="kind")]


def _secret(path: Path | None, what: str) -> str | None:
    if path is None:
        return None
    try:
        return Path(path).read_text().strip()
    except OSError as exc:
        raise EvictionError(f"{what} {path}: cannot read: {exc.strerror or exc}") from None


def _tls(tls: MqttTls | None) -> ssl.SSLContext | None:
    try:
        return tls.context() if tls is not None else None
    except SecretError as exc:
        raise EvictionError(str(exc)) from None


def open_adapter(
    host: str, port: int, control: MosquittoControl | HivemqControl | EmqxControl, timeout: float
) -> EvictionAdapter:
    """An adapter for the node at ``host:port`` described by ``control``; ``timeout`` in seconds per request.

    The adapter connects lazily (on its first call).  Raises EvictionError when a secret or TLS file is
    unreadable.
    """
    if isinstance(control, MosquittoControl):
        from mqttlb.brokers.mosquitto import MosquittoEvictionAdapter

        return MosquittoEvictionAdapter(
            host,
            port,
            client_id=control.client_id,
            username=control.username,
            password=_secret(control.password_file, "password_file"),
            tls=_tls(control.tls),
            timeout=timeout,
        )
    if isinstance(control, HivemqControl):
        from mqttlb.brokers import hivemq

        token = _secret(control.token_file, "token_file") or ""
        return hivemq.HivemqEvictionAdapter(control.url, token=token, timeout=timeout)
    from mqttlb.brokers import emqx

    secret = _secret(control.api_secret_file, "api_secret_file") or ""
    return emqx.EmqxEvictionAdapter(
        control.url, control.node, api_key=control.api_key, api_secret=secret, timeout=timeout
    )
