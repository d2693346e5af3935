"""The one interface every broker's eviction side implements (issue 14): list a node's clients with
their recent load, disconnect a chosen set at a bounded rate, say whether sessions survive a move.

Implementations: :class:`mqttlb.brokers.mosquitto.MosquittoEvictionAdapter` (the C plugin in
``brokers/mosquitto-plugin``), the HiveMQ extension and EMQX's REST API.  Bounds are enforced on the
broker side as well: a command above a bound (rate, clients per command) is refused whole with an
error answer and changes nothing.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

# MQTT 5 DISCONNECT reason codes a server may send (OASIS MQTT 5.0, 3.14.2.1).
REASON_ADMINISTRATIVE_ACTION = 0x98
REASON_USE_ANOTHER_SERVER = 0x9C  # "reconnect elsewhere"; with a Server Reference property
REASON_SERVER_MOVED = 0x9D  # the Server Reference is permanent
EVICTION_REASON_CODES = (REASON_ADMINISTRATIVE_ACTION, REASON_USE_ANOTHER_SERVER, REASON_SERVER_MOVED)


class EvictionError(Exception):
    """The broker could not be asked or refused the whole command (unreachable, timeout, not authorised,
    malformed, above a bound, busy); the message says which.  Nothing was changed by a refused command."""


@dataclass(frozen=True)
class ClientLoad:
    """One connected client of a node and its recent inbound load.

    ``messages_in_per_s`` / ``bytes_in_per_s``: inbound PUBLISH rate (messages/s, payload bytes/s) over the
    broker's window (Mosquitto: an exponentially weighted rate).  ``persistent``: its session outlives a
    disconnect on THIS broker (MQTT 3: clean session 0; MQTT 5: session expiry > 0).  ``protocol``: 3
    (MQTT 3.1), 4 (3.1.1) or 5.  ``connected_seconds``: how long the broker has known the connection.
    """

    client_id: str
    messages_in_per_s: float
    bytes_in_per_s: float
    persistent: bool
    protocol: int
    connected_seconds: float


@dataclass(frozen=True)
class EvictResult:
    """What an evict command did: ``evicted`` clients were disconnected; ``unknown`` ones were not connected
    on this node; ``refused`` ones were not allowed (persistent session without opt-in, the control client).
    ``reason`` is the broker's answer text.  When ``unknown`` or ``refused`` is not empty the broker
    disconnected nobody (a command is carried out whole or not at all), except that clients which left by
    themselves while a batch ran are reported ``unknown`` beside the ``evicted`` ones."""

    evicted: tuple[str, ...]
    unknown: tuple[str, ...]
    refused: tuple[str, ...]
    reason: str

    @classmethod
    def nothing_to_evict(cls) -> EvictResult:
        """The answer to a command with no clients: nothing asked, nothing done."""
        return cls((), (), (), "nothing to evict")


@dataclass(frozen=True)
class EvictCommand:
    """One evict command as :meth:`EvictionAdapter.evict` was given it (not yet checked against any bound).

    ``client_ids``: the clients to disconnect, as given; ``max_per_second``: clients/s at most;
    ``reason_code``: the MQTT 5 DISCONNECT reason (one of :data:`EVICTION_REASON_CODES` when valid);
    ``server_reference``: the Server Reference property to send with it, None for none;
    ``allow_persistent``: whether clients with a persistent session may be moved.
    """

    client_ids: Sequence[str]
    max_per_second: float
    reason_code: int
    server_reference: str | None
    allow_persistent: bool

    def wire(self) -> dict[str, Any]:
        """The command as the mqttlb plugin and extension take it (JSON, camelCase keys):
        ``clients``, ``maxPerSecond``, ``reasonCode``, ``allowPersistent`` and ``serverReference`` when set."""
        body: dict[str, Any] = {
            "clients": list(self.client_ids),
            "maxPerSecond": float(self.max_per_second),
            "reasonCode": self.reason_code,
            "allowPersistent": self.allow_persistent,
        }
        if self.server_reference is not None:
            body["serverReference"] = self.server_reference
        return body

    def batch_seconds(self) -> float:
        """How long the paced batch takes at ``max_per_second`` (s): ``(n - 1) / max_per_second``, 0 for a
        rate that is not > 0 (the broker refuses that command)."""
        return (len(self.client_ids) - 1) / self.max_per_second if self.max_per_second > 0 else 0.0


class EvictionAdapter(ABC):
    """A broker node's eviction side; a broker's adapter implements :meth:`clients` and :meth:`_evict`."""

    shared_sessions: bool  # True when a session survives a move to another node (HiveMQ cluster)

    @abstractmethod
    def clients(self) -> list[ClientLoad]:
        """The node's clients with their load.  Raises EvictionError."""

    def evict(
        self,
        client_ids: Sequence[str],
        *,
        max_per_second: float,
        reason_code: int = REASON_USE_ANOTHER_SERVER,
        server_reference: str | None = None,
        allow_persistent: bool = False,
    ) -> EvictResult:
        """Disconnect ``client_ids`` at no more than ``max_per_second`` clients/s, MQTT 5 clients with
        ``reason_code`` (and ``server_reference``); persistent sessions only with ``allow_persistent``.
        Returns when the batch is done.  Raises EvictionError when the command is refused whole.
        What each broker can send and how it checks the command: its adapter's :meth:`_evict`."""
        return self._evict(EvictCommand(client_ids, max_per_second, reason_code, server_reference, allow_persistent))

    @abstractmethod
    def _evict(self, command: EvictCommand) -> EvictResult:
        """Carry out ``command`` on this broker (see :meth:`evict`)."""
