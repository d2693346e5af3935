"""The xDS protocol state without gRPC: snapshots, SotW and delta streams (nonces, ACK/NACK, restarts),
and the fan-out publisher."""

from __future__ import annotations

import pytest

from mqttlb.webhook.controller import LeverError, Snapshot
from mqttlb.webhook.eds import Endpoint, cluster_load_assignment
from mqttlb.webhook.xds_cache import DeltaStream, SotwStream, XdsSnapshot, snapshot_of
from mqttlb.webhook.xds_grpc import FanOutPublisher

CLUSTER = "mqtt_brokers"


def snap(version: int, *weights: int, cluster: str = CLUSTER) -> XdsSnapshot:
    endpoints = [Endpoint(f"node{i}", "127.0.0.1", 18830 + i, w) for i, w in enumerate(weights, 1)]
    return snapshot_of(version, [cluster_load_assignment(cluster, endpoints)])


def test_resource_versions_follow_content_not_the_snapshot_number() -> None:
    a, b, c = snap(1, 100, 100), snap(7, 100, 100), snap(8, 100, 50)
    assert a.resources[CLUSTER].version == b.resources[CLUSTER].version
    assert c.resources[CLUSTER].version != b.resources[CLUSTER].version
    assert (a.version_info, c.version_info) == ("1", "8")
    assert a.size_bytes() > 0


def test_invalid_documents_are_refused_with_the_cluster_named() -> None:
    with pytest.raises(ValueError, match="'c1'"):
        snapshot_of(1, [{"cluster_name": "c1", "bogus": 1}])
    with pytest.raises(ValueError, match="only"):
        snapshot_of(1, [{"@type": "type.googleapis.com/envoy.config.cluster.v3.Cluster", "name": "x"}])
    with pytest.raises(ValueError, match="two"):
        snapshot_of(1, [{"cluster_name": "c1"}, {"cluster_name": "c1"}])


def test_sotw_first_request_ack_push_and_stale_nonce() -> None:
    stream = SotwStream()
    outcome, response = stream.on_request([CLUSTER], "", "", None, snap(1, 100, 100))
    assert response is not None and response.version_info == "1" and outcome.ack is None
    assert [r.name for r in response.resources] == [CLUSTER]
    outcome, again = stream.on_request([CLUSTER], "1", response.nonce, None, snap(1, 100, 100))
    assert outcome.ack is True and again is None and stream.synced_version == 1
    pushed = stream.on_snapshot(snap(2, 100, 50))
    assert pushed is not None and pushed.version_info == "2" and pushed.nonce != response.nonce
    # An answer to the old nonce arriving late changes nothing.
    outcome, late = stream.on_request([CLUSTER], "1", response.nonce, None, snap(2, 100, 50))
    assert outcome.stale and late is None and stream.synced_version == 1
    assert stream.on_snapshot(snap(2, 100, 50)) is None  # already sent


def test_sotw_nack_is_recorded_and_the_rejected_version_not_sent_again() -> None:
    stream = SotwStream()
    _, first = stream.on_request([CLUSTER], "", "", None, snap(1, 100, 100))
    assert first is not None
    stream.on_request([CLUSTER], "1", first.nonce, None, snap(1, 100, 100))
    bad = stream.on_snapshot(snap(2, 100, 50))
    assert bad is not None
    outcome, response = stream.on_request([CLUSTER], "1", bad.nonce, "weight 0 invalid", snap(2, 100, 50))
    assert outcome.ack is False and outcome.nack is not None
    assert (outcome.nack.kept_version, outcome.nack.message) == ("1", "weight 0 invalid")
    assert response is None and stream.synced_version == 1 and stream.acked_version_info == "1"
    fixed = stream.on_snapshot(snap(3, 100, 60))
    assert fixed is not None and fixed.version_info == "3"
    stream.on_request([CLUSTER], "3", fixed.nonce, None, snap(3, 100, 60))
    assert stream.synced_version == 3


def test_sotw_reconnect_with_the_current_version_gets_nothing() -> None:
    stream = SotwStream()
    outcome, response = stream.on_request([CLUSTER], "5", "", None, snap(5, 100, 100))
    assert response is None and stream.synced_version == 5
    assert stream.on_snapshot(snap(5, 100, 100)) is None
    # ... while an Envoy that holds an older version is answered at once.
    _, behind = SotwStream().on_request([CLUSTER], "4", "", None, snap(5, 100, 100))
    assert behind is not None and behind.version_info == "5"


def test_sotw_waits_for_a_snapshot_and_for_the_names_asked() -> None:
    stream = SotwStream()
    assert stream.on_request([CLUSTER], "", "", None, None)[1] is None
    assert stream.on_snapshot(snap(1, 100, cluster="other")) is None  # not what it asked for
    assert stream.on_snapshot(snap(2, 100)) is not None


def test_delta_initial_versions_equal_to_the_content_send_nothing() -> None:
    old = snap(4, 100, 80)
    stream = DeltaStream()
    initial = {CLUSTER: old.resources[CLUSTER].version}
    outcome, response = stream.on_request([CLUSTER], [], initial, "", None, snap(5, 100, 80))  # restarted: new number
    assert response is None and stream.synced_version == 5
    changed = stream.on_snapshot(snap(6, 100, 70))
    assert changed is not None and [r.name for r in changed.resources] == [CLUSTER] and changed.removed == ()


def test_delta_ack_nack_and_removal() -> None:
    stream = DeltaStream()
    _, first = stream.on_request([CLUSTER], [], {}, "", None, snap(1, 100, 100))
    assert first is not None and first.system_version_info == "1"
    outcome, _ = stream.on_request([], [], {}, first.nonce, None, snap(1, 100, 100))
    assert outcome.ack is True and stream.synced_version == 1
    bad = stream.on_snapshot(snap(2, 100, 50))
    assert bad is not None
    outcome, response = stream.on_request([], [], {}, bad.nonce, "rejected", snap(2, 100, 50))
    assert outcome.nack is not None and outcome.nack.message == "rejected" and response is None
    assert stream.synced_version == 1 and stream.known[CLUSTER] == first.resources[0].version
    assert stream.on_snapshot(snap(3, 100, 50)) is None  # same rejected content under a new number
    good = stream.on_snapshot(snap(4, 100, 60))
    assert good is not None
    assert stream.on_request([], [], {}, "no-such-nonce", None, snap(4, 100, 60))[0].stale
    stream.on_request([], [], {}, good.nonce, None, snap(4, 100, 60))
    assert stream.synced_version == 4
    gone = stream.on_snapshot(snap(5, 100, cluster="other"))
    assert gone is not None and gone.removed == (CLUSTER,) and gone.resources == ()


class _Pub:
    def __init__(self, version: int | None, fail: bool = False) -> None:
        self.version, self.fail = version, fail
        self.got: list[int] = []

    def publish(self, snapshot: Snapshot) -> None:
        self.got.append(snapshot.version)
        if self.fail:
            raise LeverError("eds_write", "disk full")

    def published_version(self) -> int | None:
        return self.version


def test_fan_out_publishes_to_all_and_reports_the_oldest_version() -> None:
    snapshot = Snapshot(3, CLUSTER, (), 0, b"{}")
    failing, ok = _Pub(2, fail=True), _Pub(3)
    fan = FanOutPublisher([failing, ok])
    with pytest.raises(LeverError, match="disk full"):
        fan.publish(snapshot)
    assert failing.got == ok.got == [3]
    assert fan.published_version() == 2
    assert FanOutPublisher([_Pub(None), _Pub(3)]).published_version() is None
    with pytest.raises(ValueError):
        FanOutPublisher([])
