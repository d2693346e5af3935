"""Mosquitto node: a live ``$SYS/#`` subscription (push) plus psutil for process CPU/memory.

Mosquitto only pushes ``$SYS``, so this adapter holds one MQTT connection per node (paho's
network thread reconnects with backoff).  A scrape answers from the cached values; the node is
reported down when the connection is lost or the newest ``$SYS`` message is older than
``stale_after`` seconds (a hung broker keeps the TCP connection but stops publishing).
The connection may carry a username and password and run over TLS (``tls``: a client SSLContext,
:meth:`mqttlb.secure.MqttTls.context`); a refused CONNECT is reported as the node's reason for being down.
"""

from __future__ import annotations

import logging
import os
import ssl
import time
import uuid
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt

from mqttlb.exporters.broker_config import parse_host_port
from mqttlb.exporters.mosquitto_sys import SysTree
from mqttlb.exporters.node_adapter import BrokerSample
from mqttlb.exporters.process_stats import ProcessLocator, ProcessNotFound
from mqttlb.exporters.scrape_errors import ScrapeErrorReason

log = logging.getLogger(__name__)

RECONNECT_MIN_SECONDS = 1
RECONNECT_MAX_SECONDS = 8
KEEPALIVE_SECONDS = 10


class MosquittoAdapter:
    kind = "mosquitto"
    blocking = False  # snapshot() reads memory and /proc only

    def __init__(
        self,
        name: str,
        address: str,
        pid_file: Path | None,
        stale_after: float,
        *,
        username: str | None = None,
        password: str | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.name = name
        self._username, self._password, self._tls = username, password, tls
        self.address = address
        self._host, self._port = parse_host_port(address)
        self._stale_after = stale_after
        self.client_id = f"mqttlb-exporter-{name}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._tree = SysTree(self.client_id)
        self._process = ProcessLocator(pid_file, self._port)
        self._client: mqtt.Client | None = None
        self._last_disconnect_reason: str = "not connected yet"
        self._refused = False  # the last CONNECT was refused (its reason is kept through the close after it)

    # --- paho callbacks (network thread) -------------------------------------------------
    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        self._refused = reason.is_failure
        if reason.is_failure:  # e.g. Not authorized: the broker's answer stays the reason (not the close after it)
            self._last_disconnect_reason = f"connect refused: {reason}"
            log.warning("node %s: MQTT connect to %s refused: %s", self.name, self.address, reason)
            return
        log.info("node %s: connected to %s, subscribing to $SYS/#", self.name, self.address)
        self._tree.on_connected()
        client.subscribe("$SYS/#", qos=0)

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        self._tree.on_disconnected()
        if self._refused:
            return
        self._last_disconnect_reason = f"connection lost: {reason}"
        log.warning("node %s: MQTT connection to %s lost (%s); reconnecting", self.name, self.address, reason)

    def _on_connect_fail(self, client: mqtt.Client, userdata: Any) -> None:
        self._last_disconnect_reason = f"cannot connect to {self.address}"
        log.debug("node %s: connect to %s failed; retrying with backoff", self.name, self.address)

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        self._tree.on_message(message.topic, bytes(message.payload), bool(message.retain), time.monotonic())

    # --- NodeAdapter -----------------------------------------------------------------------
    def start(self) -> None:
        client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=self.client_id, protocol=mqtt.MQTTv311
        )
        if self._username is not None:
            client.username_pw_set(self._username, self._password)
        if self._tls is not None:
            client.tls_set_context(self._tls)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.reconnect_delay_set(min_delay=RECONNECT_MIN_SECONDS, max_delay=RECONNECT_MAX_SECONDS)
        client.on_connect_fail = self._on_connect_fail
        # connect_async + loop_start: the network thread retries the first connect too, so a node
        # that is down at startup is picked up when it comes back.
        client.connect_async(self._host, self._port, keepalive=KEEPALIVE_SECONDS)
        client.loop_start()
        self._client = client

    def close(self) -> None:
        if self._client is not None:
            self._client.disconnect()
            self._client.loop_stop()
            self._client = None

    def snapshot(self, timeout: float) -> BrokerSample:
        reading = self._tree.read()
        now = time.monotonic()
        if not reading.connected:
            return BrokerSample.down(self._last_disconnect_reason, ScrapeErrorReason.UNREACHABLE)
        if reading.last_update is None:
            return BrokerSample.down("connected but no $SYS data received yet", ScrapeErrorReason.STALE)
        age = now - reading.last_update
        if age > self._stale_after:
            return BrokerSample.down(
                f"$SYS data is {age:.1f}s old (limit {self._stale_after:.1f}s)", ScrapeErrorReason.STALE
            )
        error = None
        cpu = rss = None
        try:
            proc = self._process.sample()
            cpu, rss = proc.cpu_seconds, proc.resident_memory_bytes
        except ProcessNotFound as exc:
            error = str(exc)
        return BrokerSample(
            up=True,
            error=error,
            reason=None if error is None else ScrapeErrorReason.PARTIAL,
            connects=float(reading.connects),
            disconnects=float(reading.disconnects),
            cpu_seconds=cpu,
            resident_memory_bytes=rss,
            sample_age_seconds=age,
            **reading.values,
        )
