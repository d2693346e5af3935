"""The evict lever's policy, pure: when to evict, from which donors, to which recipients, and whom.

No I/O and no clock: the controller passes the observation, the state and ``now``; the lever
(``mqttlb.webhook.evict_lever``) lists the donors' clients and carries the batches out.

* **Spread.**  Over the nodes that take part (a fresh CPU sample, not down, not draining): the mean CPU
  and each node's deviation from it; the **max squared deviation** is the imbalance alert's measure
  (``MqttClusterImbalanced``).
* **Episode (automatic trigger).**  The cluster is *imbalanced* while a rebalance alert fires or the
  imbalance alert's own condition holds on the observation (max squared deviation above
  ``imbalance_max_squared_deviation`` at a mean of at least ``imbalance_min_mean``).  A window opens
  at the first imbalanced pass with the spread at that moment as its mark; if the spread falls to
  ``(1 - min_improvement) x mark`` the weights are working and the window restarts from there.  After
  ``after`` seconds without that, the episode is **armed**: eviction runs until no node is above the mean
  by more than ``spread_target`` (no donor is left; a node below the mean alone has nobody to take
  clients from).  It arms sooner, after ``idle_after``, when fewer clients have connected
  through Envoy since the window opened than the donors' surplus amounts to in clients
  (:func:`clients_to_move`): weights steer only new connections, and with so few of them they cannot
  even the load (a node back from a restart beside long-lived clients; clients that never reconnect).
  An operator request (rebalance now) arms it at once.
* **Donors and recipients** (EMQX's terms).  Donors: above the mean by more than ``spread_target``,
  out of cooldown; their **surplus** is ``cpu - mean``.  Recipients: below the mean.  Without a
  recipient, or while a donor's share of the next new connections is not below the recipients' mean
  share, or while the recipients together would take less than ``min_recipient_share`` of the new
  connections and less than the policy's own target weights would give them, within
  :data:`LANDING_TOLERANCE`, or while they would take half of them or less (:data:`MIN_LANDING`) (the
  weights must favour the recipients first, so the evicted clients land there and are not disconnected
  for nothing; targets that give less than ``min_recipient_share`` are as far as the weights will go),
  nothing is evicted.
  Shares, not raw weights: under LEAST_REQUEST an empty node with a low weight still takes most new
  connections, since Envoy divides each weight by the node's active connections + 1
  (``policy.new_connection_shares``).
* **Victims.**  Each client's CPU share is the node's CPU times its share of the node's inbound
  messages.  Clients are taken lightest-first-that-fits from the heaviest down, so their load adds up
  to the surplus without passing it: a client heavier than the whole surplus is never taken (moving
  it would only move the hot spot).  Persistent sessions stay on independent brokers unless allowed;
  mqttlb's own clients (health check, eviction control) are never taken.  Bounds: at most
  ``max_fraction`` of the node's clients and ``max_per_second x batch_seconds`` per batch.
* **Evacuation** (operator request): every evictable client of the node, batch by batch.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from mqttlb import contract
from mqttlb.brokers.eviction import ClientLoad
from mqttlb.params import MIN_LANDING, EvictionParams, Params, duration_seconds

OWN_CLIENT_IDS = frozenset({contract.HEALTH_CHECK_CLIENT_ID, contract.EVICTION_CONTROL_CLIENT_ID})
# How far (share of the new connections, 0..1) the recipients' share may stay below what the policy's target
# weights give them: the weights stop within the policy's hysteresis of their targets and move with the CPU's
# noise, so they rarely give exactly the targets' share (a restart run waited ~130 s at 79 % against 80 %).
LANDING_TOLERANCE = 0.05


@dataclass(frozen=True)
class EvictionSettings:
    """Everything the eviction decision needs besides the state: the lever's parameters, the imbalance
    alert's condition (``Params.imbalance_max_squared_deviation``, ``imbalance_min_mean``) and the
    seconds derived from them: ``after``, per-node ``cooldown`` (the step interval unless set) and the
    time one batch may take (``batch``, one pass, so the loop stays responsive)."""

    params: EvictionParams
    imbalance_max_squared_deviation: float
    imbalance_min_mean: float
    after_seconds: float
    cooldown_seconds: float
    batch_seconds: float


def eviction_settings(params: Params, step_seconds: float, pass_seconds: float) -> EvictionSettings:
    """:class:`EvictionSettings` from the parameters and the loop's cadence (seconds)."""
    ev = params.eviction
    return EvictionSettings(
        params=ev,
        imbalance_max_squared_deviation=params.imbalance_max_squared_deviation,
        imbalance_min_mean=params.imbalance_min_mean,
        after_seconds=duration_seconds(ev.after),
        cooldown_seconds=step_seconds if ev.cooldown_seconds is None else ev.cooldown_seconds,
        batch_seconds=pass_seconds,
    )


