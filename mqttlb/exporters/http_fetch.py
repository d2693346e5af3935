"""Bounded HTTP GET for scraping: one total deadline per fetch, a size cap, and abort on close.

requests' ``timeout`` bounds the connect and each socket read, not the whole answer: a target
that sends one byte every 0.5 s never trips it, and the thread reading it stays stuck for as
long as the target likes.  Here every fetch also has a total deadline: when it passes, a timer
shuts the socket in use down (``shutdown(SHUT_RDWR)``), which ends a read blocked on the status
line, the headers or the body at once, and the fetch raises ``FetchError`` with reason
``timeout``.  So the calling thread (an exporter's worker) is free again at the deadline, and
the next scrape starts on a fresh connection.  ``InflightFetches.abort()`` does the same to
every fetch of its owner at once (used when an exporter shuts down).

The socket is reached through a requests transport adapter whose urllib3 connections register
their socket with the calling thread's fetch when the request is sent (``getresponse``) and
unregister it when the connection goes back to the pool, so a deadline passing late never cuts
a kept-alive connection another fetch is using.  Other requests on the same session (e.g. the
webhook's POSTs to Envoy) are not affected.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from typing import Any

import requests
import urllib3
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.response import HTTPResponse

from mqttlb.exporters.scrape_errors import ScrapeErrorReason

DEFAULT_MAX_BYTES = 64 * 1024 * 1024
CHUNK_BYTES = 16384


class FetchError(Exception):
    """The target did not give a usable answer; the message says why in one line and ``reason``
    classifies it (timeout, unreachable or bad_answer)."""

    def __init__(self, message: str, reason: ScrapeErrorReason = ScrapeErrorReason.UNREACHABLE) -> None:
        super().__init__(message)
        self.reason = reason


_LOCK = threading.Lock()  # guards which socket each fetch holds (attach, end, release, detach)


class _Deadline:
    """One fetch's end: at the deadline (or on abort) the socket it holds is shut down."""

    def __init__(self) -> None:
        self._sock: socket.socket | None = None
        self.ended: str | None = None  # why it was cut short: "timeout" or "aborted"

    def attach(self, sock: Any) -> None:
        with _LOCK:
            self._sock = sock if isinstance(sock, socket.socket) else None
            if self.ended is not None:
                _shut(self._sock)

    def end(self, why: str) -> None:
        with _LOCK:
            if self.ended is None:
                self.ended = why
                _shut(self._sock)

    def release(self, sock: Any) -> bool:
        """Let go of ``sock`` (its connection goes back to the pool); True if it was shut down."""
        with _LOCK:
            if self._sock is sock:
                self._sock = None
            return self.ended is not None

    def detach(self) -> None:
        with _LOCK:
            self._sock = None


def _shut(sock: socket.socket | None) -> None:
    if sock is not None:
        # The base-class method on purpose: ssl.SSLSocket.shutdown would also drop the TLS object
        # under the thread reading it.  The reader sees end-of-stream and urllib3 raises.
        with contextlib.suppress(OSError):
            socket.socket.shutdown(sock, socket.SHUT_RDWR)


class InflightFetches:
    """The fetches started with ``fetch_text(..., inflight=this)``.  ``abort()`` ends every one of
    them at once and makes later ones fail at once; an owner (adapter, collector) calls it when it
    closes, so no worker thread holds the process up at exit."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._deadlines: set[_Deadline] = set()
        self.aborted = False

    def _add(self, deadline: _Deadline) -> bool:
        with self._lock:
            if not self.aborted:
                self._deadlines.add(deadline)
            return not self.aborted

    def _discard(self, deadline: _Deadline) -> None:
        with self._lock:
            self._deadlines.discard(deadline)

    def abort(self) -> None:
        with self._lock:
            self.aborted = True
            pending = list(self._deadlines)
        for deadline in pending:
            deadline.end("aborted")


_current = threading.local()  # .deadline: the _Deadline of the fetch running in this thread


def _attach_current(conn: Any) -> None:
    """Connected and the request sent (from here on, reads only): the running fetch holds the socket."""
    deadline: _Deadline | None = getattr(_current, "deadline", None)
    conn.fetch_deadline = deadline
    if deadline is not None:
        deadline.attach(conn.sock)


def _release(conn: Any) -> None:
    """The connection goes back to the pool: its fetch lets go; a cut one is not reused."""
    deadline: _Deadline | None = getattr(conn, "fetch_deadline", None)
    if deadline is not None:
        conn.fetch_deadline = None
        if deadline.release(conn.sock):
            conn.close()


class _DeadlineHTTPConnection(HTTPConnection):
    def getresponse(self) -> HTTPResponse:  # type: ignore[override]  # as urllib3 declares it
        _attach_current(self)
        return super().getresponse()


class _DeadlineHTTPSConnection(_DeadlineHTTPConnection, HTTPSConnection):
    """HTTPSConnection with the same ``getresponse`` (the MRO puts HTTPSConnection before HTTPConnection)."""


class _DeadlineHTTPPool(urllib3.HTTPConnectionPool):
    ConnectionCls = _DeadlineHTTPConnection

    def _put_conn(self, conn: Any) -> None:
        if conn is not None:
            _release(conn)
        super()._put_conn(conn)


class _DeadlineHTTPSPool(_DeadlineHTTPPool, urllib3.HTTPSConnectionPool):
    """HTTPSConnectionPool (scheme, TLS settings) with the same ``_put_conn``."""

    ConnectionCls = _DeadlineHTTPSConnection


_POOLS: dict[str, type[urllib3.HTTPConnectionPool]] = {"http": _DeadlineHTTPPool, "https": _DeadlineHTTPSPool}


class DeadlineAdapter(HTTPAdapter):
    """A requests transport adapter whose connections ``fetch_text`` can cut at its deadline."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = _POOLS

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        if not proxy.lower().startswith("socks"):  # SOCKS pools have their own connection classes
            manager.pool_classes_by_scheme = _POOLS
        return manager


