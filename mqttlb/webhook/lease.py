"""Leader leases for rebalancer replicas: exactly one replica acts, the others stand by.

The ``lease`` block of ``webhook.yaml`` picks one, told apart by ``kind``::

    lease: {kind: file, path: /var/lib/mqttlb/leader.lock}
    lease: {kind: kubernetes, name: mqttlb-rebalancer, namespace: mqtt, duration_seconds: 15}

- :class:`FileLease` (one host, or a filesystem with working ``flock``): an exclusive ``flock`` on the
  file.  The kernel drops it when the holder dies, even by SIGKILL, so a standby takes over on its next
  try (``renew_seconds``).  The holder's identity is written into the file for people.
- :class:`KubernetesLease`: a ``coordination.k8s.io/v1`` Lease, as client-go's leader election uses it:
  taken when absent or expired (``renewTime + leaseDurationSeconds`` in the past), renewed by its
  holder, every write guarded by the object's ``resourceVersion`` (a 409 means another replica wrote
  first).  A holder that cannot renew within ``duration_seconds`` must stop acting: ``acquire`` then
  answers False.  After the holder dies the standby takes over once the lease expires.

Both implement :class:`Lease`.  ``acquire`` never blocks longer than its HTTP timeout.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import socket
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Annotated, Any, Literal, Protocol

import requests
from pydantic import BaseModel, ConfigDict, Field, model_validator

log = logging.getLogger(__name__)

SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")
# A holder that gets no answer keeps acting only this fraction of the lease duration after its last
# renewal (client-go's renewDeadline < leaseDuration): it stops before another replica can take over.
RENEW_DEADLINE_FRACTION = 2 / 3


class Lease(Protocol):
    identity: str

    def acquire(self) -> bool:
        """Take the lease, or renew it when held; True while this replica holds it."""
        ...

    def release(self) -> None:
        """Give the lease up (a standby may take it at once); harmless when not held."""
        ...

    def holder(self) -> str | None:
        """Who holds the lease now, as far as this replica can tell (None: nobody, or unknown)."""
        ...


def default_identity() -> str:
    """``<hostname>-<pid>``: unique per replica process (a pod's hostname is its name)."""
    return f"{socket.gethostname()}-{os.getpid()}"


class FileLease:
    """An exclusive ``flock`` on ``path``, held as long as this object keeps the file open."""

    def __init__(self, path: Path, identity: str | None = None) -> None:
        self.path = Path(path)
        self.identity = identity or default_identity()
        self._file: IO[str] | None = None

    def acquire(self) -> bool:
        """Raises OSError when the file cannot be opened (its directory missing or not writable)."""
        if self._file is not None:
            return True
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = self.path.open("a+")
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            return False
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps({"holder": self.identity, "since": time.time()}) + "\n")
        handle.flush()
        self._file = handle
        return True

    def release(self) -> None:
        if self._file is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._file.fileno(), fcntl.LOCK_UN)
            self._file.close()
            self._file = None

    def holder(self) -> str | None:
        try:
            return str(json.loads(self.path.read_text())["holder"])
        except (OSError, ValueError, KeyError, TypeError):
            return None


def _rfc3339(seconds: float) -> str:
    """MicroTime as the Kubernetes API writes it: ``2026-11-30T15:00:00.123456Z``."""
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _seconds(text: str | None) -> float | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


