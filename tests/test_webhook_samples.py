"""Parsing recorded Prometheus API responses into per-node samples."""

from __future__ import annotations

import pytest

from mqttlb import contract
from mqttlb.prometheus_api import PrometheusApiError, parse_vector
from mqttlb.webhook.samples import cluster_selector, node_samples_from

NOW = 1_764_158_400.0


def vector(metric: str, values: dict[str, float], ts: float = NOW - 2) -> dict:
    return {
        "status": "success",
        "data": {
            "resultType": "vector",
            "result": [
                {"metric": {"__name__": metric, "cluster": "local", "node": n}, "value": [ts, str(v)]}
                for n, v in values.items()
            ],
        },
    }


def test_parse_and_combine_recorded_responses():
    cpu = parse_vector(vector(contract.NODE_CPU, {"node1": 0.91, "node2": 0.2}))
    stamps = parse_vector(vector("", {"node1": NOW - 4, "node2": NOW - 100}))
    conns = parse_vector(vector(contract.NODE_CONNECTIONS, {"node1": 600, "node2": 200, "node3": 5}))
    samples = node_samples_from(cpu, stamps, conns, ["node1", "node2", "node3"], NOW)
    assert samples["node1"].cpu == 0.91 and samples["node1"].age_seconds == pytest.approx(4)
    assert samples["node2"].age_seconds == pytest.approx(100)
    assert (
        samples["node3"].cpu is None
        and samples["node3"].connections == 5
        and samples["node3"].age_seconds is None
    )


def test_nan_values_parse_and_are_not_fresh_in_policy():
    doc = vector(contract.NODE_CPU, {"node1": 0.5})
    doc["data"]["result"][0]["value"][1] = "NaN"
    (sample,) = parse_vector(doc)
    assert sample.value != sample.value


@pytest.mark.parametrize(
    "document",
    [
        {"status": "error", "errorType": "bad_data", "error": "parse error"},
        {"status": "success", "data": {"resultType": "matrix", "result": []}},
        {"status": "success", "data": {"resultType": "vector", "result": [{"metric": {}}]}},
        {
            "status": "success",
            "data": {"resultType": "vector", "result": [{"metric": {}, "value": [1, "x"]}]},
        },
        [],
    ],
)
def test_malformed_responses_raise(document):
    with pytest.raises(PrometheusApiError):
        parse_vector(document)


def test_duplicate_or_unlabelled_series_raise():
    two = parse_vector(vector(contract.NODE_CPU, {"node1": 0.1}))
    with pytest.raises(PrometheusApiError, match="more than one"):
        node_samples_from(two + two, [], [], ["node1"], NOW)
    doc = vector(contract.NODE_CPU, {"node1": 0.1})
    del doc["data"]["result"][0]["metric"]["node"]
    with pytest.raises(PrometheusApiError, match="node label"):
        node_samples_from(parse_vector(doc), [], [], ["node1"], NOW)


def test_clustercluster_selector_rejects_injection():
    assert cluster_selector("local") == '{mqtt_cluster="local"}'
    assert cluster_selector("local", "broker_fleet") == '{broker_fleet="local"}'
    with pytest.raises(ValueError):
        cluster_selector('x"} or vector(1) or {a="')


def test_observation_query_and_firing_set_use_the_configured_cluster_label():
    # The parameter mqtt_cluster_label reaches the webhook's query and its reading of alert labels.
    from mqttlb.webhook.firing import FiringSet
    from mqttlb.webhook.observe import PARTS, observation_query

    query = observation_query("c1", "broker_fleet", cpu_window="45s")
    assert query.count('{broker_fleet="c1"}') == len(PARTS) and contract.CLUSTER_LABEL not in query
    assert f'avg_over_time({contract.NODE_CONNECTIONS}{{broker_fleet="c1"}}[45s])' in query

    class Alert:
        status, startsAt, endsAt, fingerprint = "firing", "2026-11-30T12:00:00Z", "0001-01-01T00:00:00Z", ""
        labels = {"alertname": contract.ALERT_CPU_HIGH, contract.ACTION_LABEL: "rebalance", "node": "n1",
                  "broker_fleet": "c1", "cluster": "k8s-eu"}  # `cluster`: kube-prometheus' Kubernetes cluster

    fleet = FiringSet(refresh_ttl=60, cluster_label="broker_fleet")
    fleet.apply([Alert()], received_at=NOW)
    assert fleet.clusters(NOW) == ("c1",) and fleet.nodes_hot("c1", NOW) == ("n1",)
    default = FiringSet(refresh_ttl=60)
    default.apply([Alert()], received_at=NOW)
    assert default.clusters(NOW) == ()  # neither broker_fleet nor the Kubernetes `cluster` is read
