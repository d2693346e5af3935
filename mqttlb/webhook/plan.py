"""One reconcile pass, decided: desired state and observations in, the next controller state out.

Pure: no I/O, no clock (the caller passes ``now``).  The controller loop (``controller.py``) feeds
it the firing alerts (``firing.py``), one fresh observation of every node and the current state,
then persists, publishes and verifies whatever :func:`decide_pass` returns.

The rules, for one MQTT cluster:

* **Steer** (weighted CPU, ``policy.decide``) while a rebalance alert fires, or early, once a node's
  short-window CPU has stayed above ``cpu_high`` long and far enough: the excess over ``cpu_high`` is
  integrated over the episode (a CUSUM-style detector) and steering starts when it equals what
  ``early_steer_for`` at full utilisation would give, ``(1 - cpu_high) x early_steer_for`` -- and
  when the node is saturated now (short-window CPU at or above its configured cores) or its
  rate-window CPU is above ``cpu_high`` too (``MqttBrokerCpuHigh``'s condition without its
  ``for``).  A saturated node is steered from after ``early_steer_for``; a burst that barely
  crosses ``cpu_high``, or a few seconds' burst below saturation in an even cluster, does not move
  weights.
  (The alert's own ``for`` and Alertmanager's ``group_wait`` would add ~25 s.)  At most one weight
  change per step interval.
* **Recover** toward neutral only when *no* rebalance alert of the cluster fires and nothing steers
  early; weights are held while the CPU spread persists (``recover_max_spread``).
* **Shed** one level stricter per step interval while a shed alert fires; lift one level per step
  interval once none fires.  The cap's basis is never below ``shed_min_connections``.
* Nodes that are down (broker exporter ``up`` 0, or Envoy's health check failing) take no part:
  they keep their weight, and the policy balances the others.

Every pass returns one :class:`PassResult` with typed :class:`Step` outcomes; the audit log,
``/metrics`` and the experiment read those.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from mqttlb.contract import OutcomeKind
from mqttlb.params import Params, PolicyParams, duration_seconds, step_interval_seconds
from mqttlb.webhook import eviction_policy, policy, shedding
from mqttlb.webhook.eviction_policy import EvictionIntent, EvictionSettings
from mqttlb.webhook.policy import NodeSample
from mqttlb.webhook.state import WebhookState


@dataclass(frozen=True)
class Observation:
    """What one pass saw of the world, read fresh for *all* nodes.

    ``samples``: per-node CPU (rate window) and connections; ``fast_cpu``: per-node short-window
    CPU (0..1), for early steering; ``down``: nodes that cannot take connections now;
    ``active_connections``: Envoy's active upstream connections of the cluster (None = unknown);
    ``cluster_connections``: MQTT connections the brokers report (None = unknown);
    ``connects_total``: Envoy's upstream connections opened to the cluster so far (``cx_total`` summed over
    its hosts; None = unknown); ``connects_per_second``: the cluster's client connects/s over the rate
    window (``contract.CLUSTER_CONNECTS_RATE``; None = unknown).
    """

    samples: Mapping[str, NodeSample]
    fast_cpu: Mapping[str, float] = field(default_factory=dict)
    down: frozenset[str] = frozenset()
    active_connections: int | None = None
    cluster_connections: float | None = None
    connects_total: float | None = None
    connects_per_second: float | None = None


@dataclass(frozen=True)
class Desired:
    """The inputs that say what should happen: which alerts fire, and the operator's drains."""

    rebalance_firing: bool
    shed_firing: bool
    firing_alerts: tuple[str, ...] = ()  # alert names, for the reasons
    rebalance_requested: bool = False  # the operator asked to rebalance now (arms the evict lever)