class KubernetesLease:
    """A ``coordination.k8s.io/v1`` Lease ``namespace/name`` through the API server at ``api_url``.

    ``token``: the service account's bearer token; ``verify``: the cluster CA bundle path (or False
    for tests on plain HTTP).  In a pod, :meth:`in_cluster` fills all three in."""

    def __init__(
        self,
        api_url: str,
        namespace: str,
        name: str,
        *,
        duration_seconds: float = 15.0,
        identity: str | None = None,
        token: str | None = None,
        verify: str | bool = True,
        timeout: float = 2.0,
        clock: Any = time.time,
    ) -> None:
        self.url = f"{api_url.rstrip('/')}/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases"
        self.namespace, self.name = namespace, name
        self.duration_seconds = duration_seconds
        self.identity = identity or default_identity()
        self.timeout = timeout
        self.clock = clock
        self.session = requests.Session()
        self.session.verify = verify
        if token:
            self.session.headers["Authorization"] = f"Bearer {token}"
        self._renewed_at: float | None = None  # when this replica last wrote the lease as its holder
        self._last_holder: str | None = None

    @classmethod
    def in_cluster(cls, namespace: str | None, name: str, duration_seconds: float) -> KubernetesLease:
        """The lease through the pod's service account.  Raises OSError outside a pod."""
        host, port = os.environ.get("KUBERNETES_SERVICE_HOST"), os.environ.get("KUBERNETES_SERVICE_PORT")
        if not host or not port:
            raise OSError("KUBERNETES_SERVICE_HOST/PORT are not set: not running in a pod")
        token = (SERVICE_ACCOUNT / "token").read_text().strip()
        namespace = namespace or (SERVICE_ACCOUNT / "namespace").read_text().strip()
        return cls(f"https://{host}:{port}", namespace, name, duration_seconds=duration_seconds, token=token,
                   verify=str(SERVICE_ACCOUNT / "ca.crt"))

    def acquire(self) -> bool:
        now = self.clock()
        try:
            answer = self.session.get(f"{self.url}/{self.name}", timeout=self.timeout)
            if answer.status_code == 404:
                return self._write("post", self.url, self._lease(None, now, now, 0), now)
            answer.raise_for_status()
            lease = answer.json()
            spec = lease.get("spec", {})
            holder = spec.get("holderIdentity")
            self._last_holder = holder
            renewed = _seconds(spec.get("renewTime")) or 0.0
            duration = float(spec.get("leaseDurationSeconds") or self.duration_seconds)
            if holder == self.identity:
                acquired = _seconds(spec.get("acquireTime")) or now
                return self._write("put", f"{self.url}/{self.name}", self._lease(lease, acquired, now,
                                   int(spec.get("leaseTransitions") or 0)), now)
            if holder and renewed + duration > now:
                return False  # held by a live replica
            transitions = int(spec.get("leaseTransitions") or 0) + 1
            return self._write("put", f"{self.url}/{self.name}", self._lease(lease, now, now, transitions), now)
        except (requests.RequestException, ValueError) as exc:
            log.warning("lease %s/%s: %s", self.namespace, self.name, exc)
            return self._still_held(now)

    def _still_held(self, now: float) -> bool:
        """Without an answer, a holder keeps acting only while its last renewal is within the duration."""
        if self._renewed_at is None:
            return False
        return now - self._renewed_at < self.duration_seconds * RENEW_DEADLINE_FRACTION

    def _lease(self, current: dict[str, Any] | None, acquired: float, now: float, transitions: int) -> dict[str, Any]:
        metadata: dict[str, Any] = {"name": self.name, "namespace": self.namespace}
        if current is not None:
            metadata["resourceVersion"] = current.get("metadata", {}).get("resourceVersion")
        return {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": metadata,
            "spec": {
                "holderIdentity": self.identity,
                "leaseDurationSeconds": int(self.duration_seconds),
                "acquireTime": _rfc3339(acquired),
                "renewTime": _rfc3339(now),
                "leaseTransitions": transitions,
            },
        }

    def _write(self, method: str, url: str, body: dict[str, Any], now: float) -> bool:
        answer = self.session.request(method, url, json=body, timeout=self.timeout)
        if answer.status_code in (409, 422):  # another replica wrote first (resourceVersion, or it exists)
            self._renewed_at = None
            return False
        answer.raise_for_status()
        self._renewed_at = now
        self._last_holder = self.identity
        return True

    def release(self) -> None:
        """Clear the holder (as client-go's ReleaseOnCancel) so a standby takes over at once."""
        if self._renewed_at is None:
            return
        self._renewed_at = None
        with contextlib.suppress(requests.RequestException, ValueError):
            answer = self.session.get(f"{self.url}/{self.name}", timeout=self.timeout)
            lease = answer.json()
            if lease.get("spec", {}).get("holderIdentity") == self.identity:
                lease["spec"]["holderIdentity"] = None
                self.session.put(f"{self.url}/{self.name}", json=lease, timeout=self.timeout)

    def holder(self) -> str | None:
        return self._last_holder


class FileLeaseConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    kind: Literal["file"]
    path: Path
    renew_seconds: float = Field(default=0.5, gt=0, le=60)  # a standby tries this often: the takeover bound


class KubernetesLeaseConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    kind: Literal["kubernetes"]
    name: str = Field(min_length=1, pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
    namespace: str | None = None  # None: the pod's own namespace
    duration_seconds: float = Field(default=15, ge=2, le=300)  # the takeover bound after a holder dies
    renew_seconds: float = Field(default=2, gt=0, le=60)

    @model_validator(mode="after")
    def _renew_within_duration(self) -> KubernetesLeaseConfig:
        if self.renew_seconds * 2 > self.duration_seconds * RENEW_DEADLINE_FRACTION:
            raise ValueError("renew_seconds must be at most a third of duration_seconds")
        return self


LeaseConfig = Annotated[FileLeaseConfig | KubernetesLeaseConfig, Field(discriminator="kind")]


def open_lease(config: FileLeaseConfig | KubernetesLeaseConfig) -> Lease:
    """The lease ``config`` describes.  Raises OSError for a Kubernetes lease outside a pod."""
    if isinstance(config, FileLeaseConfig):
        return FileLease(config.path)
    return KubernetesLease.in_cluster(config.namespace, config.name, config.duration_seconds)