def imbalanced(spread: Spread | None, settings: EvictionSettings) -> bool:
    """The imbalance alert's own condition on ``spread``: max squared deviation above the threshold at a
    mean of at least ``imbalance_min_mean`` (see ``mqttlb.rulegen``, ``MqttClusterImbalanced``)."""
    return (
        spread is not None
        and spread.mean >= settings.imbalance_min_mean
        and spread.max_squared_deviation > settings.imbalance_max_squared_deviation
    )


@dataclass(frozen=True)
class Spread:
    """The CPU spread of the nodes that take part: ``mean`` (0..1), ``deviations`` (cpu - mean by node),
    ``max_squared_deviation`` (the imbalance alert's measure)."""

    mean: float
    deviations: Mapping[str, float]

    @property
    def max_squared_deviation(self) -> float:
        return max((d * d for d in self.deviations.values()), default=0.0)

    @property
    def max_abs_deviation(self) -> float:
        return max((abs(d) for d in self.deviations.values()), default=0.0)

    @property
    def max_surplus(self) -> float:
        """The largest CPU above the mean (utilisation; 0 when none is above): a donor needs more than
        ``spread_target``."""
        return max((d for d in self.deviations.values()), default=0.0)


def spread_of(cpu: Mapping[str, float]) -> Spread | None:
    """The spread of ``cpu`` (node -> utilisation; non-finite values are left out); None for < 2 nodes."""
    finite = {n: c for n, c in cpu.items() if math.isfinite(c)}
    if len(finite) < 2:
        return None
    mean = sum(finite.values()) / len(finite)
    return Spread(mean, {n: c - mean for n, c in finite.items()})


@dataclass(frozen=True)
class Episode:
    """The automatic trigger's bookkeeping (persisted in the controller state).

    ``since``: start of the current window (None: not imbalanced); ``mark``: the max squared deviation
    at its start; ``armed``: evicting until no node is above the mean by more than ``spread_target``;
    ``reason``: why;
    ``connects_mark``: Envoy's connections opened to the cluster so far, at the window's start (None:
    unknown)."""

    since: float | None = None
    mark: float | None = None
    armed: bool = False
    reason: str = ""
    connects_mark: float | None = None


@dataclass(frozen=True)
class Placement:
    """What the weights have had to work with since the window opened: ``connects_total``, Envoy's
    connections opened to the cluster so far (``cx_total`` summed over its hosts; None = unknown), and
    ``clients_to_move`` (:func:`clients_to_move`; None = unknown)."""

    connects_total: float | None = None
    clients_to_move: float | None = None


def clients_to_move(spread: Spread | None, connections: Mapping[str, float], spread_target: float) -> float | None:
    """About how many clients the donors hold beyond the mean load: each donor's surplus (CPU above the
    mean by more than ``spread_target``, utilisation) over the cluster's CPU per connection (sum of CPU over
    sum of ``connections`` of the nodes in ``spread``).  None when a node's count is unknown or there are
    no connections.  An estimate of the mean client: enough to tell tens from hundreds."""
    if spread is None or any(n not in connections for n in spread.deviations):
        return None
    total = sum(connections[n] for n in spread.deviations)
    used = sum(spread.mean + d for d in spread.deviations.values())
    if total <= 0 or used <= 0:
        return None
    per_client = used / total
    return sum(d / per_client for d in spread.deviations.values() if d > spread_target)


