"""The scenarios' workloads, pure: build a :class:`~mqttlb.loadgen.workload.Workload`, no I/O.

* **restart pile-up** (issue 14): long-lived publishers and QoS 1 sensors, no churn; they stay where
  they are until something moves them.
* **heterogeneous**: a few heavy publishers scattered among many light ones in connect order (the
  seed picks where), no churn; a balancer that counts connections cannot see which node got them.
"""

from __future__ import annotations

import random
from typing import Any

from mqttlb.loadgen.workload import Profile, Workload, build_workload

LIGHT_CHUNKS = 12  # the light publishers connect in this many groups spread over the ramp


def _profile(**fields: Any) -> Profile:
    return Profile.model_validate(fields)


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


def heterogeneous_workload(
    port: int,
    duration: float,
    seed: int,
    *,
    heavies: int,
    heavy_rate: float,
    lights: int,
    light_rate: float,
    ramp: float,
) -> Workload:
    """``lights`` light QoS 0 publishers at ``light_rate`` msg/s connecting in :data:`LIGHT_CHUNKS` groups
    over ``ramp`` seconds, and ``heavies`` heavy publishers at ``heavy_rate`` msg/s connecting between two
    groups (:func:`heavy_starts`); nobody disconnects by itself.  Raises WorkloadError."""
    per_chunk, extra = divmod(lights, LIGHT_CHUNKS)
    profiles = [
        _profile(name=f"light{k}", count=per_chunk + (1 if k < extra else 0), rate=light_rate, size=64, qos=0,
                 start=round(k * ramp / LIGHT_CHUNKS, 3))
        for k in range(LIGHT_CHUNKS)
        if per_chunk + (1 if k < extra else 0) > 0
    ]
    profiles += [
        _profile(name=f"heavy{i}", count=1, rate=heavy_rate, size=64, qos=0, start=start)
        for i, start in enumerate(heavy_starts(seed, heavies, ramp))
    ]
    return build_workload(profiles, port=port, duration=duration, seed=seed, connect_rate=500.0)
