"""Envoy's aggregated discovery service (ADS) over gRPC: state-of-the-world and incremental (delta)
ClusterLoadAssignments for the MQTT cluster, pushed to every open stream when the controller publishes.

- :class:`XdsServer`: a ``grpc.aio`` server on its own thread and event loop.  With ``credentials`` (the
  webhook's xDS token, ``xds_token_file``: its own, which no HTTP route accepts) every stream must carry an
  ``authorization`` metadata entry they accept (``Bearer <token>``; Envoy sends it from its ADS
  ``grpc_service``'s ``initial_metadata``); any other stream ends at once with UNAUTHENTICATED, before a
  resource is sent (:class:`BearerInterceptor`).  ``set_snapshot`` (any
  thread) makes an :class:`~mqttlb.webhook.xds_cache.XdsSnapshot` current and wakes every stream; each
  stream runs the protocol state of :mod:`mqttlb.webhook.xds_cache` (nonces, ACK/NACK, what to send).
  A NACK is logged and counted, and the Envoy keeps its last good endpoints.
- :class:`XdsPublisher`: the controller's ``Publisher`` role on an ``XdsServer``.
- :class:`FanOutPublisher`: one ``Publisher`` over several (the EDS file, which REST EDS also serves
  from the snapshot, and gRPC): each snapshot goes to all of them.

Metrics (in the webhook's registry, names in :mod:`mqttlb.contract`): open streams, responses sent,
NACKs (by mode ``sotw``/``delta``), the current snapshot version and the streams whose Envoy applies it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import grpc
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from prometheus_client import CollectorRegistry, Counter, Gauge

from mqttlb import contract
from mqttlb.secure import Credentials, ServerTls
from mqttlb.webhook.controller import Controller, LeverError, Publisher, Snapshot
from mqttlb.webhook.eds import CLA_TYPE
from mqttlb.webhook.xds_cache import (
    DeltaResponse,
    DeltaStream,
    Outcome,
    SotwResponse,
    SotwStream,
    XdsSnapshot,
    snapshot_of,
)

log = logging.getLogger(__name__)

Mode = Literal["sotw", "delta"]
MODES: tuple[Mode, ...] = ("sotw", "delta")
START_TIMEOUT_SECONDS = 10.0
_TICK = object()  # queued to a stream when a new snapshot is current
_END = object()  # queued when the Envoy closed its side of the stream
AUTHORIZATION = "authorization"  # the gRPC metadata key (lower case, as HTTP/2 carries it)


@dataclass
class StreamStatus:
    """One open ADS stream as the server sees it (a live, mutable view; copy with :meth:`as_dict`)."""

    id: int
    mode: Mode
    peer: str
    node: str = ""
    synced_version: int | None = None  # snapshot version the Envoy applies (ACKed, or nothing to send)
    responses: int = 0
    acks: int = 0
    nacks: int = 0
    last_nack: str | None = None
    opened_at: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class XdsMetrics:
    """The xDS server's series in ``registry`` (every labelled counter starts at 0 for both modes)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        registry = registry if registry is not None else CollectorRegistry()
        self.streams = Gauge(contract.WEBHOOK_XDS_STREAMS, "Open ADS streams, by mode", ["mode"], registry=registry)
        self.responses = Counter(
            contract.WEBHOOK_XDS_RESPONSES.removesuffix("_total"),
            "xDS responses sent to Envoys, by mode",
            ["mode"],
            registry=registry,
        )
        self.nacks = Counter(
            contract.WEBHOOK_XDS_NACKS.removesuffix("_total"),
            "xDS responses an Envoy refused (error_detail set; it keeps its last good endpoints), by mode",
            ["mode"],
            registry=registry,
        )
        self.version = Gauge(
            contract.WEBHOOK_XDS_VERSION, "Version of the snapshot the xDS server serves", registry=registry
        )
        self.in_sync = Gauge(
            contract.WEBHOOK_XDS_IN_SYNC, "Open ADS streams whose Envoy applies the current snapshot", registry=registry
        )
        for mode in MODES:
            self.streams.labels(mode)
            self.responses.labels(mode)
            self.nacks.labels(mode)


