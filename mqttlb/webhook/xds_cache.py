"""The xDS snapshot cache and the per-stream protocol state, without any gRPC (modelled on
go-control-plane's ``pkg/cache/v3/simple.go`` and its ``sotw``/``delta`` servers).

- :class:`XdsSnapshot`: one controller :class:`~mqttlb.webhook.controller.Snapshot` as xDS resources
  (ClusterLoadAssignment protos packed in ``Any``), each with a content version (a hash of its
  deterministic serialisation): the same endpoints give the same resource version, whatever the
  snapshot's number.  Immutable; the snapshot version is the controller's (never reused).
- :class:`SotwStream` and :class:`DeltaStream`: what one Envoy stream has been sent, ACKed and NACKed,
  and whether a request or a new snapshot calls for a response.  Both are pure state machines: the
  server (:mod:`mqttlb.webhook.xds_grpc`) feeds them requests and snapshots and sends what they return.

Protocol rules kept (https://www.envoyproxy.io/docs/envoy/latest/api-docs/xds_protocol):

- a request whose ``response_nonce`` is not the stream's last nonce is stale: its ACK/NACK part is
  ignored (SotW: the whole request, as go-control-plane does);
- an ACK (nonce matches, no ``error_detail``) records the version the Envoy applies;
- a NACK (``error_detail`` set) is recorded; the Envoy keeps its last good resources and the stream is
  not sent the rejected content again, only a newer snapshot (no NACK loop);
- SotW: a first request carrying the current ``version_info`` (an Envoy reconnecting to a restarted or
  standby server) gets no response;
- delta: a first request's ``initial_resource_versions`` are what the Envoy holds; resources whose
  content version matches are not sent again (a restarted server that publishes the same endpoints
  under a new number sends nothing).
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from envoy.config.endpoint.v3 import endpoint_pb2
from google.protobuf import any_pb2, json_format

from mqttlb.webhook.eds import CLA_TYPE

WILDCARD = "*"


@dataclass(frozen=True)
class XdsResource:
    """One named resource: ``version`` is a 16-hex-digit hash of ``packed``'s serialised bytes."""

    name: str
    version: str
    packed: any_pb2.Any = field(repr=False)


@dataclass(frozen=True)
class XdsSnapshot:
    """A complete, consistent set of ClusterLoadAssignments under one controller version."""

    version: int
    resources: Mapping[str, XdsResource]

    @property
    def version_info(self) -> str:
        return str(self.version)

    def size_bytes(self) -> int:
        """Serialised size of every resource (bytes on the wire per SotW response, before framing)."""
        return sum(r.packed.ByteSize() for r in self.resources.values())


def resource_of(message: endpoint_pb2.ClusterLoadAssignment) -> XdsResource:
    """``message`` packed in ``Any``, named by its cluster, versioned by its content."""
    packed = any_pb2.Any()
    packed.Pack(message, deterministic=True)
    digest = hashlib.sha256(packed.value).hexdigest()[:16]
    return XdsResource(message.cluster_name, digest, packed)


def snapshot_of(version: int, assignments: Iterable[Mapping[str, Any]]) -> XdsSnapshot:
    """An xDS snapshot of ``assignments``, ClusterLoadAssignments as JSON dicts (the REST/file EDS
    documents' ``resources``, with or without ``@type``).

    Raises ValueError naming the resource when a dict is not a valid ClusterLoadAssignment (unknown
    field, wrong type) or two share a cluster name.  Field *values* are not checked here (Envoy's
    validation does that, and NACKs what it refuses)."""
    resources: dict[str, XdsResource] = {}
    for document in assignments:
        body = {k: v for k, v in document.items() if k != "@type"}
        kind = document.get("@type", CLA_TYPE)
        if kind != CLA_TYPE:
            raise ValueError(f"resource of type {kind!r}: only {CLA_TYPE} is served")
        try:
            message = json_format.ParseDict(body, endpoint_pb2.ClusterLoadAssignment())
        except json_format.ParseError as exc:
            raise ValueError(f"invalid ClusterLoadAssignment {body.get('cluster_name')!r}: {exc}") from None
        resource = resource_of(message)
        if resource.name in resources:
            raise ValueError(f"two ClusterLoadAssignments for cluster {resource.name!r}")
        resources[resource.name] = resource
    return XdsSnapshot(version, resources)