def next_episode(
    episode: Episode,
    spread: Spread | None,
    *,
    imbalanced: bool,
    requested: bool,
    params: EvictionParams,
    after_seconds: float,
    now: float,
    placement: Placement | None = None,
) -> Episode:
    """The episode after one pass.  ``imbalanced``: a rebalance alert fires or the imbalance condition
    holds; ``requested``: the operator asked to rebalance now (arms at once); ``placement``: the
    connections the weights could place (None: unknown, so only ``after`` arms)."""
    if spread is None:
        return Episode()
    no_donor = spread.max_surplus <= params.spread_target
    if episode.armed or requested:
        if no_donor:  # nothing left to evict from (a node below the mean alone cannot be helped by evicting)
            return Episode()
        reason = "operator request" if requested and not episode.armed else episode.reason
        return Episode(episode.since or now, episode.mark, True, reason, episode.connects_mark)
    if not imbalanced:
        return Episode()
    msd = spread.max_squared_deviation
    connects = placement.connects_total if placement else None
    if episode.since is None or episode.mark is None or msd <= (1 - params.min_improvement) * episode.mark:
        return Episode(now, msd, False, "", connects)
    elapsed = now - episode.since
    if elapsed >= after_seconds:
        return Episode(
            episode.since,
            episode.mark,
            True,
            f"imbalanced for {elapsed:.0f}s and the weights did not reduce the max squared "
            f"deviation by {params.min_improvement:g} ({episode.mark:.3f} -> {msd:.3f})",
            episode.connects_mark,
        )
    idle = _too_few_connects(episode, placement, elapsed, duration_seconds(params.idle_after))
    if idle is not None:
        return Episode(episode.since, episode.mark, True, idle, episode.connects_mark)
    if connects is not None and episode.connects_mark is not None and connects < episode.connects_mark:
        return Episode(episode.since, episode.mark, False, "", connects)  # Envoy restarted: count from here
    return episode


def _too_few_connects(episode: Episode, placement: Placement | None, elapsed: float, idle_after: float) -> str | None:
    """Why the weights have too little to steer (the reason to arm early), or None."""
    if placement is None or placement.connects_total is None or placement.clients_to_move is None:
        return None
    if episode.connects_mark is None or elapsed < idle_after:
        return None
    placed = placement.connects_total - episode.connects_mark
    if placed < 0 or placed >= placement.clients_to_move:
        return None
    return (
        f"only {placed:.0f} clients connected through Envoy in {elapsed:.0f}s against about "
        f"{placement.clients_to_move:.0f} to move: the weights have too little to steer"
    )


@dataclass(frozen=True)
class Donor:
    """A node to evict from: its CPU, its surplus over the mean (utilisation), its weight."""

    node: str
    cpu: float
    surplus: float
    weight: int


@dataclass(frozen=True)
class EvictionIntent:
    """What the lever should do this pass: ``donors`` (by surplus, largest first) and ``evacuate`` (nodes
    to empty), the ``recipients`` and ``room``, the largest recipient's deficit below the mean
    (utilisation); ``waiting``: why nothing is evicted now (None when something is)."""

    donors: tuple[Donor, ...] = ()
    recipients: tuple[str, ...] = ()
    room: float = 0.0
    evacuate: tuple[str, ...] = ()
    reason: str = ""
    waiting: str | None = None

    @property
    def acts(self) -> bool:
        return bool(self.donors or self.evacuate)


def intent(
    spread: Spread | None,
    cpu: Mapping[str, float],
    weights: Mapping[str, int],
    *,
    shares: Mapping[str, float],
    armed: bool,
    reason: str,
    evacuating: Iterable[str],
    last_eviction: Mapping[str, float],
    cooldown_seconds: float,
    params: EvictionParams,
    now: float,
    weights_first: bool = True,
    target_shares: Mapping[str, float] | None = None,
) -> EvictionIntent:
    """The donors and recipients of this pass.  ``cpu``: the nodes that take part (see :func:`spread_of`);
    ``weights``: Envoy's weights (recorded with each donor); ``shares``: node -> the share (0..1) of the
    next new connections those weights give under Envoy's base policy (``policy.new_connection_shares``),
    which decides whether the weights favour the recipients.  ``weights_first`` False skips that check
    (a dry-run preview: the real run steers first).  ``target_shares``: node -> the share the policy's
    target weights would give (None: unknown); the recipients' share is waited for up to
    ``min_recipient_share`` or that target's share less :data:`LANDING_TOLERANCE`, whichever is lower:
    without the target an imbalance whose weights settle below ``min_recipient_share`` would wait forever.
    While Envoy sheds, the caller does not ask (:func:`shed_waiting`)."""
    evacuate = tuple(sorted(evacuating))
    if not armed or spread is None:
        return EvictionIntent(evacuate=evacuate, reason="evacuation" if evacuate else "")
    recipients = tuple(sorted(n for n, d in spread.deviations.items() if d < 0))
    above = [n for n, d in spread.deviations.items() if d > params.spread_target]
    ready = [n for n in above if now - last_eviction.get(n, -math.inf) >= cooldown_seconds]
    waiting = None
    if not recipients:
        waiting = "no recipient below the mean"
    elif not above:
        waiting = "no donor above the mean by more than spread_target"
    elif not ready:
        waiting = f"donors {', '.join(sorted(above))} in cooldown"
    elif weights_first:
        waiting = _landing_wait(ready, recipients, shares, target_shares, params)
    if waiting is not None:
        return EvictionIntent(recipients=recipients, evacuate=evacuate, reason=reason, waiting=waiting)
    donors = tuple(
        sorted(
            (Donor(n, cpu[n], spread.deviations[n], weights[n]) for n in ready),
            key=lambda d: (-d.surplus, d.node),
        )
    )
    room = max(-spread.deviations[r] for r in recipients)
    return EvictionIntent(donors, recipients, room, evacuate, reason)


