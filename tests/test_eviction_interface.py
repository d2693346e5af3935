"""The shared eviction interface (mqttlb.brokers.eviction): one evict() signature for every broker, the
command it hands to the broker's adapter, and the command's wire form for the plugin and the extension."""

from __future__ import annotations

import pytest

from mqttlb.brokers.eviction import (
    REASON_SERVER_MOVED,
    REASON_USE_ANOTHER_SERVER,
    ClientLoad,
    EvictCommand,
    EvictionAdapter,
    EvictResult,
)


class Recorder(EvictionAdapter):
    shared_sessions = False

    def __init__(self) -> None:
        self.commands: list[EvictCommand] = []

    def clients(self) -> list[ClientLoad]:
        return []

    def _evict(self, command: EvictCommand) -> EvictResult:
        self.commands.append(command)
        return EvictResult(tuple(command.client_ids), (), (), "done")


def test_evict_hands_the_adapter_one_command_with_the_interface_defaults() -> None:
    adapter = Recorder()
    assert adapter.evict(["a", "b"], max_per_second=4).evicted == ("a", "b")
    assert adapter.commands == [EvictCommand(["a", "b"], 4, REASON_USE_ANOTHER_SERVER, None, False)]


def test_an_adapter_must_implement_clients_and_evict() -> None:
    class Half(EvictionAdapter):
        def clients(self) -> list[ClientLoad]:
            return []

    with pytest.raises(TypeError, match="_evict"):
        Half()  # type: ignore[abstract]


def test_wire_form_names_the_server_reference_only_when_there_is_one() -> None:
    plain = EvictCommand(("a", "b"), 10, REASON_USE_ANOTHER_SERVER, None, False)
    assert plain.wire() == {"clients": ["a", "b"], "maxPerSecond": 10.0, "reasonCode": 0x9C, "allowPersistent": False}
    moved = EvictCommand(("a",), 2.5, REASON_SERVER_MOVED, "mqtt-z.example:1883", True)
    assert moved.wire() == {
        "clients": ["a"],
        "maxPerSecond": 2.5,
        "reasonCode": 0x9D,
        "allowPersistent": True,
        "serverReference": "mqtt-z.example:1883",
    }


@pytest.mark.parametrize(("ids", "rate", "seconds"), [(("a",), 5, 0.0), (("a", "b", "c"), 2, 1.0), (("a", "b"), 0, 0)])
def test_batch_seconds_is_the_pacing_time_of_the_batch(ids: tuple[str, ...], rate: float, seconds: float) -> None:
    assert EvictCommand(ids, rate, REASON_USE_ANOTHER_SERVER, None, False).batch_seconds() == seconds


def test_nothing_to_evict_is_an_empty_result() -> None:
    assert EvictResult.nothing_to_evict() == EvictResult((), (), (), "nothing to evict")
