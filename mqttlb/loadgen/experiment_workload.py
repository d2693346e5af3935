"""The experiment's built-in workload: gateway sites that alias with round robin, plus a steerable ramp.

* **Gateway sites** (``--sites``): each site opens three connections in order, one heavy telemetry
  uplink and two light QoS 1 control links, and the sites connect one after the other before any
  other client.  With 3 nodes, round robin's period equals the site's connection count, so every
  uplink lands on the same node: a few heavy publishers on one node, reproducibly.  Uplinks are
  fixed-line and stay connected (weights cannot move them).
* **Mobile gateways** (``--mobiles``): many light publishers that join a sixth of the way in, while
  the load is already unequal, and reconnect every 20-60 s.  This is the load a balancer can steer,
  one client per reconnect: the lighter each client, the finer the steering (60 gateways at 40 msg/s
  made the weighted loop overshoot and oscillate on some seeds; 180 at 10 msg/s did not).
* **Sensors**: QoS 1 delivery-checked clients that churn, a first wave at the start (after the
  sites) and a second wave a third of the way in.

Pure: builds a ``Workload``, no I/O.
"""

from __future__ import annotations

from typing import Any

from mqttlb.loadgen.workload import Profile, Workload, build_workload

SITE_GAP_S = 0.2  # between two sites' connects; far above the 10 ms connect spacing at 100 connects/s
LINK_DELAY_S = 0.05  # a site's links connect just after its uplink, so the order is uplink, link, link
LINKS_PER_SITE = 2


def _profile(**fields: Any) -> Profile:
    return Profile.model_validate(fields)


def site_profiles(sites: int, uplink_rate: float) -> list[Profile]:
    profiles: list[Profile] = []
    for k in range(sites):
        start = round(k * SITE_GAP_S, 3)
        profiles.append(_profile(name=f"uplink{k}", count=1, rate=uplink_rate, size=128, qos=0, start=start))
        profiles.append(
            _profile(
                name=f"link{k}",
                count=LINKS_PER_SITE,
                rate=1,
                size=64,
                qos=1,
                start=round(start + LINK_DELAY_S, 3),
            )
        )
    return profiles


def _sensor_wave(name: str, count: int, session: dict[str, Any], start: float) -> Profile:
    """Light QoS 1 delivery-checked sensors that churn; the workload has two such waves."""
    return _profile(
        name=name, count=count, rate=0.5, size=64, qos=1, session=session, start=round(start, 1)
    )


def experiment_workload(
    port: int,
    duration: float,
    seed: int,
    *,
    sites: int,
    uplink_rate: float,
    mobiles: int,
    mobile_rate: float,
    sensors: int,
) -> Workload:
    sites_done = sites * SITE_GAP_S + 1.0
    sensor_session = {"kind": "exp", "a": max(duration / 8, 2.0)}
    profiles = site_profiles(sites, uplink_rate)
    profiles += [
        _profile(
            name="mobile",
            count=mobiles,
            rate=mobile_rate,
            size=128,
            qos=0,
            session={"kind": "uniform", "a": 20.0, "b": 60.0},
            pause=1.0,
            start=round(max(duration / 6, sites_done), 1),
        ),
        _sensor_wave("sensor", sensors, sensor_session, start=sites_done),
        _sensor_wave("late", sensors, sensor_session, start=max(duration / 3, sites_done)),
    ]
    return build_workload(
        profiles,
        port=port,
        duration=duration,
        seed=seed,
        connect_rate=100,
        client_prefix="exp",
        progress_interval=max(5.0, duration / 12),
    )


def describe_sites(sites: int, uplink_rate: float) -> str:
    """One line for the report instead of the 2 x sites profile lines."""
    return (
        f"- {sites} gateway site(s), connecting one after the other at the start; each opens, in order, "
        f"1 uplink ({uplink_rate:g} msg/s, 128 B, qos 0, stays connected) and {LINKS_PER_SITE} links "
        "(1 msg/s, 64 B, qos 1, delivery-checked, stay connected)"
    )
