"""Mosquitto's eviction side: the mqttlb plugin's ``$CONTROL/mqttlb/v1`` protocol over paho-mqtt.

One MQTT connection per node, as the plugin's control client (``contract.EVICTION_CONTROL_CLIENT_ID``
unless told otherwise), opened on first use; paho's network thread reconnects after a loss.  Each call
publishes one command with a fresh ``correlationData`` and waits for the answer the plugin sends to
this client on ``$CONTROL/mqttlb/v1/response``:

- :meth:`MosquittoEvictionAdapter.clients` / :meth:`~MosquittoEvictionAdapter.list_clients`:
  ``listClients`` (the per-client load plus the plugin's counters and bounds), within ``timeout`` s;
- :meth:`~MosquittoEvictionAdapter.evict`: ``evict``; the plugin answers when the batch is done, so the
  wait is ``timeout + (n - 1) / max_per_second`` s.

Mosquitto nodes are independent brokers: a session never follows a client to another node
(``shared_sessions`` is False).  Every failure raises :class:`~mqttlb.brokers.eviction.EvictionError`.
"""

from __future__ import annotations

import json
import logging
import ssl
import threading
import uuid
from collections.abc import Mapping
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mqttlb import contract
from mqttlb.brokers.eviction import ClientLoad, EvictCommand, EvictionAdapter, EvictionError, EvictResult

log = logging.getLogger(__name__)

CONTROL_TOPIC = "$CONTROL/mqttlb/v1"
RESPONSE_TOPIC = f"{CONTROL_TOPIC}/response"
DEFAULT_TIMEOUT_SECONDS = 5.0
KEEPALIVE_SECONDS = 30


class _Wire(BaseModel):
    model_config = ConfigDict(populate_by_name=True, frozen=True, extra="ignore")


class PluginCounters(_Wire):
    """The plugin's own counters since the broker started (commands, error answers, unauthorised
    commands, clients evicted / refused / unknown) and the clients of the running batch still to go."""

    commands_total: int = Field(alias="commandsTotal")
    errors_total: int = Field(alias="errorsTotal")
    unauthorised_total: int = Field(alias="unauthorisedTotal")
    evicted_total: int = Field(alias="evictedTotal")
    refused_total: int = Field(alias="refusedTotal")
    unknown_total: int = Field(alias="unknownTotal")
    evictions_pending: int = Field(alias="evictionsPending")


class PluginLimits(_Wire):
    """The plugin's bounds: clients/s, clients per command; and its load window (s)."""

    max_per_second: float = Field(alias="maxPerSecond")
    max_clients: int = Field(alias="maxClients")
    load_window_seconds: float = Field(alias="loadWindowSeconds")


class _WireClient(_Wire):
    client_id: str = Field(alias="clientId")
    messages_in_per_s: float = Field(alias="messagesInPerSecond")
    bytes_in_per_s: float = Field(alias="bytesInPerSecond")
    persistent: bool
    protocol: int
    connected_seconds: float = Field(alias="connectedSeconds")


class _Answer(_Wire):
    command: str = ""
    correlation_data: str | None = Field(default=None, alias="correlationData")
    error: str | None = None
    clients: list[_WireClient] | None = None
    counters: PluginCounters | None = None
    limits: PluginLimits | None = None
    evicted: list[str] = []
    unknown: list[str] = []
    refused: list[str] = []
    message: str = ""


class _Answers(_Wire):
    responses: list[_Answer]


@dataclass(frozen=True)
class ClientListing:
    """A ``listClients`` answer: the clients the plugin tracks, its counters and its bounds."""

    clients: tuple[ClientLoad, ...]
    counters: PluginCounters
    limits: PluginLimits