_MOUNT_LOCK = threading.Lock()


def new_session() -> requests.Session:
    """A requests session (keeps connections open between fetches) ready for ``fetch_text``."""
    return _with_deadlines(requests.Session())


def _with_deadlines(session: requests.Session) -> requests.Session:
    with _MOUNT_LOCK:
        for prefix in ("http://", "https://"):
            if not isinstance(session.adapters.get(prefix), DeadlineAdapter):
                previous = session.adapters.get(prefix)
                session.mount(prefix, DeadlineAdapter())
                if previous is not None:
                    previous.close()
    return session


def fetch_text(
    url: str,
    timeout: float,
    max_bytes: int = DEFAULT_MAX_BYTES,
    session: requests.Session | None = None,
    inflight: InflightFetches | None = None,
) -> str:
    """The body of ``GET url`` (HTTP 200 only) as text, within ``timeout`` seconds in all (connect,
    headers and body) and at most ``max_bytes``.

    ``session`` keeps the connection open between calls: one from ``new_session()`` (a plain session
    gets the deadline adapter mounted here on first use, so mount it before sharing it between
    threads); without one, a connection is opened and closed per call.  ``inflight``
    registers the fetch so its owner can abort it.  Raises FetchError: reason ``timeout`` (deadline
    passed or aborted), ``unreachable`` (refused, reset, TLS) or ``bad_answer`` (HTTP status, size).
    """
    deadline = _Deadline()
    if inflight is not None and not inflight._add(deadline):
        raise FetchError(f"GET {url}: aborted (the exporter is closing)", ScrapeErrorReason.TIMEOUT)
    timer = threading.Timer(timeout, deadline.end, args=("timeout",))
    timer.name, timer.daemon = "fetch-deadline", True
    own_session = session is None
    http = new_session() if session is None else _with_deadlines(session)
    _current.deadline = deadline
    timer.start()
    try:
        with http.get(url, timeout=(timeout, timeout), stream=True) as response:
            if response.status_code != 200:
                raise FetchError(f"GET {url}: HTTP {response.status_code}", ScrapeErrorReason.BAD_ANSWER)
            chunks: list[bytes] = []
            size = 0
            for chunk in response.iter_content(chunk_size=CHUNK_BYTES):
                size += len(chunk)
                if size > max_bytes:
                    raise FetchError(f"GET {url}: answer larger than {max_bytes} bytes", ScrapeErrorReason.BAD_ANSWER)
                chunks.append(chunk)
            encoding = response.encoding or "utf-8"
    except FetchError:
        raise
    except Exception as exc:
        if deadline.ended is not None:  # whatever broke, it broke because the socket was cut
            raise _cut_short(url, timeout, deadline.ended) from None
        if isinstance(exc, requests.Timeout):
            raise FetchError(f"GET {url}: timed out after {timeout:g}s", ScrapeErrorReason.TIMEOUT) from None
        if isinstance(exc, (requests.RequestException, urllib3.exceptions.HTTPError, OSError)):
            raise FetchError(f"GET {url}: {type(exc).__name__}: {exc}") from None
        raise
    finally:
        timer.cancel()
        deadline.detach()
        _current.deadline = None
        if inflight is not None:
            inflight._discard(deadline)
        if own_session:
            http.close()
    if deadline.ended is not None:  # a body that ends at close: the cut looks like its end
        raise _cut_short(url, timeout, deadline.ended)
    return b"".join(chunks).decode(encoding, errors="replace")


def _cut_short(url: str, timeout: float, why: str) -> FetchError:
    if why == "aborted":
        return FetchError(f"GET {url}: aborted (the exporter is closing)", ScrapeErrorReason.TIMEOUT)
    return FetchError(f"GET {url}: timed out: answer not complete after {timeout:g}s", ScrapeErrorReason.TIMEOUT)