@dataclass(frozen=True)
class Timing:
    """Cadence of the loop, derived from the measurement lag (:func:`timing_for`).

    ``step_seconds``: minimum time between two changes of one lever, so that the effect of a step
    is measured before the next; ``pass_seconds``: how often the loop looks (half a scrape
    interval, so a new sample is seen within half a scrape); ``early_steer_seconds``: how long a
    saturated node's short-window CPU must stay above ``cpu_high`` before steering starts without a
    firing alert (less saturated nodes need longer, see :func:`early_hot`); ``cpu_high``: that
    threshold (``Params.cpu_high``).
    """

    step_seconds: float
    pass_seconds: float
    early_steer_seconds: float
    cpu_high: float


def timing_for(params: Params, scrape_interval_seconds: float) -> Timing:
    """The loop's cadence for ``params`` and Prometheus' scrape interval (seconds)."""
    return Timing(
        step_seconds=step_interval_seconds(params, scrape_interval_seconds),
        pass_seconds=max(0.5, scrape_interval_seconds / 2),
        early_steer_seconds=duration_seconds(params.early_steer_for),
        cpu_high=params.cpu_high,
    )


SATURATED = 1.0  # utilisation of the node's configured cores at which it is saturated


def early_steer_excess(timing: Timing) -> float:
    """The integrated excess (utilisation x seconds) that starts early steering: ``early_steer_seconds``
    at full utilisation (1.0), i.e. ``(1 - cpu_high) x early_steer_seconds``."""
    return (1.0 - timing.cpu_high) * timing.early_steer_seconds


@dataclass(frozen=True)
class Step:
    """One typed outcome of a pass: what a lever did, why, and the values before and after."""

    kind: OutcomeKind
    reason: str
    before: Mapping[str, Any]
    after: Mapping[str, Any]
    details: Mapping[str, Any] = field(default_factory=dict)

    @property
    def acts(self) -> bool:
        """True when the step changes what Envoy should look like (weights or shedding)."""
        return self.kind in (OutcomeKind.REBALANCE, OutcomeKind.RECOVER, OutcomeKind.SHED, OutcomeKind.UNSHED)

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind.value,
            "reason": self.reason,
            "before": dict(self.before),
            "after": dict(self.after),
            **({"details": dict(self.details)} if self.details else {}),
        }


@dataclass(frozen=True)
class PassResult:
    """The next state and the steps that lead there; ``state`` is ``current`` when nothing acts."""

    state: WebhookState
    steps: tuple[Step, ...]
    eviction: EvictionIntent = EvictionIntent()

    @property
    def weights_changed(self) -> bool:
        return any(s.kind in (OutcomeKind.REBALANCE, OutcomeKind.RECOVER) for s in self.steps)

    @property
    def shed_changed(self) -> bool:
        return any(s.kind in (OutcomeKind.SHED, OutcomeKind.UNSHED) for s in self.steps)

    @property
    def acts(self) -> bool:
        return any(s.acts for s in self.steps)


def _elapsed(now: float, since: float | None, interval: float) -> bool:
    return since is None or now - since >= interval


def early_hot(
    state: WebhookState, observation: Observation, timing: Timing, nodes: list[str], now: float
) -> tuple[float | None, float, list[str]]:
    """(start of the current early-hot episode or None, its integrated excess, nodes hot now).

    The excess grows by ``(hottest short-window CPU, at most 1.0, - cpu_high) x seconds since the last
    pass`` (the gap capped at two passes, so a stalled loop does not jump) and restarts at 0 when no
    node is hot."""
    excess = {  # utilisation above 1.0 counts as 1.0: never sooner than early_steer_for
        n: min(observation.fast_cpu[n], 1.0) - timing.cpu_high
        for n in nodes
        if n not in observation.down
        and n not in state.draining
        and math.isfinite(observation.fast_cpu.get(n, math.nan))
        and observation.fast_cpu[n] > timing.cpu_high
    }
    if not excess:
        return None, 0.0, []
    if state.hot_since is None or state.hot_checked is None:
        return now, 0.0, sorted(excess)
    gap = min(max(0.0, now - state.hot_checked), 2 * timing.pass_seconds)
    return state.hot_since, state.hot_excess + max(excess.values()) * gap, sorted(excess)