def shed_waiting(level: int) -> str | None:
    """Why nothing is evicted, evacuations included, at shed ``level`` (None at 0: nothing to wait for).  Above
    0, Envoy's cap holds the connection count (level 1) or goes below it, or the listener refuses every new
    connection (the hard stop), so an evicted client may find no way back in (a 2026-12-01 heterogeneous
    benchmark run, seed 2, evicted at a shed level and about 10 clients failed 467 reconnects, "closed before
    CONNACK", until the run ended)."""
    if level <= 0:
        return None
    return (f"new connections are being shed (level {level}): an evicted client might not get back in; "
            "eviction resumes once shedding lifts")


def _total_share(shares: Mapping[str, float], nodes: Sequence[str]) -> float:
    """The share (0..1) of the new connections ``nodes`` take together; a node missing from ``shares`` takes none."""
    return sum(shares.get(n, 0.0) for n in nodes)


def _landing_wait(
    ready: Sequence[str],
    recipients: Sequence[str],
    shares: Mapping[str, float],
    target_shares: Mapping[str, float] | None,
    params: EvictionParams,
) -> str | None:
    """Why the evicted clients would not land on the ``recipients`` yet (see :func:`intent`), or None."""
    recipient_share = _total_share(shares, recipients) / len(recipients)
    unfavoured = sorted(n for n in ready if shares[n] >= recipient_share)
    if unfavoured:
        return _unfavoured_reason(unfavoured, recipients, target_shares)
    landing = _total_share(shares, recipients)
    aim = landing_aim(recipients, target_shares, params)
    if landing < aim:
        return (f"weights do not favour the recipients enough yet: they would take {landing:.0%} of the new "
                f"connections, at least {aim:.0%} wanted")
    return None


def _unfavoured_reason(
    unfavoured: Sequence[str], recipients: Sequence[str], target_shares: Mapping[str, float] | None
) -> str:
    """Why the lever waits on donors whose share of the new connections is not below the recipients' mean:
    "yet" while the policy's target weights would change that, else that they cannot (under least request a
    donor holding few connections keeps a large share even at ``min_weight``; its evicted clients would
    come back to it)."""
    names = ", ".join(unfavoured)
    if target_shares:
        mean = _total_share(target_shares, recipients) / len(recipients)
        stuck = [n for n in unfavoured if target_shares.get(n, 0.0) >= mean]
        if stuck:
            return (f"weights cannot favour the recipients over {', '.join(stuck)}: even at their targets "
                    f"{stuck[0]} would take {target_shares.get(stuck[0], 0.0):.0%} of the new connections against "
                    f"the recipients' {mean:.0%} each, so its evicted clients would come back to it")
    return f"weights do not favour the recipients over {names} yet"


def landing_aim(
    recipients: Sequence[str], target_shares: Mapping[str, float] | None, params: EvictionParams
) -> float:
    """The share (0..1) of the new connections the recipients together must take before a batch:
    ``min_recipient_share``, or less when the policy's target weights give them less (``target_shares``:
    node -> share under those weights; their recipients' sum less :data:`LANDING_TOLERANCE`), but never
    :data:`MIN_LANDING` or less (more than half of the evicted clients must land on the recipients)."""
    if not target_shares:
        return params.min_recipient_share
    target = _total_share(target_shares, recipients)
    return max(min(params.min_recipient_share, target - LANDING_TOLERANCE), MIN_LANDING + 1e-9)


