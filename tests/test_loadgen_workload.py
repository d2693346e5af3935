"""Profile specs, YAML workloads, churn distributions and seeding of the load generator."""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest

from mqttlb.loadgen.engine import client_name, client_rng
from mqttlb.loadgen.workload import Churn, WorkloadError, build_workload, load_workload_yaml, parse_profile


def test_profile_spec_with_every_option() -> None:
    p = parse_profile("heavy:4:rate=500,size=256,qos=0,session=uniform:10:60,start=5,pause=1,topic=a/b")
    assert (p.name, p.count, p.role, p.rate, p.size, p.qos) == ("heavy", 4, "pub", 500.0, 256, 0)
    assert p.session == Churn(kind="uniform", a=10, b=60)
    assert (p.start, p.pause, p.topic) == (5.0, 1.0, "a/b")
    assert not p.checks_delivery


def test_qos1_publishers_check_delivery_by_default_and_echo_overrides() -> None:
    assert parse_profile("sensor:200:rate=0.2,qos=1").checks_delivery
    assert not parse_profile("sensor:200:rate=0.2,qos=1,echo=false").checks_delivery
    assert parse_profile("q0:1:qos=0,echo=true").checks_delivery


def test_profile_named_sub_is_a_subscriber() -> None:
    p = parse_profile("sub:2")
    assert (p.role, p.count, p.checks_delivery) == ("sub", 2, False)
    assert parse_profile("listeners:3:role=sub,qos=1").role == "sub"


@pytest.mark.parametrize(
    ("parse", "text", "fragment"),
    [
        (parse_profile, "heavy", "NAME:COUNT"),
        (parse_profile, "heavy:x", "COUNT must be an integer"),
        (parse_profile, "heavy:0", "count"),
        (parse_profile, "heavy:1:qos=2", "qos must be 0 or 1"),
        (parse_profile, "heavy:1:rate=-1", "rate"),
        (parse_profile, "heavy:1:rate=fast", "rate"),
        (parse_profile, "heavy:1:colour=red", "bad option"),
        (parse_profile, "heavy:1:rate", "bad option"),
        (parse_profile, "heavy:1:session=gauss:3", "kind"),
        (parse_profile, "heavy:1:session=uniform:9:3", "high >= low"),
        (parse_profile, "heavy:1:session=exp:0", "greater than 0"),
        (parse_profile, "heavy:1:topic=a/#", "wildcards"),
        (parse_profile, "9lives:1", "name"),
        (parse_profile, "sub:1:echo=true", "publishers only"),
        (load_workload_yaml, "[1, 2", "not valid YAML"),
        (load_workload_yaml, "- a", "mapping"),
        (load_workload_yaml, "duration: 3", "profiles"),
        (load_workload_yaml, "duration: 3\nprofiles: [7]", "profiles\\[0\\]"),
        (load_workload_yaml, "duration: 3\nprofiles: [{name: a, count: 1, bogus: 1}]", "bogus"),
        (load_workload_yaml, "duration: 3\nprofiles: ['a:1:rate=1']\nhost: example.com", "not loopback"),
        (load_workload_yaml, "duration: 3\nprofiles: ['a:1:rate=1']\nunknown: 1", "unknown"),
    ],
)
def test_bad_profile_specs_and_yaml_workloads_are_refused_with_a_reason(
    parse: Callable[[str], object], text: str, fragment: str
) -> None:
    with pytest.raises(WorkloadError, match=fragment):
        parse(text)


def test_workload_refuses_remote_hosts_unless_allowed() -> None:
    profiles = [parse_profile("a:1:rate=1")]
    with pytest.raises(WorkloadError, match="not loopback"):
        build_workload(profiles, host="10.1.2.3", duration=1)
    assert build_workload(profiles, host="10.1.2.3", duration=1, allow_remote=True).host == "10.1.2.3"
    for host in ("127.0.0.1", "127.5.5.5", "localhost", "::1"):
        assert build_workload(profiles, host=host, duration=1).host == host


def test_workload_needs_a_positive_bounded_duration_and_unique_names() -> None:
    profiles = [parse_profile("a:1:rate=1")]
    with pytest.raises(WorkloadError, match="duration"):
        build_workload(profiles)
    with pytest.raises(WorkloadError, match="duration"):
        build_workload(profiles, duration=0)
    with pytest.raises(WorkloadError, match="unique"):
        build_workload([parse_profile("a:1:rate=1"), parse_profile("a:2:rate=1")], duration=1)
    with pytest.raises(WorkloadError, match="at most"):
        build_workload([parse_profile("a:40000:rate=1"), parse_profile("b:20000:rate=1")], duration=1)


def test_yaml_workload_with_mappings_and_spec_strings_and_overrides() -> None:
    text = """
duration: 30
seed: 7
connect_rate: 100
profiles:
  - {name: heavy, count: 2, rate: 500, size: 256}
  - {name: sensor, count: 50, rate: 0.2, qos: 1, session: "exp:30"}
  - "sub:1"
"""
    w = load_workload_yaml(text, {"port": 11883, "seed": 9})
    assert (w.duration, w.seed, w.port, w.connect_rate, w.total_clients) == (30, 9, 11883, 100, 53)
    assert w.profiles[1].session == Churn(kind="exp", a=30)
    assert w.profiles[2].role == "sub"
    assert "heavy: 2 publisher(s) x 500 msg/s" in w.describe()


def test_churn_distributions_draw_within_their_bounds() -> None:
    rng = random.Random(1)
    assert Churn.parse("fixed:4").draw(rng) == 4
    uniform = [Churn.parse("uniform:2:3").draw(rng) for _ in range(500)]
    assert min(uniform) >= 2 and max(uniform) <= 3
    exp = [Churn.parse("exp:10").draw(rng) for _ in range(4000)]
    assert 9 < sum(exp) / len(exp) < 11 and min(exp) >= 0
    for bad in ("", "exp", "exp:a", "exp:1:2:3", "fixed:inf"):
        with pytest.raises(WorkloadError):
            Churn.parse(bad)


def test_same_seed_same_client_gives_the_same_session_lengths() -> None:
    w1 = build_workload([parse_profile("s:3:rate=1,session=exp:30")], duration=1, seed=42)
    w2 = w1.model_copy(update={"seed": 43})
    churn = w1.profiles[0].session
    assert churn is not None
    cid = client_name(w1, w1.profiles[0], 2)
    assert cid == "lg-s-2"

    def draws(rng: random.Random) -> list[float]:
        return [churn.draw(rng) for _ in range(5)]

    assert draws(client_rng(w1, cid)) == draws(client_rng(w1, cid))
    assert draws(client_rng(w1, cid)) != draws(client_rng(w2, cid))
    assert draws(client_rng(w1, cid)) != draws(client_rng(w1, client_name(w1, w1.profiles[0], 1)))
