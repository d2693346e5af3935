"""The scenarios' workloads, pure: build a :class:`~mqttlb.loadgen.workload.Workload`, no I/O.

* **gateway sites**: gateway sites that alias with round robin, plus a steerable ramp.  Each site opens
  three connections in order, one heavy telemetry uplink and two light QoS 1 control links, and the sites
  connect one after the other before any other client.  With 3 nodes, round robin's period equals the
  site's connection count, so every uplink lands on the same node: a few heavy publishers on one node,
  reproducibly.  Uplinks are fixed-line and stay connected (weights cannot move them).  Mobile gateways,
  many light publishers, join a sixth of the way in, while the load is already unequal, and reconnect
  every 20-60 s: the load a balancer can steer, one client per reconnect; the lighter each client, the
  finer the steering (60 gateways at 40 msg/s made the weighted loop overshoot and oscillate on some
  seeds; 180 at 10 msg/s did not).  Sensors: QoS 1 delivery-checked clients that churn, a first wave at
  the start (after the sites) and a second wave a third of the way in.
* **restart pile-up** (issue 14): long-lived publishers and QoS 1 sensors, no churn; they stay where
  they are until something moves them.
* **heterogeneous**: a few heavy publishers scattered among many light ones in connect order (the
  seed picks where), no churn; a balancer that counts connections cannot see which node got them.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from mqttlb.loadgen.workload import Profile, Workload, build_workload

LIGHT_CHUNKS = 12  # the light publishers connect in this many groups spread over the ramp
SITE_GAP_S = 0.2  # between two sites' connects; far above the 10 ms connect spacing at 100 connects/s
LINK_DELAY_S = 0.05  # a site's links connect just after its uplink, so the order is uplink, link, link
LINKS_PER_SITE = 2


def _profile(**fields: Any) -> Profile:
    return Profile.model_validate(fields)


def site_profiles(sites: int, uplink_rate: float) -> list[Profile]:
    """Per site, in connect order: one uplink (``uplink_rate`` msg/s, 128 B, QoS 0) then
    :data:`LINKS_PER_SITE` links (1 msg/s, QoS 1); the sites :data:`SITE_GAP_S` apart."""
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


def gateway_sites_workload(
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
    """The gateway-sites load: ``sites`` sites first (:func:`site_profiles`), ``mobiles`` mobile gateways at
    ``mobile_rate`` msg/s from a sixth of the way in, reconnecting every 20-60 s, and two waves of ``sensors``
    churning QoS 1 sensors (after the sites and a third of the way in).  Raises WorkloadError."""
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


def restart_workload(
    port: int,
    duration: float,
    seed: int,
    *,
    publishers: int,
    publisher_rate: float,
    sensors: int,
    sensor_rate: float,
) -> Workload:
    """``publishers`` QoS 0 publishers at ``publisher_rate`` msg/s and ``sensors`` delivery-checked QoS 1
    sensors at ``sensor_rate`` msg/s, all connected from the start for the whole run.  After an unexpected
    disconnect (a node stops, an eviction) a client reconnects after its pause (0.5 s, or 0.5-1.5 s after
    a failed connect).  Raises WorkloadError."""
    profiles = [
        _profile(name="pub", count=publishers, rate=publisher_rate, size=64, qos=0),
        _profile(name="sensor", count=sensors, rate=sensor_rate, size=64, qos=1),
    ]
    return build_workload(profiles, port=port, duration=duration, seed=seed, connect_rate=200.0)


def heavy_starts(seed: int, heavies: int, ramp: float, chunks: int = LIGHT_CHUNKS) -> list[float]:
    """Seconds after the start at which each heavy publisher connects: each halfway between two light
    groups (which connect at k x ramp / chunks), the gaps drawn by ``seed`` (distinct while there are
    enough gaps)."""
    gap = ramp / chunks
    rng = random.Random(f"heterogeneous:{seed}")
    slots = rng.sample(range(chunks), heavies) if heavies <= chunks else [rng.randrange(chunks) for _ in range(heavies)]
    return sorted(round((slot + 0.5) * gap, 3) for slot in slots)


@dataclass(frozen=True)
class Mix:
    """Heavy publishers among light ones (the heterogeneous and flash-crowd workloads), all QoS 0 with
    64-byte payloads: ``heavies`` at ``heavy_rate`` msg/s, ``lights`` at ``light_rate`` msg/s."""

    heavies: int
    heavy_rate: float
    lights: int
    light_rate: float


def _heavy_profiles(seed: int, mix: Mix, ramp: float) -> list[Profile]:
    """The mix's heavy publishers, one profile each, starting at :func:`heavy_starts`."""
    return [
        _profile(name=f"heavy{i}", count=1, rate=mix.heavy_rate, size=64, qos=0, start=start)
        for i, start in enumerate(heavy_starts(seed, mix.heavies, ramp))
    ]