class XdsServer:
    """ADS for ClusterLoadAssignments on ``listen`` (``host:port``; port 0 picks a free one).

    Thread-safe: ``set_snapshot``, ``snapshot``, ``streams`` and ``wait_synced`` may be called from any
    thread; the streams run on the server's own event loop thread."""

    def __init__(
        self,
        listen: str,
        metrics: XdsMetrics | None = None,
        grace_seconds: float = 0.5,
        on_nack: Callable[[], None] | None = None,
        tls: ServerTls | None = None,
        credentials: Credentials | None = None,
    ) -> None:
        """``on_nack``: called (on the server's thread) for every NACK, after it is logged and counted.
        ``tls``: serve gRPC over TLS with its certificate and key; with its ``client_ca_file`` every client
        (Envoy) must present a certificate signed by that CA (mutual TLS).  None: plaintext.
        ``credentials``: what a stream's ``authorization`` metadata must carry (:class:`BearerInterceptor`);
        None: no check (tests and benchmarks; the webhook always passes its xDS token)."""
        self.listen = listen
        self.tls = tls
        self.credentials = credentials
        self.metrics = metrics or XdsMetrics()
        self.on_nack = on_nack
        self.grace_seconds = grace_seconds
        self.port: int | None = None
        self._snapshot: XdsSnapshot | None = None
        self._streams: dict[int, tuple[StreamStatus, asyncio.Queue[object]]] = {}
        self._ids = itertools.count(1)
        self._cond = threading.Condition()  # guards _snapshot and _streams; notified on every sync
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._started = threading.Event()
        self._error: BaseException | None = None

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> int:
        """Bind and serve; returns the bound port.  Raises OSError when ``listen`` cannot be bound."""
        self._thread = threading.Thread(target=self._run, name="xds-grpc", daemon=True)
        self._thread.start()
        if not self._started.wait(START_TIMEOUT_SECONDS):
            raise OSError(f"xDS server on {self.listen} did not start within {START_TIMEOUT_SECONDS:.0f} s")
        if self._error is not None:
            raise OSError(f"cannot serve xDS on {self.listen}: {self._error}")
        assert self.port is not None
        return self.port

    def stop(self) -> None:
        """Close every stream (Envoys keep their endpoints and reconnect) and stop serving."""
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop ended meanwhile
                loop.call_soon_threadsafe(stop.set)
        if self._thread is not None:
            self._thread.join(self.grace_seconds + 5)

    def _run(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:  # noqa: BLE001 (reported to start(); the thread ends)
            self._error = exc
            self._started.set()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        credentials = self.credentials
        interceptors = [BearerInterceptor(credentials)] if credentials is not None and credentials.required else []
        guarded = bool(interceptors)
        server = grpc.aio.server(interceptors=interceptors)
        ads_pb2_grpc.add_AggregatedDiscoveryServiceServicer_to_server(_Servicer(self), server)
        try:
            if self.tls is None:
                self.port = server.add_insecure_port(self.listen)
            else:
                self.port = server.add_secure_port(self.listen, _credentials(self.tls))
        except (RuntimeError, OSError) as exc:
            self._error = exc
            self._started.set()
            return
        await server.start()
        self._started.set()
        log.info("xDS (ADS, SotW and delta) serving on %s%s", self.listen, " (credential required)" if guarded else "")
        await self._stop.wait()
        await server.stop(self.grace_seconds)

    # ------------------------------------------------------------------ snapshots
    def set_snapshot(self, snapshot: XdsSnapshot) -> None:
        """Make ``snapshot`` current and push it to every open stream (asynchronously).  An older or equal
        version than the current one is ignored (versions are never reused)."""
        with self._cond:
            if self._snapshot is not None and snapshot.version <= self._snapshot.version:
                return
            self._snapshot = snapshot
            queues = [queue for _, queue in self._streams.values()]
        self.metrics.version.set(snapshot.version)
        self._update_in_sync()
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_put_all, queues, _TICK)

    @property
    def snapshot(self) -> XdsSnapshot | None:
        return self._snapshot

    def streams(self) -> list[StreamStatus]:
        """A copy of every open stream's status."""
        with self._cond:
            return [StreamStatus(**status.as_dict()) for status, _ in self._streams.values()]

    def wait_synced(self, version: int, streams: int, timeout: float) -> bool:
        """Wait until at least ``streams`` open streams apply ``version`` or newer; False after ``timeout`` s."""

        def enough() -> bool:
            synced = [s for s, _ in self._streams.values() if (s.synced_version or 0) >= version]
            return len(synced) >= streams

        with self._cond:
            return self._cond.wait_for(enough, timeout)

    def _update_in_sync(self) -> None:
        with self._cond:
            current = self._snapshot.version if self._snapshot is not None else None
            count = sum(1 for s, _ in self._streams.values() if current is not None and s.synced_version == current)
            self._cond.notify_all()
        self.metrics.in_sync.set(count)

    # ------------------------------------------------------------------ streams (event loop thread)
    def _open(self, mode: Mode, peer: str) -> tuple[StreamStatus, asyncio.Queue[object]]:
        status = StreamStatus(next(self._ids), mode, peer, opened_at=time.time())
        queue: asyncio.Queue[object] = asyncio.Queue()
        with self._cond:
            self._streams[status.id] = (status, queue)
        self.metrics.streams.labels(mode).inc()
        return status, queue

    def _close(self, status: StreamStatus) -> None:
        with self._cond:
            self._streams.pop(status.id, None)
        self.metrics.streams.labels(status.mode).dec()
        self._update_in_sync()
        log.info("xDS %s stream %d from %s (%s) closed", status.mode, status.id, status.node, status.peer)

    def _note(self, status: StreamStatus, outcome: Outcome, synced: int | None) -> None:
        """Record a request's ACK/NACK and the stream's synced version."""
        if outcome.ack:
            status.acks += 1
        if outcome.nack is not None:
            status.nacks += 1
            status.last_nack = outcome.nack.message
            self.metrics.nacks.labels(status.mode).inc()
            if self.on_nack is not None:
                self.on_nack()
            log.warning(
                "xDS NACK from %s (%s stream %d, nonce %s): %s; it keeps version %s",
                status.node or status.peer,
                status.mode,
                status.id,
                outcome.nack.nonce,
                outcome.nack.message,
                outcome.nack.kept_version or "none",
            )
        if synced != status.synced_version:
            status.synced_version = synced
            self._update_in_sync()

    def _sent(self, status: StreamStatus) -> None:
        status.responses += 1
        self.metrics.responses.labels(status.mode).inc()


