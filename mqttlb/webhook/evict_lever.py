"""The evict lever: carries out one pass's :class:`~mqttlb.webhook.eviction_policy.EvictionIntent`.

For each donor (and each node being evacuated), concurrently: list the node's clients through its
broker adapter (``mqttlb.brokers.control``), choose the victims (pure, ``eviction_policy``), and ask
the broker to disconnect them at the bounded rate, MQTT 5 clients with reason code 0x9C "Use another
server".  In dry-run the victims are named and nobody is disconnected.  One batch per node per pass;
a batch takes at most ``batch_seconds`` (``max_per_second x batch_seconds`` clients), so the loop
stays responsive.  Adapter only: every failure becomes a :class:`BatchOutcome` with ``error`` set.

Each carried-out batch records its wall-clock start and end and, where the broker side reports them (the
Mosquitto plugin's ``listClients`` counters), the broker's own counters before and after, so that the
eviction rate can be measured from the broker's side (``mqttlb experiment --scenario restart-pileup``).
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from mqttlb.brokers.control import open_adapter
from mqttlb.brokers.eviction import REASON_USE_ANOTHER_SERVER, ClientLoad, EvictionAdapter, EvictionError
from mqttlb.brokers.mosquitto import MosquittoEvictionAdapter
from mqttlb.webhook import eviction_policy
from mqttlb.webhook.config import WebhookNodeConfig
from mqttlb.webhook.eviction_policy import Donor, EvictionIntent, EvictionSettings, VictimChoice

log = logging.getLogger(__name__)

REBALANCE = "rebalance"
EVACUATE = "evacuate"


@dataclass(frozen=True)
class BatchOutcome:
    """One batch on one node.  ``purpose``: ``rebalance`` or ``evacuate``; ``chosen``: the victims;
    ``evicted`` / ``unknown`` / ``refused``: the broker's answer (empty in dry-run); ``load``: the CPU
    (utilisation) the victims carried, ``surplus`` the donor's (0 for an evacuation); ``remaining``:
    evictable clients left on the node after the batch (an evacuation is complete at 0); ``error``:
    why the batch failed (nothing was evicted then).  ``started`` / ``finished``: wall-clock seconds
    (``time.time()``) around the broker's evict call; ``broker_before`` / ``broker_after``: the broker's own
    counters then (the Mosquitto plugin's, e.g. ``evictedTotal``), None when the broker reports none."""

    node: str
    purpose: str
    chosen: tuple[str, ...] = ()
    evicted: tuple[str, ...] = ()
    unknown: tuple[str, ...] = ()
    refused: tuple[str, ...] = ()
    load: float = 0.0
    surplus: float = 0.0
    clients: int = 0
    remaining: int = 0
    bound: int = 0
    skipped_persistent: int = 0
    skipped_heavy: int = 0
    dry_run: bool = False
    error: str | None = None
    details: Mapping[str, Any] = field(default_factory=dict)
    started: float | None = None
    finished: float | None = None
    broker_before: Mapping[str, int] | None = None
    broker_after: Mapping[str, int] | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "node": self.node,
            "purpose": self.purpose,
            "count": len(self.evicted) if not self.dry_run else len(self.chosen),
            "clients": list(self.chosen),
            "evicted": len(self.evicted),
            "unknown": len(self.unknown),
            "refused": len(self.refused),
            "load_moved": round(self.load, 4),
            "surplus": round(self.surplus, 4),
            "node_clients": self.clients,
            "remaining": self.remaining,
            "bound": self.bound,
            "skipped_persistent": self.skipped_persistent,
            "skipped_heavy": self.skipped_heavy,
            **({"started": round(self.started, 3)} if self.started is not None else {}),
            **({"finished": round(self.finished, 3)} if self.finished is not None else {}),
            **({"broker_counters_before": dict(self.broker_before)} if self.broker_before is not None else {}),
            **({"broker_counters_after": dict(self.broker_after)} if self.broker_after is not None else {}),
        }


def _listing(adapter: EvictionAdapter) -> tuple[list[ClientLoad], dict[str, int] | None]:
    """The node's clients and, when its adapter can list them with the broker's own counters (the Mosquitto
    plugin's ``listClients``), those counters by their wire names (``evictedTotal`` ...).  Raises EvictionError."""
    if not isinstance(adapter, MosquittoEvictionAdapter):
        return adapter.clients(), None
    listing = adapter.list_clients()
    return list(listing.clients), listing.counters.model_dump(by_alias=True)


def _counters(adapter: EvictionAdapter) -> dict[str, int] | None:
    """The broker's own counters now (see :func:`_listing`); None when it has none or cannot answer."""
    try:
        return _listing(adapter)[1]
    except EvictionError as exc:
        log.warning("no broker counters after the batch: %s", exc)
        return None