@dataclass(frozen=True)
class Nack:
    """An Envoy refused a response: the nonce it refused, the version it keeps, the error message."""

    nonce: str
    kept_version: str
    message: str


@dataclass(frozen=True)
class SotwResponse:
    version_info: str
    nonce: str
    resources: tuple[XdsResource, ...]


@dataclass(frozen=True)
class DeltaResponse:
    system_version_info: str
    nonce: str
    resources: tuple[XdsResource, ...]
    removed: tuple[str, ...]


@dataclass(frozen=True)
class Outcome:
    """What a request meant: ``ack`` (True ACK, False NACK, None neither), the NACK, stale or not."""

    ack: bool | None = None
    nack: Nack | None = None
    stale: bool = False


_nonces = itertools.count(1)


def _next_nonce() -> str:
    return str(next(_nonces))


class SotwStream:
    """State-of-the-world state of one stream for one type (ClusterLoadAssignment).

    ``synced_version``: the snapshot version the Envoy is known to apply (its ACK, or a first request
    that already carried the current version); None until then."""

    def __init__(self) -> None:
        self.names: frozenset[str] | None = None  # None: no request yet; empty: wildcard
        self.nonce = ""  # last nonce sent
        self.sent_version: int | None = None  # version of the last response sent (or found in sync)
        self.acked_version_info = ""  # the version the Envoy says it applies
        self.synced_version: int | None = None
        self.last_nack: Nack | None = None

    def on_request(
        self, names: Sequence[str], version_info: str, nonce: str, error: str | None, snapshot: XdsSnapshot | None
    ) -> tuple[Outcome, SotwResponse | None]:
        """Take one DiscoveryRequest; returns its meaning and the response to send (or None)."""
        if nonce and nonce != self.nonce:
            return Outcome(stale=True), None  # an answer to an older response: wait for the newer one's
        first = self.names is None
        wanted = frozenset(n for n in names if n != WILDCARD)
        names_changed = wanted != self.names
        self.names = wanted
        outcome = Outcome()
        if nonce:
            if error is not None:
                self.last_nack = Nack(nonce, version_info, error)
                outcome = Outcome(ack=False, nack=self.last_nack)
            else:
                self.acked_version_info = version_info
                self.synced_version = self.sent_version
                outcome = Outcome(ack=True)
        else:
            self.acked_version_info = version_info
        if snapshot is None:
            return outcome, None
        if first and version_info == snapshot.version_info:
            # Reconnected with what we serve now (a restarted or standby server): nothing to send.
            self.sent_version = self.synced_version = snapshot.version
            return outcome, None
        if first or names_changed:  # new names need an answer even at the version already sent
            return outcome, self._respond(snapshot)
        if self.sent_version is None or snapshot.version > self.sent_version:
            return outcome, self._respond(snapshot)
        return outcome, None

    def on_snapshot(self, snapshot: XdsSnapshot) -> SotwResponse | None:
        """A new snapshot was published: the response to push, None when the stream has nothing to
        receive (no request yet, or already sent this version or a newer one)."""
        if self.names is None or (self.sent_version is not None and snapshot.version <= self.sent_version):
            return None
        return self._respond(snapshot)

    def _respond(self, snapshot: XdsSnapshot) -> SotwResponse | None:
        assert self.names is not None
        chosen = [r for n, r in sorted(snapshot.resources.items()) if not self.names or n in self.names]
        if not chosen:
            return None  # nothing the Envoy asked for exists (yet): answer when it does
        self.nonce = _next_nonce()
        self.sent_version = snapshot.version
        return SotwResponse(snapshot.version_info, self.nonce, tuple(chosen))