def _steer(
    state: WebhookState,
    new: WebhookState,
    observation: Observation,
    params: PolicyParams,
    timing: Timing,
    nodes: list[str],
    now: float,
    why: str,
) -> tuple[Step, dict[str, float]]:
    """The steering step of this pass, and the weights the policy steers toward (``policy.Decision.targets``)."""
    usable = {n: s for n, s in observation.samples.items() if n not in observation.down}
    decision = policy.decide(
        nodes,
        usable,
        state.weights,
        state.smoothed_cpu,
        params,
        now,
        state.last_weight_change,
        draining=frozenset(state.draining) | observation.down,
        cooldown_seconds=timing.step_seconds,
        connects_per_second=observation.connects_per_second,
    )
    new.smoothed_cpu = decision.smoothed_cpu
    details = {
        "trigger": why,
        "nodes": [vars(n) for n in decision.nodes],
        "donors": decision.donors(),
        "recipients": decision.recipients(),
        "down": sorted(observation.down),
        "connects_per_second": observation.connects_per_second,
    }
    if not decision.changed:
        step = Step(OutcomeKind.NOOP, f"{why}: {decision.reason}", dict(state.weights), dict(state.weights), details)
        return step, decision.targets
    new.weights = decision.weights
    new.last_weight_change = now
    step = Step(OutcomeKind.REBALANCE, f"{why}: {decision.reason}", dict(state.weights), dict(new.weights), details)
    return step, decision.targets


def _recover(
    state: WebhookState,
    new: WebhookState,
    observation: Observation,
    params: PolicyParams,
    timing: Timing,
    now: float,
) -> Step | None:
    if all(w == params.neutral_weight for w in state.weights.values()):
        return None
    weights = dict(state.weights)
    usable = {n: s for n, s in observation.samples.items() if n not in observation.down}
    hold = policy.recovery_hold(usable, params, frozenset(state.draining))
    if hold is not None:
        return Step(OutcomeKind.HOLD, f"no rebalance alert fires; {hold}", weights, weights)
    if not _elapsed(now, state.last_weight_change, timing.step_seconds):
        left = timing.step_seconds - (now - (state.last_weight_change or now))
        return Step(OutcomeKind.NOOP, f"recovery waits for the step interval: {left:.1f}s left", weights, weights)
    after, neutral = policy.recover(state.weights, params)
    new.weights = after
    new.last_weight_change = now
    reason = (
        f"no rebalance alert fires: weights one step (<= {params.recover_step}) toward neutral "
        f"{params.neutral_weight}" + ("; neutral reached" if neutral else "")
    )
    return Step(OutcomeKind.RECOVER, reason, weights, dict(after))


def _shed(
    state: WebhookState,
    new: WebhookState,
    desired: Desired,
    observation: Observation,
    params: PolicyParams,
    timing: Timing,
    now: float,
) -> Step | None:
    current = shedding.ShedState(state.shed_level, state.shed_anchor)
    before = {"shed_level": current.level, "anchor": current.anchor}
    if not desired.shed_firing and current.level == 0:
        return None
    if not _elapsed(now, state.last_shed_change, timing.step_seconds):
        return None
    if desired.shed_firing:
        basis = shedding.cap_basis(
            observation.active_connections, observation.cluster_connections, params.shed_min_connections
        )
        target = shedding.escalate(current, basis, params.shed_levels)
        kind = OutcomeKind.SHED
    else:
        target = shedding.relax(current)
        kind = OutcomeKind.UNSHED
    if target == current:
        return Step(OutcomeKind.NOOP, f"shed level stays {current.level}", before, before)
    new.shed_level, new.shed_anchor = target.level, target.anchor
    new.last_shed_change = now
    plan = shedding.plan_for(target, params.shed_levels)
    why = f"{', '.join(desired.firing_alerts) or 'shed alert'} firing" if desired.shed_firing else "no shed alert fires"
    return Step(kind, f"{why}: {plan.reason}", before, {"shed_level": target.level, "anchor": target.anchor})


