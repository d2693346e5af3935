"""Mosquitto ``$SYS`` state: the last value of each topic, and connects/disconnects counted
from the broker's notice log (``log_dest topic`` publishes it on ``$SYS/broker/log/N``).

Pure and thread-safe: the MQTT network thread calls ``on_*``; scrapes call ``read``.
Log texts (``<ts>: `` prefix from the default log_timestamp), from Mosquitto's sources
(src/handle_connect.c, src/loop.c) and checked on mosquitto 2.0.11::

    New client connected from 127.0.0.1:42156 as pub1 (p2, c1, k60).          2.x
    New client connected from 127.0.0.1:42156 as pub1 (p2, c1, k60, u'bob').  2.x with a username
    New bridge connected from 10.0.0.7:51200 as br-edge (p2, c0, k60).        2.x, a bridge connecting in
    New client connected from 127.0.0.1 as pub1 (p2, c1, k60).                1.6 (no port)
    New client connected from 127.0.0.1 as pub1 (c1, k60, u'bob').           1.4 / 1.5 (no port, no p)
    New client connected from 127.0.0.1 as pub1 (c1, k60, ubob).             1.3
    Client pub1 disconnected.
    Client rawc closed its connection.
    Client kac has exceeded timeout, disconnecting.
    Client pub1 disconnected due to protocol error.
    Client pub1 been disconnected by administrative action.
    Bad socket read/write on client pub1: <reason>
    Socket error on client pub1, disconnecting.                                1.x

A bridge's session ends with the same ``Client X ...`` lines as a client's, so bridge connects
must be counted too, or the two rates drift apart.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass

from mqttlb import contract

# $SYS topic -> BrokerSample field.  "$SYS/broker/store/messages/count" is not mapped to queued:
# it also counts retained messages, so it is not a queue depth.
SYS_TOPICS: dict[str, str] = {
    "$SYS/broker/clients/connected": "clients_connected",
    "$SYS/broker/messages/received": "messages_received",
    "$SYS/broker/messages/sent": "messages_sent",
    "$SYS/broker/publish/messages/received": "publish_received",
    "$SYS/broker/publish/messages/sent": "publish_sent",
    "$SYS/broker/publish/messages/dropped": "publish_dropped",
    "$SYS/broker/bytes/received": "bytes_received",
    "$SYS/broker/bytes/sent": "bytes_sent",
    "$SYS/broker/subscriptions/count": "subscriptions",
    "$SYS/broker/retained messages/count": "retained",
}
# Values that include the exporter's own connection / its `$SYS/#` subscription.
SELF_INCLUDED = ("clients_connected", "subscriptions")
LOG_TOPIC_PREFIX = "$SYS/broker/log/"

_TIMESTAMP = re.compile(r"^\d+:\s*")
# "(p2, c1, k60" (1.6+) or "(c1, k60" (1.3-1.5), then an optional ", u'<username>'" (", u<username>"
# before 1.4), then ")."; a client id may contain spaces and parentheses, so the match is anchored on
# this tail.
_CONNECT = re.compile(
    r"^New (?:client|bridge) connected from \S+ as (?P<client>.+?) "
    r"\((?:p\d+, )?c\d+, k\d+(?:, u.*)?\)\.$"
)
_DISCONNECT = re.compile(
    r"^(?:Client (?P<client>.+?) (?:disconnected|closed its connection|has exceeded timeout"
    r"|been disconnected by administrative action|already connected, closing old connection)"
    r"|Socket error on client (?P<client2>.+?), disconnecting"
    r"|Bad socket read/write on client (?P<client3>.+?): )"
)


def classify_log_line(line: str) -> tuple[str, str] | None:
    """``("connect"|"disconnect", client_id)`` for a client session event, else None."""
    text = _TIMESTAMP.sub("", line.strip(), count=1)
    match = _CONNECT.match(text)
    if match:
        return "connect", match.group("client")
    match = _DISCONNECT.match(text)
    if match:
        client = match.group("client") or match.group("client2") or match.group("client3")
        if client == "<unknown>":  # never completed CONNECT, so it was never counted as connected
            return None
        return "disconnect", client
    return None


def parse_number(payload: bytes) -> float | None:
    """$SYS payloads are decimal text; anything else is ignored rather than trusted."""
    try:
        value = float(payload.decode("ascii").strip())
    except (UnicodeDecodeError, ValueError):
        return None
    if value != value or value in (float("inf"), float("-inf")):
        return None
    return value


@dataclass(frozen=True)
class SysReading:
    connected: bool
    values: dict[str, float]
    connects: int
    disconnects: int
    last_update: float | None  # monotonic time of the newest $SYS message of this session


class SysTree:
    def __init__(self, own_client_id: str, ignored: tuple[str, ...] = (contract.HEALTH_CHECK_CLIENT_ID,)) -> None:
        # Sessions not counted as connects/disconnects: the exporter's own, and Envoy's health probe.
        self._ignored = frozenset((own_client_id, *ignored))
        self._lock = threading.Lock()
        self._connected = False
        self._values: dict[str, float] = {}
        self._live: set[str] = set()  # fields last set by a live (non-retained) publication
        self._connects = 0
        self._disconnects = 0
        self._last_update: float | None = None

    def on_connected(self) -> None:
        # A (re)connect may be to a restarted broker: its old values mean nothing now.
        with self._lock:
            self._connected = True
            self._values.clear()
            self._live.clear()
            self._last_update = None

    def on_disconnected(self) -> None:
        with self._lock:
            self._connected = False

    def on_message(self, topic: str, payload: bytes, retained: bool, now: float) -> None:
        if topic.startswith(LOG_TOPIC_PREFIX):
            event = classify_log_line(payload.decode("utf-8", errors="replace"))
            if event is None or event[1] in self._ignored:
                return
            with self._lock:
                if event[0] == "connect":
                    self._connects += 1
                else:
                    self._disconnects += 1
            return
        field_name = SYS_TOPICS.get(topic)
        value = parse_number(payload) if field_name else None
        with self._lock:
            if not retained:
                self._last_update = now
            elif self._last_update is None:
                self._last_update = now  # the broker answered our subscription: data is current
            if field_name is None or value is None:
                return
            self._values[field_name] = value
            if retained:
                self._live.discard(field_name)
            else:
                self._live.add(field_name)

    def read(self) -> SysReading:
        with self._lock:
            # Mosquitto publishes a $SYS topic only once its value differs from 0 (e.g. publish
            # counters on an idle broker), so a topic not seen in a live session means 0.
            values = dict.fromkeys(SYS_TOPICS.values(), 0.0) if self._last_update is not None else {}
            values.update(self._values)
            # Retained values delivered at subscribe time were published before we connected
            # and subscribed; live ones count our own client and subscription.
            for name in SELF_INCLUDED:
                if name in values and name in self._live:
                    values[name] = max(0.0, values[name] - 1)
            return SysReading(self._connected, values, self._connects, self._disconnects, self._last_update)