class DeltaStream:
    """Incremental state of one stream for one type: per resource, the content version the Envoy holds
    (``known``, from its initial versions and its ACKs), what was sent and not yet ACKed, and the
    content versions it NACKed (never sent again).

    ``synced_version``: the newest snapshot version whose content the Envoy holds (ACKed, or nothing
    to send); None until then."""

    def __init__(self) -> None:
        self.started = False
        self.wildcard = False
        self.subscribed: set[str] = set()
        self.known: dict[str, str] = {}  # name -> content version the Envoy ACKed
        self.sent: dict[str, str] = {}  # name -> content version sent (ACKed or in flight)
        self.rejected: dict[str, str] = {}  # name -> content version the Envoy NACKed
        self.pending: dict[str, tuple[int, dict[str, str | None]]] = {}  # nonce -> (version, name -> sent/None)
        self.synced_version: int | None = None
        self.last_nack: Nack | None = None

    def on_request(
        self,
        subscribe: Sequence[str],
        unsubscribe: Sequence[str],
        initial_versions: Mapping[str, str],
        nonce: str,
        error: str | None,
        snapshot: XdsSnapshot | None,
    ) -> tuple[Outcome, DeltaResponse | None]:
        """Take one DeltaDiscoveryRequest; returns its meaning and the response to send (or None)."""
        if not self.started:
            self.started = True
            self.known = dict(initial_versions)
            self.sent = dict(initial_versions)
            self.wildcard = not subscribe or WILDCARD in subscribe
        elif WILDCARD in subscribe:
            self.wildcard = True
        if WILDCARD in unsubscribe:
            self.wildcard = False
        self.subscribed.update(n for n in subscribe if n != WILDCARD)
        for name in unsubscribe:
            self.subscribed.discard(name)
            for table in (self.known, self.sent, self.rejected):
                table.pop(name, None)
        outcome = Outcome()
        if nonce:
            entry = self.pending.pop(nonce, None)
            if entry is None:
                outcome = Outcome(stale=True)
            elif error is not None:
                version, changes = entry
                for name, sent in changes.items():
                    if sent is not None:
                        self.rejected[name] = sent
                    self._restore(name)
                self.last_nack = Nack(nonce, str(self.synced_version or ""), error)
                outcome = Outcome(ack=False, nack=self.last_nack)
            else:
                version, changes = entry
                for name, sent in changes.items():
                    if sent is None:
                        self.known.pop(name, None)
                    else:
                        self.known[name] = sent
                if not self.pending:
                    self.synced_version = max(version, self.synced_version or 0)
                outcome = Outcome(ack=True)
        if snapshot is None:
            return outcome, None
        return outcome, self._diff(snapshot)

    def on_snapshot(self, snapshot: XdsSnapshot) -> DeltaResponse | None:
        """A new snapshot was published: the changes to push, None when the Envoy holds them all."""
        if not self.started:
            return None
        return self._diff(snapshot)

    def _restore(self, name: str) -> None:
        if name in self.known:
            self.sent[name] = self.known[name]
        else:
            self.sent.pop(name, None)

    def _watched(self, snapshot: XdsSnapshot) -> set[str]:
        names = set(self.subscribed)
        if self.wildcard:
            names.update(snapshot.resources)
        return names

    def _diff(self, snapshot: XdsSnapshot) -> DeltaResponse | None:
        changed: list[XdsResource] = []
        removed: list[str] = []
        refused = False  # the Envoy NACKed this content: it holds older endpoints, it is not in sync
        for name in sorted(self._watched(snapshot)):
            resource = snapshot.resources.get(name)
            if resource is None:
                if name in self.sent:
                    removed.append(name)
            elif self.rejected.get(name) == resource.version:
                refused = True
            elif self.sent.get(name) != resource.version:
                changed.append(resource)
        if not changed and not removed:
            if not self.pending and not refused:
                self.synced_version = snapshot.version
            return None
        nonce = _next_nonce()
        changes: dict[str, str | None] = {r.name: r.version for r in changed}
        changes.update({name: None for name in removed})
        for name, sent in changes.items():
            if sent is None:
                self.sent.pop(name, None)
            else:
                self.sent[name] = sent
        self.pending[nonce] = (snapshot.version, changes)
        return DeltaResponse(snapshot.version_info, nonce, tuple(changed), tuple(removed))
