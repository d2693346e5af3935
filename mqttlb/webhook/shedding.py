"""Shed-level state machine: limit *new* connections when the whole cluster is hot, lift stepwise.

Pure: the caller supplies the active upstream connection count and applies the resulting plan.

Levels (``f`` = ``policy.shed_levels``, e.g. [0.8, 0.6, 0.4]; ``anchor`` = Envoy's active upstream
connections when shedding started):

* 0: no limit.
* 1: hold — circuit-breaker cap = anchor.  Envoy's cap counts *all* upstream connections, so a cap
  at the current count stops growth: clients that leave can be replaced, nobody else gets in.
* 2 .. len(f)+1: cap = ceil(anchor * f[k-2]).  Below the active count no new connection is
  admitted until churn brings the count under the cap; existing sessions are never closed.
* len(f)+2: hard stop — the overload manager's injected resource is set above its threshold, so
  the listener rejects every new connection (immediate EOF); the last cap stays in place.

The controller escalates one level per step interval while a shed alert fires, and relaxes one
level per step interval once none fires, so both directions are gradual.  The anchor is
:func:`cap_basis`: never below ``shed_min_connections``.

``fractions`` are trusted: :class:`mqttlb.params.PolicyParams` checked them at load (at least one,
each in (0, 1), strictly decreasing).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from mqttlb.commandline import plural

# Envoy's reject_incoming_connections trigger on the injected pressure file (the stack's bootstrap,
# mqttlb.stack.builders); the hard stop writes a pressure above it.
OVERLOAD_THRESHOLD = 0.9
OVERLOAD_ON = "0.95"
OVERLOAD_OFF = "0"


@dataclass(frozen=True)
class ShedState:
    level: int = 0
    anchor: int | None = None  # active upstream connections when level 1 was entered


@dataclass(frozen=True)
class ShedPlan:
    level: int
    max_connections: int | None  # None = remove the runtime override
    hard_stop: bool
    reason: str


def max_level(fractions: Sequence[float]) -> int:
    return len(fractions) + 2


def plan_for(state: ShedState, fractions: Sequence[float]) -> ShedPlan:
    """What Envoy should look like at ``state.level``."""
    top = max_level(fractions)
    level = state.level
    if not 0 <= level <= top:
        raise ValueError(f"shed level {level} outside 0..{top}")
    if level == 0:
        return ShedPlan(0, None, False, "no shedding")
    anchor = max(1, state.anchor or 0)
    if level == 1:
        return ShedPlan(1, anchor, False, f"hold: cap at {plural(anchor, 'connection')} (the basis when it began)")
    index = min(level - 2, len(fractions) - 1)
    cap = max(1, math.ceil(anchor * fractions[index]))
    if level == top:
        return ShedPlan(level, cap, True, f"hard stop: reject all new connections (cap {cap} kept)")
    return ShedPlan(level, cap, False, f"cap at {fractions[index]:.0%} of {anchor}: {plural(cap, 'connection')}")


def cap_basis(active_connections: int | None, cluster_connections: float | None, floor: int) -> int:
    """The connection count shed caps are fractions of: the larger of what Envoy holds open now and
    what the brokers report (Envoy's own count restarts at 0 with Envoy), never below ``floor``."""
    seen = [int(c) for c in (active_connections, cluster_connections) if c is not None and c >= 0]
    return max([floor, *seen])


def escalate(state: ShedState, active_connections: int, fractions: Sequence[float]) -> ShedState:
    """One level stricter (stays at the top level)."""
    if active_connections < 0:
        raise ValueError("active connection count cannot be negative")
    if state.level == 0:
        return ShedState(level=1, anchor=active_connections)
    return ShedState(level=min(state.level + 1, max_level(fractions)), anchor=state.anchor)


def relax(state: ShedState) -> ShedState:
    """One level looser; the anchor is forgotten when shedding ends."""
    if state.level <= 1:
        return ShedState()
    return ShedState(level=state.level - 1, anchor=state.anchor)