class MosquittoEvictionAdapter(EvictionAdapter):
    """The eviction side of one Mosquitto node at ``host:port`` (connect directly, not through Envoy).

    ``client_id`` / ``username`` / ``password``: the control identity the plugin is configured with.
    ``tls``: a client SSLContext (:meth:`mqttlb.secure.MqttTls.context`): MQTT over TLS; None: plain TCP.
    ``timeout``: seconds to connect and to wait for an answer (plus the batch's duration for evict).
    Thread-safe; close() (or the ``with`` block) ends the connection.
    """

    shared_sessions = False

    def __init__(
        self,
        host: str,
        port: int,
        *,
        client_id: str = contract.EVICTION_CONTROL_CLIENT_ID,
        username: str | None = None,
        password: str | None = None,
        tls: ssl.SSLContext | None = None,
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
    ) -> None:
        self.address = f"{host}:{port}"
        self._host, self._port, self._timeout = host, port, timeout
        self._client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=True)
        if username is not None:
            self._client.username_pw_set(username, password)
        if tls is not None:
            self._client.tls_set_context(tls)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_message = self._on_message
        self._lock = threading.Lock()  # guards _pending (taken on paho's network thread too)
        self._state_lock = threading.Lock()  # guards _started (connect / close)
        self._connected = threading.Event()
        self._started = False
        self._refused: str | None = None
        self._pending: dict[str, Future[_Answer]] = {}

    # --- connection ------------------------------------------------------------------------
    def __enter__(self) -> MosquittoEvictionAdapter:
        self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def connect(self) -> None:
        """Open the connection (once) and wait for CONNACK.  Raises EvictionError."""
        with self._state_lock:
            if not self._started:
                self._client.connect_timeout = self._timeout
                try:
                    self._client.connect(self._host, self._port, keepalive=KEEPALIVE_SECONDS)
                except OSError as exc:
                    raise EvictionError(f"cannot connect to Mosquitto at {self.address}: {exc}") from exc
                self._client.loop_start()
                self._started = True
        if not self._connected.wait(self._timeout):
            reason = self._refused or f"no CONNACK within {self._timeout:g} s"
            raise EvictionError(f"Mosquitto at {self.address}: {reason}")

    def close(self) -> None:
        """Disconnect and stop the network thread; pending calls fail with EvictionError."""
        with self._state_lock:
            if self._started:
                self._client.disconnect()
                self._client.loop_stop()
                self._started = False
        self._fail_pending("adapter closed")

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if reason.is_failure:
            self._refused = f"connect refused: {reason}"
            return
        self._refused = None
        self._connected.set()

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        self._connected.clear()
        self._fail_pending(f"connection to {self.address} lost: {reason}")

    def _fail_pending(self, why: str) -> None:
        with self._lock:
            pending, self._pending = self._pending, {}
        for future in pending.values():
            future.set_exception(EvictionError(why))

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        if message.topic != RESPONSE_TOPIC:
            return
        try:
            answers = _Answers.model_validate_json(message.payload).responses
        except ValidationError as exc:
            log.warning("Mosquitto at %s: unreadable answer from the plugin: %s", self.address, exc)
            return
        for answer in answers:
            with self._lock:
                future = self._pending.pop(answer.correlation_data or "", None)
            if future is not None:
                future.set_result(answer)
            elif answer.correlation_data is None and answer.error:
                # An answer to no command in particular (not authorised, unreadable message): every wait fails.
                self._fail_pending(f"Mosquitto at {self.address}: {answer.error}")

    # --- commands --------------------------------------------------------------------------
    def _request(self, command: Mapping[str, Any], timeout: float) -> _Answer:
        self.connect()
        correlation = uuid.uuid4().hex
        future: Future[_Answer] = Future()
        with self._lock:
            self._pending[correlation] = future
        payload = json.dumps({"commands": [{**command, "correlationData": correlation}]})
        info = self._client.publish(CONTROL_TOPIC, payload, qos=1)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            with self._lock:
                self._pending.pop(correlation, None)
            raise EvictionError(f"Mosquitto at {self.address}: publish failed ({mqtt.error_string(info.rc)})")
        try:
            return future.result(timeout)
        except FutureTimeout:
            with self._lock:
                self._pending.pop(correlation, None)
            raise EvictionError(
                f"Mosquitto at {self.address}: no answer to {command['command']} within {timeout:g} s "
                "(is the mqttlb plugin loaded?)"
            ) from None

    def list_clients(self) -> ClientListing:
        """The ``listClients`` answer.  Raises EvictionError."""
        answer = self._request({"command": "listClients"}, self._timeout)
        if answer.error or answer.clients is None or answer.counters is None or answer.limits is None:
            raise EvictionError(f"Mosquitto at {self.address}: listClients: {answer.error or 'incomplete answer'}")
        clients = tuple(ClientLoad(**c.model_dump()) for c in answer.clients)
        return ClientListing(clients=clients, counters=answer.counters, limits=answer.limits)

    def clients(self) -> list[ClientLoad]:
        """The clients the plugin tracks (those that published on their current connection) with their
        load.  Raises EvictionError."""
        return list(self.list_clients().clients)

    def _evict(self, command: EvictCommand) -> EvictResult:
        """``evict``; returns when the plugin reports the batch done.

        Unknown or refused ids come back in the result with nothing done (the plugin's answer text as
        ``reason``); an empty ``client_ids`` returns an empty result without asking.  Raises EvictionError
        when the command is refused whole (above a bound, busy, malformed, not authorised) or unanswered.
        """
        if not command.client_ids:
            return EvictResult.nothing_to_evict()
        answer = self._request({"command": "evict", **command.wire()}, self._timeout + command.batch_seconds())
        if answer.error and not (answer.unknown or answer.refused):
            raise EvictionError(f"Mosquitto at {self.address}: evict refused: {answer.error}")
        reason = answer.error or answer.message
        return EvictResult(tuple(answer.evicted), tuple(answer.unknown), tuple(answer.refused), reason)