def decide_pass(
    state: WebhookState,
    desired: Desired,
    observation: Observation,
    params: PolicyParams,
    timing: Timing,
    nodes: list[str],
    now: float,
    eviction: EvictionSettings | None = None,
) -> PassResult:
    """Decide one pass over every node of the cluster.  ``state`` is not modified.

    ``eviction``: the evict lever's settings (None: the lever is off; operator evacuations still go on).
    The result's ``eviction`` intent names the donors and nodes to evacuate; the controller's evict
    lever carries it out after the weights of this pass are applied."""
    new = state.model_copy(deep=True)
    steps: list[Step] = []
    targets: dict[str, float] = {}  # the weights the policy steers toward (set when steering)
    new.hot_since, new.hot_excess, hot = early_hot(state, observation, timing, nodes, now)
    new.hot_checked = now if hot else None
    cpu = taking_part_cpu(state, observation, params, nodes)
    # Two time scales: the short window says the node is hot now (integrated excess; the small tolerance keeps
    # a saturated node's episode at exactly early_steer_for from missing by a rounding), and either the node
    # is saturated (short-window CPU at or above its configured cores: latency grows without bound) or the
    # rate window says it has been hot on average (MqttBrokerCpuHigh's own condition, without its `for`).
    # A burst of a few seconds below saturation in an even cluster passes the first and not the second.
    sustained = [
        n for n in hot if observation.fast_cpu[n] >= SATURATED or cpu.get(n, 0.0) > timing.cpu_high
    ]
    early = bool(sustained) and new.hot_excess >= early_steer_excess(timing) - 1e-9
    _next_episode(state, new, desired, observation, cpu, eviction, now)
    if desired.rebalance_firing or early or new.evict_armed or params.steer_below_alert:
        if desired.rebalance_firing:
            why = f"{', '.join(a for a in desired.firing_alerts) or 'rebalance alert'} firing"
        elif early:
            why = (
                f"early steer: short-window CPU of {', '.join(hot)} above {timing.cpu_high} "
                f"for {now - (new.hot_since or now):.0f}s (excess {new.hot_excess:.2f} utilisation-seconds)"
            )
        elif new.evict_armed:
            why = f"evicting ({new.evict_reason}): weights favour the recipients first" + (
                "; nobody is evicted while new connections are shed" if new.shed_level > 0 else "")
        else:
            why = "steering below the alert (steer_below_alert)"
        step, targets = _steer(state, new, observation, params, timing, nodes, now, why)
        steps.append(step)
    else:
        recover = _recover(state, new, observation, params, timing, now)
        if recover is not None:
            steps.append(recover)
    shed = _shed(state, new, desired, observation, params, timing, now)
    if shed is not None:
        steps.append(shed)
    intent = _eviction_intent(state, new, cpu, eviction, now, shares_of=lambda w: policy.new_connection_shares(
        {n: w.get(n, params.neutral_weight) for n in nodes}, observation.samples, params), target_weights=targets)
    for donor in intent.donors:  # the cooldown runs from the decision, whatever the broker answers
        new.last_eviction[donor.node] = now
    acts = any(s.acts for s in steps) or bool(intent.donors)
    result_state = new if acts else _carry(state, new)
    return PassResult(result_state, tuple(steps), intent)


def taking_part_cpu(
    state: WebhookState, observation: Observation, params: PolicyParams, nodes: list[str]
) -> dict[str, float]:
    """Rate-window CPU (0..1) of the nodes that take part in balancing: a fresh, finite sample, not down,
    not draining."""
    cpu = {}
    for node in nodes:
        sample = observation.samples.get(node)
        if (
            sample is None
            or sample.cpu is None
            or not math.isfinite(sample.cpu)
            or sample.age_seconds is None
            or sample.age_seconds > params.sample_max_age_seconds
            or node in observation.down
            or node in state.draining
        ):
            continue
        cpu[node] = sample.cpu
    return cpu


