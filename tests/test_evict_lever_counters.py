"""The evict lever records each batch's start and end and the Mosquitto plugin's own counters before and
after it in the batch's audit fields (what ``mqttlb experiment --scenario`` measures the rate from)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from mqttlb.brokers.eviction import ClientLoad, EvictionError, EvictResult
from mqttlb.brokers.mosquitto import ClientListing, MosquittoEvictionAdapter, PluginCounters, PluginLimits
from mqttlb.params import load_params
from mqttlb.webhook.evict_lever import EvictLever
from mqttlb.webhook.eviction_policy import Donor, EvictionIntent, eviction_settings


def _counters(evicted: int) -> PluginCounters:
    return PluginCounters.model_validate(
        {"commandsTotal": 1, "errorsTotal": 0, "unauthorisedTotal": 0, "evictedTotal": evicted,
         "refusedTotal": 0, "unknownTotal": 0, "evictionsPending": 0}
    )


class FakePlugin(MosquittoEvictionAdapter):
    """The Mosquitto adapter with the plugin's answers made up here (no connection is opened)."""

    def __init__(self, clients: int, fail_after: bool = False) -> None:
        super().__init__("127.0.0.1", 1)
        self.loads = [ClientLoad(f"c{i}", 1.0, 64.0, False, 4, 10.0) for i in range(clients)]
        self.evicted = 0
        self.fail_after = fail_after
        self.listings = 0

    def list_clients(self) -> ClientListing:
        self.listings += 1
        if self.fail_after and self.evicted:
            raise EvictionError("gone")
        limits = PluginLimits.model_validate({"maxPerSecond": 100, "maxClients": 1000, "loadWindowSeconds": 10})
        return ClientListing(tuple(self.loads), _counters(self.evicted), limits)

    def evict(self, client_ids: Sequence[str], **_: Any) -> EvictResult:
        self.evicted += len(client_ids)
        return EvictResult(tuple(client_ids), (), (), "done")


def _run(adapter: MosquittoEvictionAdapter, dry_run: bool = False) -> dict[str, Any]:
    settings = eviction_settings(load_params(), step_seconds=35, pass_seconds=2.5)
    intent = EvictionIntent(donors=(Donor("node1", 0.8, 0.2, 50),), recipients=("node3",), room=0.5, reason="test")
    lever = EvictLever({"node1": adapter})
    try:
        [outcome] = lever.carry_out(intent, settings, dry_run=dry_run)
    finally:
        lever.close()
    return outcome.as_dict()


def test_a_batch_records_its_times_and_the_plugin_counters_around_it() -> None:
    adapter = FakePlugin(40)
    entry = _run(adapter)
    assert entry["count"] == 10  # max_fraction 0.25 of 40
    assert entry["broker_counters_before"]["evictedTotal"] == 0
    assert entry["broker_counters_after"]["evictedTotal"] == 10
    assert entry["started"] <= entry["finished"]


def test_no_counters_after_a_failed_listing_and_none_in_dry_run() -> None:
    entry = _run(FakePlugin(40, fail_after=True))
    assert entry["broker_counters_before"]["evictedTotal"] == 0 and "broker_counters_after" not in entry
    dry = _run(FakePlugin(40), dry_run=True)
    assert not {"started", "finished", "broker_counters_before", "broker_counters_after"} & set(dry)
