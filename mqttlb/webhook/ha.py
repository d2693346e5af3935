"""Two (or more) rebalancer replicas: exactly one acts, through a lease (:mod:`mqttlb.webhook.lease`).

Every replica serves its HTTP API and, if configured, its xDS server.  A :class:`Replica` thread tries
the lease every ``renew_seconds``:

- while another replica holds it, this one **follows**: it reads the state file the leader saves before
  each publication (atomically, so always whole) and serves that state's snapshot, under the leader's
  version, over xDS, REST EDS and ``/status`` (:class:`Follower`).  It decides nothing and moves no
  lever; Envoys connected to it get the leader's endpoints.
- once it holds the lease it **leads**: the ``lead`` callback starts the controller (which loads the
  same state file and publishes it under the next version: no version is reused, and the decisions
  the old leader committed are not taken again) and its loop.
- a leader that loses the lease (a Kubernetes Lease it could not renew in time) stops acting at once
  and calls ``on_lost``; the webhook then exits (status 3), as client-go's leader election does, and
  its supervisor starts it again as a standby.

The takeover time after the leader dies is the lease's: the file lease is free the moment the kernel
closes the dead process's file, so at most ``renew_seconds`` (0.5 s) plus the controller's start; the
Kubernetes Lease expires ``duration_seconds`` (15 s) after its last renewal.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import KW_ONLY, dataclass, field

from mqttlb.webhook.config import WebhookConfig
from mqttlb.webhook.controller import Controller, build_snapshot
from mqttlb.webhook.lease import Lease
from mqttlb.webhook.state import StateError, load_state
from mqttlb.webhook.xds_grpc import XdsPublisher, XdsServer

log = logging.getLogger(__name__)


class Follower:
    """A standby's view of the leader: the newest state file, served as the controller's snapshot and
    over xDS.  Calling it reads the file once; a state not newer than the one served changes nothing."""

    def __init__(self, config: WebhookConfig, controller: Controller, xds: XdsServer | None) -> None:
        self.config = config
        self.controller = controller
        self.xds = xds
        self.version = 0

    def __call__(self) -> None:
        """Raises StateError for a state file that cannot be read or used (logged by the replica)."""
        state = load_state(self.config.state_file, self.config.node_names, self.controller.policy)
        if state is None or state.version <= self.version or state.nodes != self.config.node_names:
            return
        snapshot = build_snapshot(self.config, state)
        self.controller.follow(state, snapshot)
        if self.xds is not None:
            XdsPublisher(self.xds).publish(snapshot)
        self.version = state.version
        log.info("standby: serving the leader's snapshot version %d", state.version)


@dataclass(eq=False)  # identity, as a thread's loop
class Replica:
    """The lease loop of one replica (:meth:`run` in a thread until ``stop`` is set): ``lead`` runs while it
    holds ``lease`` (until the event it gets is set), ``follow`` every ``renew_seconds`` while another
    replica does, ``on_lost`` when it loses the lease; ``clock`` gives Unix seconds."""

    lease: Lease
    _: KW_ONLY
    lead: Callable[[threading.Event], None]
    follow: Callable[[], None]
    renew_seconds: float
    on_lost: Callable[[], None]
    clock: Callable[[], float] = time.time
    leading_since: float | None = field(default=None, init=False)  # when it last took the lease (None: standby)

    def run(self, stop: threading.Event) -> None:
        leadership: threading.Event | None = None
        try:
            while not stop.is_set():
                held = self._try()
                if held and leadership is None:
                    leadership = self._take(stop)
                elif not held and leadership is not None:
                    log.error("lease lost by %s: stopping to act", self.lease.identity)
                    leadership.set()
                    leadership, self.leading_since = None, None
                    self.on_lost()
                    return
                if leadership is None:
                    self._follow()
                stop.wait(self.renew_seconds)
        finally:
            if leadership is not None:
                leadership.set()
            self.lease.release()

    def _try(self) -> bool:
        try:
            return self.lease.acquire()
        except OSError as exc:
            log.error("lease: %s", exc)
            return False

    def _take(self, stop: threading.Event) -> threading.Event | None:
        """Start leading; on failure give the lease back (another replica may do better) and follow."""
        leadership = threading.Event()
        threading.Thread(target=_relay, args=(stop, leadership), daemon=True, name="lease-relay").start()
        log.info("lease held by %s: acting", self.lease.identity)
        try:
            self.lead(leadership)
        except Exception:  # a replica that cannot start (bad state file, xDS) must not hold the lease
            log.exception("cannot start acting: giving the lease back")
            leadership.set()
            self.lease.release()
            return None
        self.leading_since = self.clock()
        return leadership

    def _follow(self) -> None:
        try:
            self.follow()
        except StateError as exc:
            log.warning("standby: %s", exc)


def _relay(stop: threading.Event, leadership: threading.Event) -> None:
    """Set ``leadership`` when ``stop`` is set (the process stops) or it is set itself (lease lost)."""
    while not leadership.wait(0.2):
        if stop.is_set():
            leadership.set()