def _next_episode(
    state: WebhookState,
    new: WebhookState,
    desired: Desired,
    observation: Observation,
    cpu: Mapping[str, float],
    settings: EvictionSettings | None,
    now: float,
) -> None:
    """Advance the evict lever's automatic trigger (``eviction_policy.next_episode``) into ``new``."""
    if settings is None or not settings.params.enabled:
        new.evict_since, new.evict_mark, new.evict_armed, new.evict_reason = None, None, False, ""
        new.evict_connects_mark = None
        return
    spread = eviction_policy.spread_of(cpu)
    counts = {
        n: c for n in cpu if (c := policy.envoy_active(observation.samples.get(n))) is not None
    }
    episode = eviction_policy.next_episode(
        eviction_policy.Episode(
            state.evict_since, state.evict_mark, state.evict_armed, state.evict_reason, state.evict_connects_mark
        ),
        spread,
        imbalanced=desired.rebalance_firing or eviction_policy.imbalanced(spread, settings),
        requested=desired.rebalance_requested,
        params=settings.params,
        after_seconds=settings.after_seconds,
        now=now,
        placement=eviction_policy.Placement(
            observation.connects_total,
            eviction_policy.clients_to_move(spread, counts, settings.params.spread_target),
        ),
    )
    new.evict_since, new.evict_mark, new.evict_armed, new.evict_reason = (
        episode.since,
        episode.mark,
        episode.armed,
        episode.reason,
    )
    new.evict_connects_mark = episode.connects_mark


def _eviction_intent(
    state: WebhookState,
    new: WebhookState,
    cpu: Mapping[str, float],
    settings: EvictionSettings | None,
    now: float,
    *,
    shares_of: Callable[[Mapping[str, int]], Mapping[str, float]],
    target_weights: Mapping[str, float] | None = None,
) -> EvictionIntent:
    """Donors of this pass (with the weights as this pass leaves them) and the evacuations under way.
    ``shares_of``: weights -> each node's share of the next new connections under Envoy's base policy;
    ``target_weights``: the weights this pass's steering aims at (None or empty: it did not steer).  While
    Envoy sheds (the shed level as this pass leaves it) nothing is evicted (``eviction_policy.shed_waiting``)."""
    evacuating = new.evacuating
    shedding = eviction_policy.shed_waiting(new.shed_level)
    if shedding is not None and (evacuating or new.evict_armed):
        return EvictionIntent(reason=new.evict_reason if new.evict_armed else "evacuation", waiting=shedding)
    if settings is None or not settings.params.enabled:
        return EvictionIntent(evacuate=tuple(sorted(evacuating)), reason="evacuation" if evacuating else "")
    return eviction_policy.intent(
        eviction_policy.spread_of(cpu),
        cpu,
        new.weights,
        shares=shares_of(new.weights),
        target_shares=shares_of({**new.weights, **{n: round(w) for n, w in target_weights.items()}})
        if target_weights else None,
        armed=new.evict_armed,
        reason=new.evict_reason,
        evacuating=evacuating,
        last_eviction=state.last_eviction,
        cooldown_seconds=settings.cooldown_seconds,
        params=settings.params,
        now=now,
    )


def _carry(state: WebhookState, new: WebhookState) -> WebhookState:
    """Nothing acts: keep ``state`` but carry the bookkeeping a pass updates (smoothing, hot timer)."""
    kept = state.model_copy(deep=True)
    kept.smoothed_cpu = new.smoothed_cpu
    kept.hot_since = new.hot_since
    kept.hot_excess = new.hot_excess
    kept.hot_checked = new.hot_checked
    kept.evict_since, kept.evict_mark = new.evict_since, new.evict_mark
    kept.evict_armed, kept.evict_reason = new.evict_armed, new.evict_reason
    kept.evict_connects_mark = new.evict_connects_mark
    return kept