class EvictLever:
    """Carries out eviction intents on the nodes in ``adapters`` (node -> its broker adapter).

    ``reason_code``: the MQTT 5 DISCONNECT reason; ``server_reference``: sent with it when set (None:
    clients come back through Envoy's one address)."""

    def __init__(
        self,
        adapters: Mapping[str, EvictionAdapter],
        *,
        reason_code: int = REASON_USE_ANOTHER_SERVER,
        server_reference: str | None = None,
    ) -> None:
        self.adapters = dict(adapters)
        self.reason_code = reason_code
        self.server_reference = server_reference
        self._pool = ThreadPoolExecutor(max_workers=max(1, len(self.adapters)), thread_name_prefix="evict")

    def close(self) -> None:
        """Stop the workers and close the adapters that hold a connection."""
        self._pool.shutdown(wait=True)
        for adapter in self.adapters.values():
            close = getattr(adapter, "close", None)
            if callable(close):
                close()

    def carry_out(self, intent: EvictionIntent, settings: EvictionSettings, *, dry_run: bool) -> list[BatchOutcome]:
        """One batch per donor and per node being evacuated, concurrently; returns when all are done."""
        jobs: list[Callable[[], BatchOutcome]] = [
            functools.partial(self._rebalance, donor, intent, settings, dry_run) for donor in intent.donors
        ]
        jobs += [functools.partial(self._evacuate, node, settings, dry_run) for node in intent.evacuate]
        return list(self._pool.map(lambda job: job(), jobs))

    def _adapter(self, node: str) -> EvictionAdapter | None:
        return self.adapters.get(node)

    def _rebalance(
        self, donor: Donor, intent: EvictionIntent, settings: EvictionSettings, dry_run: bool
    ) -> BatchOutcome:
        adapter = self._adapter(donor.node)
        if adapter is None:
            return BatchOutcome(donor.node, REBALANCE, surplus=donor.surplus, error="no eviction side configured")
        try:
            clients, counters = _listing(adapter)
        except EvictionError as exc:
            return BatchOutcome(donor.node, REBALANCE, surplus=donor.surplus, error=str(exc))
        choice = eviction_policy.choose_victims(
            donor.cpu,
            donor.surplus,
            clients,
            room=intent.room,
            shared_sessions=adapter.shared_sessions,
            params=settings.params,
            batch_seconds=settings.batch_seconds,
        )
        return self._evict(
            adapter, donor.node, REBALANCE, choice, len(clients), donor.surplus, settings, dry_run, counters
        )

    def _evacuate(self, node: str, settings: EvictionSettings, dry_run: bool) -> BatchOutcome:
        adapter = self._adapter(node)
        if adapter is None:
            return BatchOutcome(node, EVACUATE, error="no eviction side configured")
        try:
            clients, counters = _listing(adapter)
        except EvictionError as exc:
            return BatchOutcome(node, EVACUATE, error=str(exc))
        choice = eviction_policy.evacuation_victims(
            clients,
            shared_sessions=adapter.shared_sessions,
            params=settings.params,
            batch_seconds=settings.batch_seconds,
        )
        return self._evict(adapter, node, EVACUATE, choice, len(clients), 0.0, settings, dry_run, counters)

    def _evict(
        self,
        adapter: EvictionAdapter,
        node: str,
        purpose: str,
        choice: VictimChoice,
        client_count: int,
        surplus: float,
        settings: EvictionSettings,
        dry_run: bool,
        counters_before: dict[str, int] | None = None,
    ) -> BatchOutcome:
        evictable = choice.eligible
        common: dict[str, Any] = {
            "node": node,
            "purpose": purpose,
            "chosen": choice.clients,
            "load": choice.load,
            "surplus": surplus,
            "clients": client_count,
            "bound": choice.bound,
            "skipped_persistent": choice.skipped_persistent,
            "skipped_heavy": choice.skipped_heavy,
        }
        if dry_run or not choice.clients:
            remaining = max(0, evictable) if dry_run else max(0, evictable - len(choice.clients))
            return BatchOutcome(**common, remaining=remaining, dry_run=dry_run)
        started = time.time()
        try:
            result = adapter.evict(
                choice.clients,
                max_per_second=settings.params.max_per_second,
                reason_code=self.reason_code,
                server_reference=self.server_reference,
                allow_persistent=settings.params.allow_persistent,
            )
        except EvictionError as exc:
            log.warning("eviction on %s failed: %s", node, exc)
            return BatchOutcome(**common, remaining=max(0, evictable), error=str(exc))
        finished = time.time()
        return BatchOutcome(
            **common,
            evicted=result.evicted,
            unknown=result.unknown,
            refused=result.refused,
            remaining=max(0, evictable - len(result.evicted) - len(result.unknown)),
            details={"answer": result.reason},
            started=started,
            finished=finished,
            broker_before=counters_before,
            broker_after=_counters(adapter) if counters_before is not None else None,
        )


def build_evict_lever(nodes: Sequence[WebhookNodeConfig], timeout: float) -> EvictLever | None:
    """The lever for the config's ``nodes`` that have an ``eviction`` block (None when none has one);
    ``timeout``: seconds per broker request.  Raises EvictionError naming the node (``nodes[i].eviction``)
    when a secret or TLS file is unusable."""
    adapters: dict[str, EvictionAdapter] = {}
    for index, node in enumerate(nodes):
        if node.eviction is None:
            continue
        try:
            adapters[node.name] = open_adapter(node.host, node.port, node.eviction, timeout)
        except EvictionError as exc:
            raise EvictionError(f"nodes[{index}].eviction ({node.name}): {exc}") from None
    return EvictLever(adapters) if adapters else None