def _credentials(tls: ServerTls) -> grpc.ServerCredentials:
    """gRPC server credentials from ``tls``'s PEM files; OSError naming the file when one is unreadable."""
    key, cert = Path(tls.key_file).read_bytes(), Path(tls.cert_file).read_bytes()
    client_ca = Path(tls.client_ca_file).read_bytes() if tls.client_ca_file is not None else None
    mutual = client_ca is not None
    return grpc.ssl_server_credentials([(key, cert)], root_certificates=client_ca, require_client_auth=mutual)


class BearerInterceptor(grpc.aio.ServerInterceptor):
    """Refuses every call whose ``authorization`` metadata ``credentials`` do not accept: the call ends with
    UNAUTHENTICATED before its handler runs (no stream is opened, nothing is sent).  The check is
    :meth:`mqttlb.secure.Credentials.allows`, the webhook's HTTP one (constant-time compares)."""

    def __init__(self, credentials: Credentials) -> None:
        self.credentials = credentials

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Any],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        metadata = handler_call_details.invocation_metadata or ()
        presented = [value for key, value in metadata if key == AUTHORIZATION]
        if len(presented) == 1 and self.credentials.allows(str(presented[0])):
            return await continuation(handler_call_details)
        method = handler_call_details.method
        log.warning("xDS: %s refused: missing or wrong credential (%d authorization entries)", method, len(presented))
        return grpc.stream_stream_rpc_method_handler(_refuse)


