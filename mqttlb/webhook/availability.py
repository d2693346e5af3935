"""The drain lever's broker side: a drained node's own availability endpoint says "draining" too.

A drain is published to Envoy as EDS ``health_status: DRAINING``.  A load balancer that health-checks the
brokers itself (a cloud load balancer, HAProxy, Kubernetes readiness) does not read EDS; brokers serve an
availability endpoint for it -- the mqttlb HiveMQ extension's ``GET /mqttlb/v1/availability`` answers 200
while accepting and 503 while draining.  A node's eviction side that can switch it (``set_available(bool)``,
:class:`mqttlb.brokers.hivemq.HivemqEvictionAdapter`) is switched with each committed drain and undrain.

:class:`AvailabilitySync` converges the switches on the committed drain set, once per reconcile pass
(``sync``): a node is called when what it was last told differs from the set (at the first pass every
node, so a restarted webhook tells its nodes again); a draining node is told again every
``reassert_seconds`` (a restarted broker comes back accepting); a failed call is retried after
``retry_seconds``.  Each failure episode (from the first failed call until a call succeeds or the wish
changes) is logged at WARNING and counted once (``on_failure``: the controller's
``mqttlb_webhook_action_failures_total{kind="drain", reason="availability"}``).  Only logged, not counted: a
failed re-assert, and telling a node never told draining that it accepts (what a broker starts with) --
such a node is most likely down, which the broker-down alert reports.
The EDS drain does not wait for the brokers and is never undone by a failure here.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from mqttlb.brokers.eviction import EvictionError

log = logging.getLogger(__name__)

REASSERT_SECONDS = 30.0
RETRY_SECONDS = 10.0


@runtime_checkable
class AvailabilitySide(Protocol):
    """A broker node's availability switch for load-balancer health checks."""

    def set_available(self, available: bool) -> bool:
        """True: accepting (health check 200); False: draining (503).  Returns whether the state changed.
        Raises EvictionError when the broker cannot be reached or refuses."""
        ...


@dataclass
class _NodeSync:
    told: bool | None = None  # draining, as last told successfully (None: unknown)
    told_at: float = 0.0
    retry_at: float = 0.0
    failing_for: bool | None = None  # the wish of the failure episode under way (None: none)


class AvailabilitySync:
    """Keeps the availability switches of ``sides`` (node name -> side) in line with the drain set.

    ``on_failure()`` is called once per failure episode of a node.  Times are the caller's clock (s).
    Not thread-safe: the controller calls ``sync`` from its pass (under its pass lock)."""

    def __init__(
        self,
        sides: Mapping[str, AvailabilitySide],
        on_failure: Callable[[], None],
        *,
        reassert_seconds: float = REASSERT_SECONDS,
        retry_seconds: float = RETRY_SECONDS,
    ) -> None:
        self.sides = dict(sides)
        self._on_failure = on_failure
        self._reassert = reassert_seconds
        self._retry = retry_seconds
        self._nodes = {node: _NodeSync() for node in self.sides}

    @classmethod
    def of(cls, adapters: Mapping[str, object] | None, on_failure: Callable[[], None]) -> AvailabilitySync:
        """The sync over those of ``adapters`` (node -> eviction side, e.g. ``EvictLever.adapters``; None: no
        node) that have an availability switch."""
        sides = {n: a for n, a in (adapters or {}).items() if isinstance(a, AvailabilitySide)}
        return cls(sides, on_failure)

    def sync(self, draining: Collection[str], now: float) -> dict[str, bool]:
        """Tell every node whose switch is not known to match ``draining`` (the committed drain set), and
        re-assert draining nodes told more than ``reassert_seconds`` ago; a node whose last call for the same
        wish failed waits ``retry_seconds``.  Returns node -> whether its call succeeded, for the nodes called."""
        called: dict[str, bool] = {}
        for node, side in self.sides.items():
            wish, sync = node in draining, self._nodes[node]
            if sync.told != wish:
                if sync.failing_for != wish or now >= sync.retry_at:
                    called[node] = self._tell(node, side, sync, wish, now, reassert=False)
            elif wish and now - sync.told_at >= self._reassert and now >= sync.retry_at:
                called[node] = self._tell(node, side, sync, wish, now, reassert=True)
        return called

    def _tell(
        self, node: str, side: AvailabilitySide, sync: _NodeSync, wish: bool, now: float, *, reassert: bool
    ) -> bool:
        state = "draining (health check 503)" if wish else "accepting (health check 200)"
        try:
            changed = side.set_available(not wish)
        except EvictionError as exc:
            sync.retry_at = now + self._retry
            if reassert:
                log.info("%s: availability not re-asserted as %s, retry in %gs: %s", node, state, self._retry, exc)
                return False
            # Counted: a drain, or an undrain of a node told draining.  Not counted: telling a node that was
            # never drained that it accepts (what a broker starts with), e.g. a node down at the webhook's start.
            counted = wish or sync.told is True
            sync.told = None
            if sync.failing_for != wish:
                sync.failing_for = wish
                if counted:
                    self._on_failure()
                    log.warning(
                        "%s: availability not switched to %s, retry every %gs: %s", node, state, self._retry, exc
                    )
                else:
                    log.info("%s: availability not switched to %s, retry every %gs: %s", node, state, self._retry, exc)
            return False
        if changed or sync.failing_for is not None:
            log.info("%s: availability %s", node, state)
        sync.told, sync.told_at, sync.retry_at, sync.failing_for = wish, now, 0.0, None
        return True