@dataclass(frozen=True)
class VictimChoice:
    """The clients to evict from one node: ``clients`` (ids), the CPU they carry (``load``, utilisation),
    the ``bound`` that capped the count, how many clients could be evicted at all (``eligible``), and how
    many were passed over and why."""

    clients: tuple[str, ...]
    load: float
    bound: int
    eligible: int = 0
    skipped_persistent: int = 0
    skipped_heavy: int = 0


def batch_bound(client_count: int, params: EvictionParams, batch_seconds: float, *, evacuating: bool) -> int:
    """Most clients one batch may take from a node of ``client_count`` clients: ``max_per_second x
    batch_seconds`` (at least 1), and for a rebalance also ``max_fraction`` of its clients (at least 1)."""
    by_rate = max(1, math.floor(params.max_per_second * batch_seconds))
    if evacuating:
        return by_rate
    return min(by_rate, max(1, math.floor(params.max_fraction * client_count)))


def _eligible(
    clients: Sequence[ClientLoad], *, shared_sessions: bool, allow_persistent: bool
) -> tuple[list[ClientLoad], int]:
    own = [c for c in clients if c.client_id not in OWN_CLIENT_IDS]
    keep_persistent = not (shared_sessions or allow_persistent)
    eligible = [c for c in own if not (keep_persistent and c.persistent)]
    return eligible, len(own) - len(eligible)


def choose_victims(
    node_cpu: float,
    surplus: float,
    clients: Sequence[ClientLoad],
    *,
    room: float,
    shared_sessions: bool,
    params: EvictionParams,
    batch_seconds: float,
) -> VictimChoice:
    """Clients of a donor whose load adds up to at most ``surplus`` (utilisation), within the bounds.

    A client's load is ``node_cpu x its messages_in_per_s / the node's total``; clients without inbound
    messages carry none and are not taken (they would move no CPU).  A client heavier than ``surplus``
    or than ``room`` (the largest recipient's deficit below the mean) is never taken: it would only move
    the hot spot."""
    eligible, skipped_persistent = _eligible(
        clients, shared_sessions=shared_sessions, allow_persistent=params.allow_persistent
    )
    bound = batch_bound(len(clients), params, batch_seconds, evacuating=False)
    total_rate = sum(c.messages_in_per_s for c in clients if c.client_id not in OWN_CLIENT_IDS)
    if total_rate <= 0 or surplus <= 0:
        return VictimChoice((), 0.0, bound, len(eligible), skipped_persistent)
    loads = sorted(
        ((node_cpu * c.messages_in_per_s / total_rate, c.client_id) for c in eligible if c.messages_in_per_s > 0),
        key=lambda item: (-item[0], item[1]),
    )
    chosen: list[str] = []
    moved = 0.0
    heavy = 0
    heaviest = min(surplus, room)
    for load, client_id in loads:
        if len(chosen) >= bound:
            break
        if load <= 0:  # carries no measurable CPU: moving it moves nothing
            continue
        if load > heaviest:
            heavy += 1
            continue
        if moved + load > surplus + 1e-9:  # a rounding must not drop the last client that fits
            continue
        chosen.append(client_id)
        moved += load
    return VictimChoice(tuple(chosen), moved, bound, len(eligible), skipped_persistent, heavy)


def evacuation_victims(
    clients: Sequence[ClientLoad], *, shared_sessions: bool, params: EvictionParams, batch_seconds: float
) -> VictimChoice:
    """The next batch of an evacuation: every evictable client, heaviest first, within the rate bound."""
    eligible, skipped_persistent = _eligible(
        clients, shared_sessions=shared_sessions, allow_persistent=params.allow_persistent
    )
    bound = batch_bound(len(clients), params, batch_seconds, evacuating=True)
    ordered = sorted(eligible, key=lambda c: (-c.messages_in_per_s, c.client_id))[:bound]
    return VictimChoice(tuple(c.client_id for c in ordered), 0.0, bound, len(eligible), skipped_persistent)