async def _refuse(requests: AsyncIterator[Any], context: grpc.aio.ServicerContext) -> None:
    await context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong credential (authorization: Bearer <token>)")


def _put_all(queues: Sequence[asyncio.Queue[object]], item: object) -> None:
    for queue in queues:
        queue.put_nowait(item)


async def _requests(iterator: AsyncIterator[Any], queue: asyncio.Queue[object]) -> None:
    """Queue the Envoy's requests, then _END when it closes its side (or the stream breaks)."""
    try:
        async for request in iterator:
            queue.put_nowait(request)
    except grpc.RpcError as exc:  # the stream broke: the server side ends it too
        log.info("xDS stream broken: %s", exc)
    finally:
        queue.put_nowait(_END)


def _error_text(request: Any) -> str | None:
    if not request.HasField("error_detail"):
        return None
    return request.error_detail.message or f"code {request.error_detail.code}"


def _node_of(request: Any) -> str:
    return str(request.node.id) if request.HasField("node") else ""


class _StreamState(Protocol):
    """What the servicer needs of :class:`SotwStream` / :class:`DeltaStream`."""

    synced_version: int | None

    def on_snapshot(self, snapshot: XdsSnapshot) -> Any: ...


def _sotw_request(state: SotwStream, request: Any, snapshot: XdsSnapshot | None) -> tuple[Outcome, Any]:
    return state.on_request(
        request.resource_names, request.version_info, request.response_nonce, _error_text(request), snapshot
    )


def _sotw_message(response: SotwResponse) -> discovery_pb2.DiscoveryResponse:
    return discovery_pb2.DiscoveryResponse(
        version_info=response.version_info,
        resources=[r.packed for r in response.resources],
        type_url=CLA_TYPE,
        nonce=response.nonce,
    )


def _delta_request(state: DeltaStream, request: Any, snapshot: XdsSnapshot | None) -> tuple[Outcome, Any]:
    return state.on_request(
        request.resource_names_subscribe,
        request.resource_names_unsubscribe,
        dict(request.initial_resource_versions),
        request.response_nonce,
        _error_text(request),
        snapshot,
    )


def _delta_message(response: DeltaResponse) -> discovery_pb2.DeltaDiscoveryResponse:
    return discovery_pb2.DeltaDiscoveryResponse(
        system_version_info=response.system_version_info,
        resources=[
            discovery_pb2.Resource(name=r.name, version=r.version, resource=r.packed) for r in response.resources
        ],
        removed_resources=list(response.removed),
        type_url=CLA_TYPE,
        nonce=response.nonce,
    )


@dataclass(frozen=True)
class _Flavour:
    """One ADS method: its mode label, a fresh protocol state per stream, how a request is answered
    (``on_request(state, request, snapshot)``) and how an answer becomes the response message."""

    mode: Mode
    new_state: Callable[[], Any]
    on_request: Callable[[Any, Any, XdsSnapshot | None], tuple[Outcome, Any]]
    build: Callable[[Any], Any]


_SOTW = _Flavour("sotw", SotwStream, _sotw_request, _sotw_message)
_DELTA = _Flavour("delta", DeltaStream, _delta_request, _delta_message)


