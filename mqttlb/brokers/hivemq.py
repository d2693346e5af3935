"""HiveMQ's eviction side: the mqttlb HiveMQ extension's HTTP API (``brokers/hivemq``) over ``requests``.

Three calls, all with ``Authorization: Bearer <token>``, straight to the node's extension (never through
Envoy):

- :meth:`HivemqEvictionAdapter.clients` / :meth:`~HivemqEvictionAdapter.list_clients`:
  ``GET <base_url>/mqttlb/v1/clients`` -> ``{"sharedSessions": bool, "limits": {...}, "clients": [...]}``,
  within ``timeout`` s;
- :meth:`~HivemqEvictionAdapter.evict`: ``POST <base_url>/mqttlb/v1/evict``; the extension answers when the
  batch is done, so the wait is ``timeout + (n - 1) / max_per_second`` s;
- :meth:`~HivemqEvictionAdapter.set_available`: ``POST <base_url>/mqttlb/v1/availability`` ``{"draining": bool}``
  switches what the extension's load-balancer health check (``GET /mqttlb/v1/availability``: 200 accepting,
  503 draining) answers; the webhook calls it when it drains or undrains the node (``mqttlb.webhook.availability``).

``shared_sessions``: whether a session survives a move to another node.  It is False until the first
``clients()`` answer and then whatever the extension said (its ``sharedSessions``).  HiveMQ Community
Edition does not cluster, so CE nodes are independent brokers and the extension says False: a persistent
session stays on the node where it was created.  A HiveMQ Enterprise cluster shares sessions.

Every answer is validated (pydantic) before use; every failure -- unreachable, timeout, a refusal
(401 token, 400 malformed, 409 busy, 413, 422 over a bound), an answer that is not the extension's --
raises :class:`~mqttlb.brokers.eviction.EvictionError` with a one-line message naming the node.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeVar

import requests
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mqttlb.brokers.eviction import ClientLoad, EvictCommand, EvictionAdapter, EvictionError, EvictResult
from mqttlb.http_call import one_line, send

API_PREFIX = "/mqttlb/v1/"
DEFAULT_TIMEOUT_SECONDS = 5.0

_Model = TypeVar("_Model", bound=BaseModel)


class _Wire(BaseModel):
    model_config = ConfigDict(populate_by_name=True, frozen=True, extra="ignore")


class ExtensionLimits(_Wire):
    """The extension's bounds: clients/s and clients per command, seconds per command (clients / rate),
    and the time constant of its per-client rates (s)."""

    max_per_second: float = Field(alias="maxPerSecond", gt=0)
    max_clients: int = Field(alias="maxClients", gt=0)
    max_seconds: float = Field(alias="maxSeconds", gt=0)
    load_window_seconds: float = Field(alias="loadWindowSeconds", gt=0)


class _WireClient(_Wire):
    client_id: str = Field(alias="clientId")
    messages_in_per_s: float = Field(alias="messagesInPerSecond", ge=0)
    bytes_in_per_s: float = Field(alias="bytesInPerSecond", ge=0)
    persistent: bool
    protocol: int
    connected_seconds: float = Field(alias="connectedSeconds", ge=0)


class _ClientsAnswer(_Wire):
    shared_sessions: bool = Field(alias="sharedSessions")
    limits: ExtensionLimits
    clients: list[_WireClient]


class _EvictAnswer(_Wire):
    evicted: list[str]
    unknown: list[str]
    refused: list[str]
    reason: str = ""


class _AvailabilityAnswer(_Wire):
    draining: bool
    changed: bool


class _ErrorAnswer(_Wire):
    error: str


@dataclass(frozen=True)
class HivemqClientListing:
    """A ``GET /mqttlb/v1/clients`` answer: whether sessions are shared, the bounds, the clients."""

    shared_sessions: bool
    limits: ExtensionLimits
    clients: tuple[ClientLoad, ...]


class HivemqEvictionAdapter(EvictionAdapter):
    """The eviction side of one HiveMQ node whose mqttlb extension serves its API at ``base_url``
    (``http://host:port``, the launcher's ``--http-port``).

    ``token``: the API's bearer token (the launcher's ``--token-file``).  ``timeout``: seconds to connect
    and to wait for an answer (plus the batch's duration for evict).  Keeps one keep-alive HTTP session;
    close() (or the ``with`` block) ends it.  Calls may come from several threads (the extension runs one
    eviction command at a time and refuses a second with 409, which raises EvictionError).
    """

    def __init__(self, base_url: str, *, token: str, timeout: float = DEFAULT_TIMEOUT_SECONDS) -> None:
        self.base_url = base_url.rstrip("/")
        self.address = self.base_url
        self.shared_sessions = False  # until the extension says otherwise (see the module docstring)
        self._timeout = timeout
        self._session = requests.Session()
        self._session.headers["Authorization"] = f"Bearer {token}"

    def __enter__(self) -> HivemqEvictionAdapter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """End the HTTP session (its pooled connections)."""
        self._session.close()

    # --- HTTP --------------------------------------------------------------------------------
    def _call(self, method: str, path: str, answer: type[_Model], timeout: float, body: Any = None) -> _Model:
        url = self.base_url + API_PREFIX + path
        what = f"HiveMQ at {self.base_url}: {method} {API_PREFIX}{path}"
        response = send(
            self._session, method, url, what=what, error=EvictionError, timeout=(self._timeout, timeout),
            unreachable="cannot reach the mqttlb extension: ", json=body,
        )
        if response.status_code != 200:
            raise EvictionError(f"{what}: refused with {response.status_code}: {_error_text(response)}")
        try:
            return answer.model_validate_json(response.content)
        except ValidationError as exc:
            problem = exc.errors()[0]
            where = ".".join(str(part) for part in problem["loc"]) or "answer"
            raise EvictionError(
                f"{what}: not an mqttlb extension answer ({where}: {problem['msg']}; {exc.error_count()} problem(s))"
            ) from None

    # --- the interface -----------------------------------------------------------------------
    def list_clients(self) -> HivemqClientListing:
        """The whole ``clients`` answer; updates :attr:`shared_sessions`.  Raises EvictionError."""
        answer = self._call("GET", "clients", _ClientsAnswer, self._timeout)
        self.shared_sessions = answer.shared_sessions
        clients = tuple(ClientLoad(**row.model_dump()) for row in answer.clients)
        return HivemqClientListing(shared_sessions=answer.shared_sessions, limits=answer.limits, clients=clients)

    def clients(self) -> list[ClientLoad]:
        """Every client connected to the node (authenticated by HiveMQ), with its inbound load: messages/s
        and payload bytes/s as the extension's exponentially weighted rates.  Raises EvictionError."""
        return list(self.list_clients().clients)

    def _evict(self, command: EvictCommand) -> EvictResult:
        """``POST evict``; returns when the extension reports the batch done.  MQTT 5 clients get the
        ``reason_code`` (0x98, 0x9C or 0x9D) and, for 0x9C/0x9D, the Server Reference (``server_reference``,
        else the node's ``--server-reference``, else none).

        Unknown or refused ids come back in the result with nothing done; an empty ``client_ids`` returns
        an empty result without asking.  Raises EvictionError when the command is refused whole (over a
        bound, busy, malformed, token not accepted) or unanswered.
        """
        if not command.client_ids:
            return EvictResult.nothing_to_evict()
        answer = self._call("POST", "evict", _EvictAnswer, self._timeout + command.batch_seconds(), command.wire())
        return EvictResult(tuple(answer.evicted), tuple(answer.unknown), tuple(answer.refused), answer.reason)

    def set_available(self, available: bool) -> bool:
        """Switch the node's availability endpoint: ``available`` True -> accepting (its health check answers
        200), False -> draining (503: a load balancer checking it stops sending new clients; connections that
        still arrive are accepted).  Returns whether the state changed (False: it was so already).  Raises
        EvictionError when the extension cannot be reached, refuses, or answers another state."""
        answer = self._call("POST", "availability", _AvailabilityAnswer, self._timeout, {"draining": not available})
        if answer.draining == available:
            raise EvictionError(
                f"HiveMQ at {self.base_url}: POST {API_PREFIX}availability: asked draining={not available}, "
                f"the extension answered draining={answer.draining}"
            )
        return answer.changed


def _error_text(response: requests.Response) -> str:
    """The extension's ``{"error": ...}`` text, else the start of whatever the body is (one line each)."""
    try:
        return one_line(_ErrorAnswer.model_validate_json(response.content).error)
    except ValidationError:
        return one_line(response.text) or "(empty body)"