def heterogeneous_workload(port: int, duration: float, seed: int, *, mix: Mix, ramp: float) -> Workload:
    """The mix's light publishers connecting in :data:`LIGHT_CHUNKS` groups over ``ramp`` seconds, and its
    heavy publishers connecting between two groups (:func:`heavy_starts`); nobody disconnects by itself.
    Raises WorkloadError."""
    per_chunk, extra = divmod(mix.lights, LIGHT_CHUNKS)
    profiles = [
        _profile(name=f"light{k}", count=per_chunk + (1 if k < extra else 0), rate=mix.light_rate, size=64, qos=0,
                 start=round(k * ramp / LIGHT_CHUNKS, 3))
        for k in range(LIGHT_CHUNKS)
        if per_chunk + (1 if k < extra else 0) > 0
    ]
    profiles += _heavy_profiles(seed, mix, ramp)
    return build_workload(profiles, port=port, duration=duration, seed=seed, connect_rate=500.0)


def pareto_rates(seed: int, clients: int, mean_rate: float, alpha: float, cap: float) -> list[float]:
    """``clients`` message rates (msg/s, 2 decimals) drawn from a Pareto law with shape ``alpha`` (> 1) and
    scale ``mean_rate x (alpha - 1) / alpha`` (so the uncapped mean is ``mean_rate``), each capped at
    ``cap``; seeded by ``seed``.  ValueError for alpha <= 1 or a non-positive count, mean or cap."""
    if alpha <= 1 or clients < 1 or mean_rate <= 0 or cap <= 0:
        raise ValueError("pareto_rates needs alpha > 1 and positive clients, mean_rate and cap")
    rng = random.Random(f"pareto:{seed}")
    scale = mean_rate * (alpha - 1) / alpha
    return [round(min(cap, scale * rng.paretovariate(alpha)), 2) for _ in range(clients)]


def pareto_workload(
    port: int,
    duration: float,
    seed: int,
    *,
    clients: int,
    mean_rate: float,
    alpha: float,
    session: tuple[float, float],
    ramp: float,
) -> Workload:
    """``clients`` QoS 0 publishers alike but for their rates, Pareto-distributed (:func:`pareto_rates`, cap
    50 x the mean): a few carry much of the load.  They connect evenly over ``ramp`` seconds and reconnect
    after sessions uniform in ``session`` seconds, so each reconnect re-places one client.  Raises
    WorkloadError."""
    rates = pareto_rates(seed, clients, mean_rate, alpha, cap=50 * mean_rate)
    return reconnecting_publishers(port, duration, seed, rates=rates, session=session, ramp=ramp)


def reconnecting_publishers(
    port: int, duration: float, seed: int, *, rates: list[float], session: tuple[float, float], ramp: float
) -> Workload:
    """One QoS 0 publisher per entry of ``rates`` (msg/s), connecting evenly over ``ramp`` seconds and
    reconnecting after sessions uniform in ``session`` seconds.  Raises WorkloadError."""
    low, high = session
    profiles = [
        _profile(name=f"c{i}", count=1, rate=rate, size=64, qos=0, start=round(ramp * i / len(rates), 3),
                 session={"kind": "uniform", "a": low, "b": high})
        for i, rate in enumerate(rates)
    ]
    return build_workload(profiles, port=port, duration=duration, seed=seed, connect_rate=500.0,
                          client_prefix="par", progress_interval=max(5.0, duration / 12))


def flash_crowd_workload(
    port: int,
    duration: float,
    seed: int,
    *,
    mix: Mix,
    light_session: tuple[float, float],
    crowd_at: float,
    crowd_seconds: float,
    crowd_factor: float,
    crowd_rate: float,
) -> Workload:
    """A churning base (the mix's light publishers with sessions uniform in ``light_session`` seconds, and
    its long-lived heavy ones scattered among them as in :func:`heterogeneous_workload`), then a
    flash crowd: from ``crowd_at`` for ``crowd_seconds`` the connect rate is ``crowd_factor`` x the base's
    (``mix.lights / mean session``); the crowd's clients publish ``crowd_rate`` msg/s and stay.  The crowd
    connects in 10 groups, one every ``crowd_seconds / 10``.  Raises WorkloadError."""
    low, high = light_session
    base_rate = mix.lights / ((low + high) / 2)
    crowd = max(10, round((crowd_factor - 1) * base_rate * crowd_seconds))
    groups = 10
    per_group, extra = divmod(crowd, groups)
    ramp = 10.0
    profiles = [
        _profile(name="light", count=mix.lights, rate=mix.light_rate, size=64, qos=0,
                 session={"kind": "uniform", "a": low, "b": high}),
    ]
    profiles += _heavy_profiles(seed, mix, ramp)
    profiles += [
        _profile(name=f"crowd{k}", count=per_group + (1 if k < extra else 0), rate=crowd_rate, size=64, qos=0,
                 start=round(crowd_at + k * crowd_seconds / groups, 3))
        for k in range(groups)
    ]
    return build_workload(profiles, port=port, duration=duration, seed=seed, connect_rate=500.0,
                          client_prefix="fc", progress_interval=max(5.0, duration / 12))