class _Servicer(ads_pb2_grpc.AggregatedDiscoveryServiceServicer):
    """Both ADS methods: one loop per stream over the Envoy's requests and the snapshot ticks."""

    def __init__(self, server: XdsServer) -> None:
        self.server = server

    async def _stream(
        self, flavour: _Flavour, requests: AsyncIterator[Any], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[Any]:
        """One stream: a new ``flavour`` state (SotW or delta) answers each request and each new snapshot."""
        server = self.server
        state: _StreamState = flavour.new_state()
        status, queue = server._open(flavour.mode, context.peer())
        reader = asyncio.get_running_loop().create_task(_requests(requests, queue))
        try:
            while True:
                item = await queue.get()
                if item is _END:
                    return
                outcome, response = Outcome(), None
                if item is _TICK:
                    snapshot = server.snapshot
                    response = state.on_snapshot(snapshot) if snapshot is not None else None
                else:
                    request: Any = item
                    status.node = _node_of(request) or status.node
                    if request.type_url != CLA_TYPE:
                        log.info("xDS: %s asked for %s, which is not served", status.node, request.type_url)
                        continue
                    outcome, response = flavour.on_request(state, request, server.snapshot)
                server._note(status, outcome, state.synced_version)
                if response is not None:
                    server._sent(status)
                    yield flavour.build(response)
        finally:
            reader.cancel()
            server._close(status)

    async def StreamAggregatedResources(  # noqa: N802 (the generated servicer's name)
        self, request_iterator: AsyncIterator[discovery_pb2.DiscoveryRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[discovery_pb2.DiscoveryResponse]:
        async for response in self._stream(_SOTW, request_iterator, context):
            yield response

    async def DeltaAggregatedResources(  # noqa: N802 (the generated servicer's name)
        self, request_iterator: AsyncIterator[discovery_pb2.DeltaDiscoveryRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[discovery_pb2.DeltaDiscoveryResponse]:
        async for response in self._stream(_DELTA, request_iterator, context):
            yield response


class XdsPublisher:
    """The controller's ``Publisher`` on an :class:`XdsServer`: each snapshot becomes the served one."""

    def __init__(self, server: XdsServer) -> None:
        self.server = server

    def publish(self, snapshot: Snapshot) -> None:
        """Raises LeverError("xds_invalid") when the snapshot's resources are not ClusterLoadAssignments."""
        try:
            xds = snapshot_of(snapshot.version, snapshot.discovery()["resources"])
        except (ValueError, KeyError) as exc:
            raise LeverError("xds_invalid", f"snapshot {snapshot.version} cannot be served over xDS: {exc}") from exc
        self.server.set_snapshot(xds)

    def published_version(self) -> int | None:
        """The version the server serves; None before the first publication."""
        snapshot = self.server.snapshot
        return None if snapshot is None else snapshot.version


class FanOutPublisher:
    """Publishes each snapshot to every publisher (in order; all are tried, the first failure is raised)."""

    def __init__(self, publishers: Sequence[Publisher]) -> None:
        if not publishers:
            raise ValueError("a fan-out publisher needs at least one publisher")
        self.publishers = tuple(publishers)

    def publish(self, snapshot: Snapshot) -> None:
        failure: LeverError | None = None
        for publisher in self.publishers:
            try:
                publisher.publish(snapshot)
            except LeverError as exc:
                failure = failure or exc
        if failure is not None:
            raise failure

    def published_version(self) -> int | None:
        """The oldest version they hold, None when one holds none: the controller's verify publishes again
        until every one holds the current snapshot.  (A start takes its next version from the state file,
        saved before every publication, so no version is reused.)"""
        versions = [p.published_version() for p in self.publishers]
        known = [v for v in versions if v is not None]
        return min(known) if len(known) == len(versions) else None


def attach_xds(
    controller: Controller, listen: str, tls: ServerTls | None = None, credentials: Credentials | None = None
) -> XdsServer:
    """An xDS server (not started) on ``listen`` that the controller publishes to as well: its publisher
    becomes a fan-out to the one it had (the EDS file) and the server; the server's metrics go to the
    controller's registry (``/metrics``), and each NACK also counts as a ``publish/xds_nack`` failure (which
    feeds the rebalancer-failing alert).  ``tls``: the webhook's ``tls`` block (TLS, and mutual TLS with its
    ``client_ca_file``).  ``credentials``: the webhook's xDS token (``xds_token_file``), which every stream must
    present (:class:`BearerInterceptor`).  Call before ``controller.start()``."""
    nack_failure = controller.metrics.failures.labels("publish", "xds_nack")
    metrics = XdsMetrics(controller.metrics.registry)
    server = XdsServer(listen, metrics, on_nack=nack_failure.inc, tls=tls, credentials=credentials)
    controller.publisher = FanOutPublisher([controller.publisher, XdsPublisher(server)])
    return server
