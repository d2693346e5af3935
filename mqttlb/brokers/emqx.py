"""EMQX 5's eviction side over its REST API (issue 14): list one node's clients with their load, kick a chosen set
at a bounded rate.  No plugin: EMQX's management API has what is needed.

The facts this module relies on, from EMQX's source (github.com/emqx/emqx, read at commit 50e04386) and docs:

- Authentication: an API key and secret key as the user name and password of HTTP basic authentication; a bad pair
  is HTTP 401 ``BAD_API_KEY_OR_SECRET``, a key whose role may not do the call HTTP 403 ``UNAUTHORIZED_ROLE``
  (https://docs.emqx.com/en/emqx/latest/admin/api.html; apps/emqx_dashboard/src/emqx_dashboard.erl
  ``api_key_authorize``).
- ``GET /api/v5/clients?node=N&conn_state=connected&page=P&limit=L&fields=...``: one page of the node's clients,
  ``{"data": [client...], "meta": {"page", "limit", "count", "hasnext"}}``; ``limit`` is 1..10000
  (apps/emqx_management/src/emqx_mgmt_api_clients.erl ``schema("/clients")``, ``fields(client)``,
  ``fields(requested_client_fields)`` (``fields`` is a comma-separated list); apps/emqx_dashboard/src/
  emqx_dashboard_swagger.erl ``fields(meta)``, ``MAX_ROW_LIMIT``).  Per client: ``clientid``, ``node``,
  ``connected``, ``proto_ver`` (3, 4, 5), ``expiry_interval`` (s; ``convert_expiry_interval_unit``),
  ``connected_at`` (RFC 3339 with milliseconds and offset; ``format_channel_info``), and the CUMULATIVE counters
  ``recv_msg`` (PUBLISH packets received) and ``recv_oct`` (bytes received, all packets, headers included).
- ``GET /api/v5/clients/{clientid}``: one client (the same fields), 404 ``CLIENTID_NOT_FOUND``.
- ``DELETE /api/v5/clients/{clientid}``: 204 "Kick out client successfully", 404 ``CLIENTID_NOT_FOUND``
  (``schema("/clients/:clientid")``, ``kickout/1``).  The kick is cluster-wide: it finds the client on whichever
  node holds it (apps/emqx_management/src/emqx_mgmt.erl ``kickout_client/1``).  Path segments are
  percent-decoded by the router (apps/emqx_management/src/emqx_mgmt_api_key_scopes.erl).

**What a kick does** (apps/emqx/src/emqx_channel.erl ``process_kick/1``): it DESTROYS the session
(``emqx_session:destroy``) and ends the channel; an MQTT 5 client gets DISCONNECT with reason code 0x98
(Administrative action), other clients a closed socket.  The call takes no reason code and no Server Reference, so
the "reconnect elsewhere" code 0x9C / 0x9D cannot be sent; every result's ``reason`` says so.  EMQX Enterprise's
rebalance and evacuation (apps/emqx_eviction_agent) do send 0x9C and keep sessions, but work on whole nodes by
connection count, not on a chosen set of clients.

**shared_sessions is False**, although an EMQX cluster shares sessions between its nodes (a client that reconnects
to another node takes its session over; https://docs.emqx.com/en/emqx/latest/deploy/cluster/introduction.html):
the kick discards the session before the client reconnects, so after THIS adapter's move nothing of it survives.
Persistent clients (``expiry_interval > 0``: MQTT 5 Session Expiry > 0, or MQTT 3 clean session 0, for which EMQX
uses ``mqtt.session_expiry_interval``; ``emqx_channel.erl`` ``expiry_interval/2``) are therefore only moved with
``allow_persistent``.

**Rates.**  EMQX lists cumulative counters, so :meth:`EmqxEvictionAdapter.clients` keeps the previous listing
(a connection is its client id plus ``connected_at``) and reports ``(counter now - counter then) / seconds between
the listings``.  A connection first seen (or a window shorter than ``MIN_RATE_WINDOW_SECONDS``) gets its lifetime
rate, ``counter / max(connected seconds, MIN_RATE_WINDOW_SECONDS)``: an honest figure for long-lived clients, but
an average that hides a client that has just become busy until the next listing.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeVar
from urllib.parse import quote, urlsplit

import requests
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

from mqttlb.brokers.eviction import (
    EVICTION_REASON_CODES,
    ClientLoad,
    EvictCommand,
    EvictionAdapter,
    EvictionError,
    EvictResult,
)
from mqttlb.http_call import one_line, send

API_PREFIX = "/api/v5"
_Model = TypeVar("_Model", bound=BaseModel)
DEFAULT_TIMEOUT_SECONDS = 5.0
DEFAULT_PAGE_LIMIT = 1000  # clients per listing page
MAX_PAGE_LIMIT = 10_000  # EMQX refuses a larger limit (emqx_dashboard_swagger MAX_ROW_LIMIT)
DEFAULT_MAX_PAGES = 100  # a listing of more pages is refused (100,000 clients at the default page size)
DEFAULT_MAX_CLIENTS_PER_COMMAND = 500
DEFAULT_MAX_RATE = 500.0  # clients/s; EMQX's own conn-evict-rate default for evacuation and rebalance
MIN_RATE_WINDOW_SECONDS = 1.0
CLIENT_NOT_FOUND = "CLIENTID_NOT_FOUND"
LIST_FIELDS = ("clientid", "node", "connected", "proto_ver", "expiry_interval", "connected_at", "recv_msg", "recv_oct")
KICK_NOTE = (
    "EMQX's kick (DELETE /api/v5/clients/{clientid}) takes no reason code: MQTT 5 clients get 0x98 "
    "(Administrative action) and no Server Reference, and the session is discarded"
)


class _Wire(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore", strict=True)


class _Client(_Wire):
    clientid: str = Field(min_length=1)
    node: str = Field(min_length=1)
    connected: bool
    proto_ver: Literal[3, 4, 5]
    expiry_interval: int = Field(ge=0)
    connected_at: AwareDatetime
    recv_msg: int = Field(ge=0)
    recv_oct: int = Field(ge=0)


class _Meta(_Wire):
    page: int = Field(ge=1)
    limit: int = Field(ge=1)
    hasnext: bool
    count: int | None = Field(default=None, ge=0)


class _Page(_Wire):
    data: list[_Client]
    meta: _Meta


class _ErrorBody(BaseModel):
    model_config = ConfigDict(extra="ignore")
    code: str
    message: str = ""


@dataclass(frozen=True)
class _Sample:
    """A connection's counters at one listing (``at``: the adapter's monotonic clock, s)."""

    messages: int
    octets: int
    at: float


class EmqxEvictionInterrupted(EvictionError):
    """A batch stopped part-way (EMQX stopped answering or refused a kick): ``evicted`` were already kicked,
    ``remaining`` were not tried.  The message says why, in one line."""

    def __init__(self, message: str, evicted: Sequence[str], remaining: Sequence[str]) -> None:
        super().__init__(message)
        self.evicted = tuple(evicted)
        self.remaining = tuple(remaining)


def _first_error(exc: ValidationError) -> str:
    errors = exc.errors()
    first = errors[0]
    where = ".".join(str(part) for part in first["loc"]) or "body"
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{where}: {first['msg']}{more}"


class EmqxEvictionAdapter(EvictionAdapter):
    """The eviction side of one EMQX 5 node, through the cluster's REST API at ``base_url``
    (``http://host:18083``; any node of the cluster answers for all).

    ``node``: the EMQX node name (``emqx@10.0.0.1``) whose clients this adapter lists and kicks.
    ``api_key`` / ``api_secret``: an EMQX API key (HTTP basic authentication).  ``timeout``: seconds per HTTP
    request.  ``session``: a ``requests.Session`` to use (the adapter makes and closes its own otherwise).
    Bounds: ``page_limit`` clients per listing page (1..10000) and at most ``max_pages`` pages;
    ``max_clients_per_command`` clients and ``max_rate`` clients/s per evict command.  ``clock`` (monotonic s),
    ``wall_clock`` (Unix s) and ``sleep`` are injectable for tests.  Thread-safe; :meth:`close` (or ``with``)
    closes the adapter's own session.  Every failure raises :class:`EvictionError` with a one-line message.
    """

    shared_sessions = False  # a kick discards the session (see the module docstring)

    def __init__(
        self,
        base_url: str,
        node: str,
        *,
        api_key: str,
        api_secret: str,
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
        session: requests.Session | None = None,
        page_limit: int = DEFAULT_PAGE_LIMIT,
        max_pages: int = DEFAULT_MAX_PAGES,
        max_clients_per_command: int = DEFAULT_MAX_CLIENTS_PER_COMMAND,
        max_rate: float = DEFAULT_MAX_RATE,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        url = urlsplit(base_url)
        checks = {
            "base_url must be http(s)://host[:port]": url.scheme in ("http", "https") and bool(url.netloc),
            "node must not be empty": bool(node),
            "timeout must be > 0": timeout > 0,
            f"page_limit must be 1..{MAX_PAGE_LIMIT}": 1 <= page_limit <= MAX_PAGE_LIMIT,
            "max_pages must be >= 1": max_pages >= 1,
            "max_clients_per_command must be >= 1": max_clients_per_command >= 1,
            "max_rate must be a finite number > 0": math.isfinite(max_rate) and max_rate > 0,
        }
        wrong = [what for what, ok in checks.items() if not ok]
        if wrong:
            raise ValueError("EmqxEvictionAdapter: " + "; ".join(wrong))
        self.base_url = base_url.rstrip("/")
        self.node = node
        self.max_clients_per_command = max_clients_per_command
        self.max_rate = max_rate
        self._auth = (api_key, api_secret)
        self._timeout, self._page_limit, self._max_pages = timeout, page_limit, max_pages
        self._own_session = session is None
        self._session = session if session is not None else requests.Session()
        self._clock, self._wall_clock, self._sleep = clock, wall_clock, sleep
        self._lock = threading.Lock()  # guards _previous
        self._previous: dict[tuple[str, float], _Sample] = {}

    def __enter__(self) -> EmqxEvictionAdapter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the HTTP session if the adapter made it."""
        if self._own_session:
            self._session.close()

    # --- HTTP ------------------------------------------------------------------------------
    def _where(self, method: str, path: str) -> str:
        return f"EMQX at {self.base_url}: {method} {API_PREFIX}{path}"

    def _call(self, method: str, path: str, params: Any = None) -> requests.Response:
        return send(
            self._session, method, f"{self.base_url}{API_PREFIX}{path}", what=self._where(method, path),
            error=EvictionError, timeout=self._timeout, params=params, auth=self._auth,
            headers={"Accept": "application/json"}, allow_redirects=False,
        )

    def _refusal(self, method: str, path: str, response: requests.Response) -> EvictionError:
        """The one-line error for an answer other than the expected one."""
        try:
            body = _ErrorBody.model_validate_json(response.content)
            said = f"{body.code}: {body.message}" if body.message else body.code
        except ValidationError:
            said = response.text or "empty body"
        hint = {401: " (check api_key / api_secret)", 403: " (the API key's role may not do this)"}
        return EvictionError(
            f"{self._where(method, path)}: HTTP {response.status_code} {one_line(said)}"
            f"{hint.get(response.status_code, '')}"
        )

    def _answer(self, response: requests.Response, path: str, model: type[_Model], what: str = "") -> _Model:
        """The body of a ``GET path`` answer as ``model``; EvictionError for another status than 200 (the
        :meth:`_refusal`) or a body that is not one (``what`` follows the path in the message)."""
        if response.status_code != 200:
            raise self._refusal("GET", path, response)
        try:
            return model.model_validate_json(response.content)
        except ValidationError as exc:
            raise EvictionError(f"{self._where('GET', path)}{what}: bad answer: {_first_error(exc)}") from None

    def _is_not_found(self, response: requests.Response) -> bool:
        """A 404 that says the client is not connected (not a wrong URL, which is a 404 too)."""
        if response.status_code != 404:
            return False
        try:
            return _ErrorBody.model_validate_json(response.content).code == CLIENT_NOT_FOUND
        except ValidationError:
            return False

    # --- listing ---------------------------------------------------------------------------
    def _page(self, page: int) -> _Page:
        path = "/clients"
        params = {
            "node": self.node,
            "conn_state": "connected",
            "page": page,
            "limit": self._page_limit,
            "fields": ",".join(LIST_FIELDS),
        }
        body = self._answer(self._call("GET", path, params), path, _Page, f" page {page}")
        if body.meta.page != page:
            raise EvictionError(f"{self._where('GET', path)}: asked for page {page}, got page {body.meta.page}")
        self._check_nodes(body.data, f"{self._where('GET', path)} page {page}")
        return body

    def _check_nodes(self, clients: Iterable[_Client], where: str) -> None:
        stray = [c for c in clients if c.node != self.node]
        if stray:
            raise EvictionError(
                f"{where}: client {stray[0].clientid!r} is on node {stray[0].node!r}, not {self.node!r}"
                f"{f' (and {len(stray) - 1} more)' if len(stray) > 1 else ''}"
            )

    def _connections(self) -> list[_Client]:
        """Every connected client of the node, all pages read (a client that appears on two pages because the
        table changed between them counts once, as last seen)."""
        found: dict[str, _Client] = {}
        for page in range(1, self._max_pages + 1):
            body = self._page(page)
            found.update((c.clientid, c) for c in body.data if c.connected)
            if not body.meta.hasnext:
                return list(found.values())
        raise EvictionError(
            f"{self._where('GET', '/clients')}: more than {self._max_pages} pages of {self._page_limit} clients "
            "(raise max_pages or page_limit)"
        )

    def clients(self) -> list[ClientLoad]:
        """The node's connected clients with their inbound rates (messages/s, bytes/s, see the module docstring
        for the window), whether their session persists, MQTT version and connected seconds.  The listing is
        kept as the next call's baseline only when every page was read and valid.  Raises EvictionError."""
        connections = self._connections()
        now, wall = self._clock(), self._wall_clock()
        with self._lock:
            previous = self._previous
            loads: list[ClientLoad] = []
            baseline: dict[tuple[str, float], _Sample] = {}
            for client in connections:
                key = (client.clientid, client.connected_at.timestamp())
                load, sample = self._load(client, previous.get(key), now, wall)
                loads.append(load)
                baseline[key] = sample
            self._previous = baseline
        return loads

    def _load(self, client: _Client, before: _Sample | None, now: float, wall: float) -> tuple[ClientLoad, _Sample]:
        """The client's load and the sample to keep: a baseline younger than the minimum window is kept."""
        connected_seconds = max(0.0, wall - client.connected_at.timestamp())
        young = before is not None and now - before.at < MIN_RATE_WINDOW_SECONDS
        if before is not None and not young and client.recv_msg >= before.messages and client.recv_oct >= before.octets:
            window = now - before.at
            messages, octets = client.recv_msg - before.messages, client.recv_oct - before.octets
        else:
            window = max(connected_seconds, MIN_RATE_WINDOW_SECONDS)
            messages, octets = client.recv_msg, client.recv_oct
        keep = before if before is not None and young else _Sample(client.recv_msg, client.recv_oct, now)
        load = ClientLoad(
            client_id=client.clientid,
            messages_in_per_s=messages / window,
            bytes_in_per_s=octets / window,
            persistent=client.expiry_interval > 0,
            protocol=client.proto_ver,
            connected_seconds=connected_seconds,
        )
        return load, keep

    # --- eviction --------------------------------------------------------------------------
    def _check_command(self, client_ids: Sequence[str], max_per_second: float, reason_code: int) -> tuple[str, ...]:
        """The command's ids, or EvictionError when it breaks a bound or is malformed (before any request)."""
        if isinstance(client_ids, str):
            raise EvictionError("evict: client_ids must be a sequence of client ids, not one string")
        ids = tuple(client_ids)
        rate_ok = isinstance(max_per_second, (int, float)) and math.isfinite(max_per_second)
        names_ok = all(isinstance(i, str) and i for i in ids)
        problems = {
            f"{len(ids)} clients is more than the bound of {self.max_clients_per_command} per command": (
                len(ids) > self.max_clients_per_command
            ),
            f"max_per_second {max_per_second!r} is not in (0, {self.max_rate:g}]": not (
                rate_ok and 0 < max_per_second <= self.max_rate
            ),
            f"reason code {reason_code!r} is not one of {', '.join(hex(c) for c in EVICTION_REASON_CODES)}": (
                reason_code not in EVICTION_REASON_CODES
            ),
            "client ids must be non-empty strings": not names_ok,
            "client ids repeat": names_ok and len(set(ids)) != len(ids),
        }
        wrong = [what for what, bad in problems.items() if bad]
        if wrong:
            raise EvictionError(f"EMQX node {self.node}: evict refused, nothing done: {'; '.join(wrong)}")
        return ids

    def _lookup(self, client_id: str) -> _Client | None:
        """The client as EMQX sees it now, or None when it is not connected on this node."""
        path = f"/clients/{quote(client_id, safe='')}"
        response = self._call("GET", path)
        if self._is_not_found(response):
            return None
        client = self._answer(response, path, _Client)
        if client.clientid != client_id:
            raise EvictionError(f"{self._where('GET', path)}: answered for client {client.clientid!r}")
        return client if client.node == self.node and client.connected else None

    def _preflight(self, ids: Sequence[str], allow_persistent: bool) -> tuple[list[str], list[str]]:
        """(unknown, refused): ids not connected on this node, and persistent ones without the opt-in."""
        unknown: list[str] = []
        refused: list[str] = []
        for client_id in ids:
            client = self._lookup(client_id)
            if client is None:
                unknown.append(client_id)
            elif client.expiry_interval > 0 and not allow_persistent:
                refused.append(client_id)
        return unknown, refused

    def _kick(self, client_id: str) -> bool:
        """Kick one client if it is still on this node; False when it is gone (or moved) by itself."""
        if self._lookup(client_id) is None:
            return False
        path = f"/clients/{quote(client_id, safe='')}"
        response = self._call("DELETE", path)
        if response.status_code == 204:
            return True
        if self._is_not_found(response):
            return False
        raise self._refusal("DELETE", path, response)

    def _paced(self, ids: Sequence[str], max_per_second: float) -> tuple[list[str], list[str]]:
        """Kick ``ids`` in order, the k-th no earlier than k / max_per_second s after the first: (evicted, gone)."""
        evicted: list[str] = []
        gone: list[str] = []
        start = self._clock()
        for index, client_id in enumerate(ids):
            wait = start + index / max_per_second - self._clock()
            if wait > 0:
                self._sleep(wait)
            try:
                kicked = self._kick(client_id)
            except EvictionError as exc:
                raise EmqxEvictionInterrupted(
                    f"{exc}; batch stopped after evicting {len(evicted)} of {len(ids)}", evicted, ids[index:]
                ) from None
            (evicted if kicked else gone).append(client_id)
        return evicted, gone

    def _evict(self, command: EvictCommand) -> EvictResult:
        """Kick ``client_ids`` off this node at no more than ``max_per_second`` clients/s; returns when done.

        Whole or nothing: the command is first checked against the bounds (EvictionError, no request made),
        then every client is looked up; if any is not connected on this node (``unknown``) or is persistent
        without ``allow_persistent`` (``refused``), nobody is kicked.  During the batch each client is looked up
        again just before its DELETE, so one that left (or moved to another node) by itself is reported
        ``unknown`` beside the ``evicted`` ones rather than kicked elsewhere.  ``reason_code`` is checked but
        cannot be sent, nor can ``server_reference``: EMQX's kick sends 0x98 to MQTT 5 clients (``reason``
        says so).  Raises EvictionError when the command is refused whole or EMQX fails before any kick,
        :class:`EmqxEvictionInterrupted` (an EvictionError naming the clients already kicked) when it fails
        part-way.
        """
        ids = self._check_command(command.client_ids, command.max_per_second, command.reason_code)
        if not ids:
            return EvictResult.nothing_to_evict()
        unknown, refused = self._preflight(ids, command.allow_persistent)
        if unknown or refused:
            why = []
            if unknown:
                why.append(f"{len(unknown)} not connected on {self.node}")
            if refused:
                why.append(f"{len(refused)} with a persistent session (allow_persistent not set)")
            return EvictResult((), tuple(unknown), tuple(refused), f"nothing evicted: {'; '.join(why)}")
        evicted, gone = self._paced(ids, command.max_per_second)
        asked = f"; asked for {command.reason_code:#04x}"
        if command.server_reference:
            asked += f" with server reference {command.server_reference}"
        left = f"; {len(gone)} left by themselves" if gone else ""
        return EvictResult(tuple(evicted), tuple(gone), (), f"{len(evicted)} evicted{left}. {KICK_NOTE}{asked}")
