"""The reconcile loop: one thread owns the cadence and moves Envoy toward the desired state.

Inputs only update desired state (the firing set, the operator's drain requests) and wake the loop;
they never wait on Envoy or Prometheus.  Each pass:

1. reads fresh data for *every* node (:class:`Observer`: Prometheus and Envoy, one round trip each);
2. decides (pure, :func:`mqttlb.webhook.plan.decide_pass`) given the whole firing set;
3. commits in one order — state file, then the immutable :class:`Snapshot`, then publication (EDS
   file; REST EDS reads the snapshot) — with a version that is never reused;
4. applies the shedding plan when it changed, and verifies Envoy: the EDS file must hold the
   snapshot's version (else it is written again) and Envoy must apply its weights; while shedding,
   Envoy must still run the plan (a restarted Envoy has lost its runtime cap), else it is applied
   again (level-triggered repair).

A failed commit leaves the previous state in force and changes nothing in Envoy; the operator's
drains stay desired until a pass commits them.  Every step is audited and counted; every failure
(an unwritable audit log included, which never stops a pass) is counted in ``WEBHOOK_FAILURES``.
Readers of the current snapshot (REST EDS, ``/metrics``, ``/status``) never take the loop's lock.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from mqttlb.contract import Action, OutcomeKind
from mqttlb.envoy_admin import host_port
from mqttlb.webhook import shedding
from mqttlb.webhook.audit import AuditLog
from mqttlb.webhook.availability import AvailabilitySync
from mqttlb.webhook.config import WebhookConfig
from mqttlb.webhook.eds import Endpoint, cluster_load_assignment, discovery_response
from mqttlb.webhook.evict_lever import EVACUATE, REBALANCE, BatchOutcome, EvictLever
from mqttlb.webhook.eviction_policy import EvictionIntent, eviction_settings, intent, shed_waiting, spread_of
from mqttlb.webhook.firing import FiringSet
from mqttlb.webhook.metrics import WebhookMetrics
from mqttlb.webhook.plan import (
    Desired,
    Observation,
    PassResult,
    Step,
    Timing,
    decide_pass,
    taking_part_cpu,
    timing_for,
)
from mqttlb.webhook.state import StateError, WebhookState, check_state, load_state, save_state

log = logging.getLogger(__name__)

RECENT_DECISIONS = 50  # audit entries kept in memory for /status
#: Seconds after the controller starts in which a node it has not yet seen up is shown as "starting", not
#: "down", in /status (a HiveMQ node's JVM takes ~15 s, and its first scrapes say down).  Display only: the
#: passes treat such a node as down.
START_GRACE_SECONDS = 60.0
#: WebhookState fields a dry run carries from pass to pass itself (it commits no state): the evict lever's
#: trigger episode and cooldown.
DRY_RUN_EVICTION_FIELDS = frozenset(
    {"evict_since", "evict_mark", "evict_connects_mark", "evict_armed", "evict_reason", "last_eviction"}
)


class LeverError(RuntimeError):
    """A lever or a read of the world failed; ``reason`` is a bounded label value for the metrics."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class Observer(Protocol):
    def observe(self, now: float) -> Observation:
        """Fresh data for every node; raises LeverError when it cannot be read."""
        ...

    def applied_weights(self) -> dict[str, int]:
        """Weights Envoy applies now, by node; raises LeverError when Envoy cannot be read."""
        ...


class Publisher(Protocol):
    def publish(self, snapshot: Snapshot) -> None:
        """Make ``snapshot`` what Envoy reads (EDS file); raises LeverError."""
        ...

    def published_version(self) -> int | None:
        """Version of the snapshot Envoy reads now (the EDS file's), None when there is none."""
        ...


class ShedLever(Protocol):
    def apply(self, plan: shedding.ShedPlan) -> None:
        """Set Envoy's connection cap and overload pressure for ``plan``; raises LeverError."""
        ...

    def in_force(self, plan: shedding.ShedPlan) -> bool:
        """Whether Envoy runs ``plan`` now (a restarted Envoy has lost it); raises LeverError."""
        ...


@dataclass(frozen=True)
class Snapshot:
    """What Envoy should see: one complete, versioned endpoint set and the shed level.  Immutable."""

    version: int
    cluster: str
    endpoints: tuple[Endpoint, ...]
    shed_level: int
    discovery_json: bytes = field(repr=False)  # the DiscoveryResponse (REST EDS and the EDS file)

    @property
    def weights(self) -> dict[str, int]:
        return {e.node: e.weight for e in self.endpoints}

    def discovery(self) -> dict[str, Any]:
        document: dict[str, Any] = json.loads(self.discovery_json)
        return document


def build_snapshot(config: WebhookConfig, state: WebhookState) -> Snapshot:
    """The snapshot of ``state`` (raises ValueError for a set no endpoint could serve)."""
    endpoints = tuple(
        Endpoint(
            node=n.name,
            host=n.host,
            port=n.port,
            weight=state.weights[n.name],
            health_status="DRAINING" if n.name in state.draining else "HEALTHY",
        )
        for n in config.nodes
    )
    document = discovery_response(state.version, [cluster_load_assignment(config.envoy_cluster, endpoints)])
    return Snapshot(
        version=state.version,
        cluster=config.envoy_cluster,
        endpoints=endpoints,
        shed_level=state.shed_level,
        discovery_json=json.dumps(document, sort_keys=True).encode(),
    )


@dataclass(frozen=True)
class PassReport:
    """What one pass did: its steps, the committed version (None = nothing committed), failures."""

    steps: tuple[Step, ...]
    version: int | None
    failures: tuple[str, ...] = ()
    dry_run: bool = False


class Controller:
    """Reconciles Envoy toward the firing set, one pass every ``pass_seconds`` or when woken."""

    def __init__(
        self,
        config: WebhookConfig,
        *,
        observer: Observer,
        publisher: Publisher,
        shed_lever: ShedLever,
        evict_lever: EvictLever | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """A controller (not started) wired from ``config`` and the given levers: the config's
        parameters, an empty firing set timed by their Alertmanager timing and scoped to the config's
        cluster and nodes (:meth:`FiringSet.for_timing`), the config's audit log and fresh metrics.

        Raises what ``config.params()`` raises for parameters that cannot be used.
        """
        params = config.params()
        metrics = WebhookMetrics()
        self.config = config
        self.params = params
        self.policy = params.policy
        self.firing = FiringSet.for_timing(
            params.alertmanager, params.mqtt_cluster_label, cluster=config.cluster, nodes=config.node_names
        )
        self.observer = observer
        self.publisher = publisher
        self.shed_lever = shed_lever
        self.audit = AuditLog(config.audit_log)
        self.metrics = metrics
        self.clock = clock
        self.timing: Timing = timing_for(params, config.scrape_interval_seconds)
        self.pass_seconds = self.timing.pass_seconds
        self.eviction = eviction_settings(params, self.timing.step_seconds, self.timing.pass_seconds)
        self.evict_lever = evict_lever
        # Drains also switch the brokers' own availability endpoints (HiveMQ extension); not in dry run.
        self.availability = AvailabilitySync.of(
            None if config.dry_run or evict_lever is None else evict_lever.adapters,
            metrics.failures.labels("drain", "availability").inc,
        )
        metrics.start_nodes(config.node_names, (REBALANCE, EVACUATE))
        self._init_pass_state()

    def _init_pass_state(self) -> None:
        """The bookkeeping the passes keep between them: requests not yet reconciled, what was applied and
        seen, the recent decisions; nothing started."""
        self._rebalance_requested = False
        self._evacuations: dict[str, bool] = {}  # desired evacuation changes not yet reconciled
        self._evacuations_done: set[str] = set()  # evacuations that ended because the node is empty
        self._last_eviction_wait: str | None = None
        # Dry run commits no state, so the evict lever's own bookkeeping (its trigger episode and each
        # donor's last batch, i.e. the cooldown) is kept here instead: a dry run arms, waits and names a
        # batch as the real run would, once per cooldown, not on every pass.
        self._dry_run_eviction: dict[str, Any] = {}
        self._state = WebhookState()
        self._snapshot: Snapshot | None = None
        self._pass_lock = threading.Lock()  # one pass at a time (the loop, start, drains)
        self._wake = threading.Event()
        self._drains: dict[str, bool] = {}  # desired drain changes not yet reconciled
        self._drain_lock = threading.Lock()
        self._last_hold_reason: str | None = None
        self._shed_in_force = True  # False after a failed shed apply: every pass tries again
        self.last_pass_at: float | None = None
        self._last_observation: Observation | None = None
        self._seen_up: set[str] = set()  # nodes observed up at least once since the start
        self._started_at: float | None = None
        self._last_applied: dict[str, int] = {}
        self._recent: deque[dict[str, Any]] = deque(maxlen=RECENT_DECISIONS)
        self.started = False

    # ------------------------------------------------------------------ readers (no lock)
    @property
    def snapshot(self) -> Snapshot | None:
        return self._snapshot

    @property
    def state(self) -> WebhookState:
        return self._state

    @property
    def ready(self) -> bool:
        return self.started and (self._snapshot is not None or self.config.dry_run)

    # ------------------------------------------------------------------ inputs
    def wake(self) -> None:
        """Ask for a pass now (a notification or a drain changed the desired state)."""
        self._wake.set()

    def request_drain(self, node: str, draining: bool) -> None:
        """Record the operator's wish; the next pass publishes it.

        Raises KeyError for a node that is not configured, and ValueError when the wish, with the
        ones not yet published, would drain every node (nothing is recorded then)."""
        if node not in self.config.node_names:
            raise KeyError(node)
        with self._drain_lock:
            wishes = {**self._drains, node: draining}
            draining_now = set(self._state.draining)
            for name, flag in wishes.items():
                (draining_now.add if flag else draining_now.discard)(name)
            if draining_now >= set(self.config.node_names):
                raise ValueError("refusing to drain the last node that takes connections")
            self._drains[node] = draining
        self.wake()

    def evict_available(self) -> str | None:
        """Why the evict lever cannot act (None when it can): it is off in the parameters, or no node
        of the config has an eviction side."""
        if not self.eviction.params.enabled:
            return "the evict lever is off (eviction.enabled: false)"
        if self.evict_lever is None or not self.evict_lever.adapters:
            return "no node has an eviction side configured (nodes[].eviction)"
        return None

    def request_rebalance(self) -> str | None:
        """The operator's "rebalance now": the next pass arms the evict lever (no ``after`` wait); it
        steers the weights first and evicts from the donors until none is left.  Returns why nothing will be
        evicted for now (Envoy sheds new connections: ``eviction_policy.shed_waiting``), else None.

        Raises ValueError (nothing recorded) when the lever cannot act (:meth:`evict_available`)."""
        why = self.evict_available()
        if why is not None:
            raise ValueError(why)
        seen = self._last_observation
        if seen is not None:
            spread = spread_of(taking_part_cpu(self._state, seen, self.policy, self.config.node_names))
            target = self.eviction.params.spread_target
            if spread is not None and spread.max_surplus <= target:
                raise ValueError(
                    f"nothing to rebalance: no node is above the mean CPU by more than spread_target {target:g} "
                    f"(largest {spread.max_surplus:.3f})"
                )
        with self._drain_lock:
            self._rebalance_requested = True
        self.wake()
        return shed_waiting(self._state.shed_level)

    def request_evacuate(self, node: str, evacuate: bool) -> None:
        """Evacuate ``node`` (drain it, then evict every evictable client at the bounded rate) or stop
        evacuating it (the node stays drained until undrained).

        Raises KeyError for an unknown node, ValueError when the lever cannot act or when the node is the
        last one taking connections (nothing recorded then)."""
        if node not in self.config.node_names:
            raise KeyError(node)
        if evacuate:
            if self.evict_lever is None or node not in self.evict_lever.adapters:
                raise ValueError(f"{node} has no eviction side configured (nodes[].eviction)")
            self.request_drain(node, True)
        else:
            with self._drain_lock:
                running = node in self._state.evacuating or self._evacuations.get(node, False)
            if not running:
                raise ValueError(f"no evacuation of {node} is running")
        with self._drain_lock:
            self._evacuations[node] = evacuate
        self.wake()

    def eviction_preview(self, evacuate: str | None = None) -> list[dict[str, Any]]:
        """Who would go now, nobody disconnected: each donor's batch as if the lever were armed (or the
        first batch of evacuating ``evacuate``), from the last observation.  Lists the brokers' clients.

        Raises ValueError when the lever cannot act or nothing was observed yet, KeyError for an unknown
        node."""
        why = self.evict_available()
        if why is not None:
            raise ValueError(why)
        if evacuate is not None and evacuate not in self.config.node_names:
            raise KeyError(evacuate)
        seen, state = self._last_observation, self._state
        if seen is None:
            raise ValueError("nothing observed yet: try again after the first pass")
        assert self.evict_lever is not None
        cpu = taking_part_cpu(state, seen, self.policy, self.config.node_names)
        shedding = shed_waiting(state.shed_level)
        if shedding is not None:  # the real run waits too (plan._eviction_intent)
            return [{"waiting": shedding, "recipients": []}]
        if evacuate is not None:
            plan = EvictionIntent(evacuate=(evacuate,), reason="evacuation (dry run)")
        else:
            # shares={}: the preview skips the weight check (weights_first=False), the real run steers first
            plan = intent(spread_of(cpu), cpu, state.weights, shares={}, armed=True,
                          reason="operator request (dry run)",
                          evacuating=(), last_eviction={}, cooldown_seconds=0.0, params=self.eviction.params,
                          now=self.clock(), weights_first=False)
            if plan.waiting is not None:
                return [{"waiting": plan.waiting, "recipients": list(plan.recipients)}]
        outcomes = self.evict_lever.carry_out(plan, self.eviction, dry_run=True)
        return [{**o.as_dict(), **({"error": o.error} if o.error else {})} for o in outcomes]

    def follow(self, state: WebhookState, snapshot: Snapshot) -> None:
        """A standby replica (:mod:`mqttlb.webhook.ha`): serve the leader's ``state`` and ``snapshot`` to
        the readers (REST EDS, ``/status``) without acting.  Raises RuntimeError once started."""
        if self.started:
            raise RuntimeError("a started controller acts: it does not follow")
        self._state, self._snapshot = state, snapshot

    # ------------------------------------------------------------------ start
    def start(self) -> None:
        """Load and check the persisted state, then publish it under a new version.

        Raises StateError for a state file that cannot be used or saved (nothing is published then).
        """
        with self._pass_lock:
            self._started_at = self.clock()
            names = self.config.node_names
            persisted = load_state(self.config.state_file, names, self.policy)
            if persisted is not None and persisted.nodes == names and set(persisted.weights) == set(names):
                state = persisted.model_copy(deep=True)
                log.info(
                    "loaded state %s: version %d, weights %s", self.config.state_file, state.version, state.weights
                )
            else:
                if persisted is not None:
                    log.warning(
                        "persisted node set %s differs from configured %s: starting neutral", persisted.nodes, names
                    )
                state = WebhookState(nodes=names, weights={n: self.policy.neutral_weight for n in names})
                state.version = persisted.version if persisted is not None else 0
            check_state(state, names, self.policy)
            if self.config.dry_run:
                self._state = state
                self._set_gauges(state)
                self.started = True
                log.info("dry run: not publishing the EDS snapshot")
                return
            # A restarted controller never reuses a version: the file may hold state.version already.
            published = self.publisher.published_version() or 0
            state.version = max(state.version, published) + 1
            try:
                self._commit(state)
            except LeverError as exc:  # the state cannot be saved: nothing was published
                raise StateError(str(exc)) from None
            if state.shed_level > 0:
                with contextlib.suppress(LeverError):  # counted; the passes apply it again
                    self._apply_shed(state)
            self.started = True

    # ------------------------------------------------------------------ the loop
    def run(self, stop: threading.Event) -> None:
        """Pass every ``pass_seconds`` (or when woken) until ``stop`` is set; survives failures."""
        while not stop.is_set():
            try:
                self.reconcile_once()
            except Exception:  # the loop must outlive any one pass; the error is logged and counted
                log.exception("reconcile pass crashed")
                self.metrics.failures.labels("reconcile", "exception").inc()
            self._wake.wait(self.pass_seconds)
            self._wake.clear()

    def reconcile_once(self) -> PassReport:
        """One pass: observe, decide, commit, apply, verify."""
        with self._pass_lock:
            started = time.perf_counter()
            now = self.clock()
            self.last_pass_at = now
            try:
                observation = self.observer.observe(now)
                self._last_observation = observation
                self._seen_up.update(n for n in self.config.node_names if n not in observation.down)
            except LeverError as exc:
                self.metrics.failures.labels("observe", exc.reason).inc()
                log.warning("pass skipped: cannot observe the cluster (%s): %s", exc.reason, exc)
                return PassReport((), None, (exc.reason,))
            state, drain_steps, wishes = self._with_drains(self._state)
            state, evacuation_steps = self._with_evacuations(state)
            if self.config.dry_run and self._dry_run_eviction:
                state = state.model_copy(update=self._dry_run_eviction)
            try:
                desired = self._desired(now)
                result = decide_pass(
                    state,
                    desired,
                    observation,
                    self.policy,
                    self.timing,
                    self.config.node_names,
                    now,
                    eviction=self.eviction if self.evict_lever is not None else None,
                )
                if self.config.dry_run:
                    self._dry_run_eviction = result.state.model_dump(include=set(DRY_RUN_EVICTION_FIELDS))
                report = self._act(state, result, now, drain_steps + evacuation_steps)
                if not report.failures:  # the weights of this pass are applied: the evicted land right
                    self._carry_out(result.eviction)
                self.availability.sync(self._state.draining, now)  # the committed drains, at the brokers too
            finally:
                self._requeue_drains(wishes)
            self.metrics.pass_seconds.observe(time.perf_counter() - started)
            return report

    def _desired(self, now: float) -> Desired:
        """The cluster's firing alerts; a node alert naming a node this rebalancer does not steer is
        left out (it cannot be acted on, and it must not hold recovery back)."""
        nodes = set(self.config.node_names)
        alerts = [
            a for a in self.firing.snapshot().firing(self.config.cluster, now) if a.node is None or a.node in nodes
        ]
        by_action = {action: [a for a in alerts if a.action is action] for action in (Action.REBALANCE, Action.SHED)}
        for action, firing in by_action.items():
            self.metrics.firing.labels(action.value).set(len(firing))
        with self._drain_lock:
            requested, self._rebalance_requested = self._rebalance_requested, False
        return Desired(
            rebalance_firing=bool(by_action[Action.REBALANCE]),
            shed_firing=bool(by_action[Action.SHED]),
            firing_alerts=tuple(sorted({a.alertname for a in alerts})),
            rebalance_requested=requested,
        )

    def _with_drains(self, state: WebhookState) -> tuple[WebhookState, tuple[Step, ...], dict[str, bool]]:
        """``state`` with the operator's pending drain wishes, the DRAIN/UNDRAIN step, and the wishes taken.

        The step is recorded with the pass's other acting steps, once committed (or with the error)."""
        with self._drain_lock:
            wishes, self._drains = self._drains, {}
        if not wishes:
            return state, (), {}
        draining = set(state.draining)
        for node, flag in wishes.items():
            (draining.add if flag else draining.discard)(node)
        if draining >= set(self.config.node_names):
            log.error("refusing to drain every node: drain request ignored")
            self.metrics.failures.labels("drain", "last_node").inc()
            return state, (), {}
        if sorted(draining) == sorted(state.draining):
            return state, (), {}
        new = state.model_copy(deep=True)
        new.draining = sorted(draining)
        step = Step(
            OutcomeKind.DRAIN if len(draining) > len(state.draining) else OutcomeKind.UNDRAIN,
            "operator request",
            {"draining": list(state.draining)},
            {"draining": new.draining},
        )
        return new, (step,), wishes

    def _with_evacuations(self, state: WebhookState) -> tuple[WebhookState, tuple[Step, ...]]:
        """``state`` with the evacuation wishes taken (a node to evacuate is draining already: its drain
        wish went first), and an EVACUATE step per node started."""
        with self._drain_lock:
            wishes, self._evacuations = self._evacuations, {}
        evacuating = set(state.evacuating)
        for node, flag in wishes.items():
            if flag and node not in state.draining:
                with self._drain_lock:  # its drain is not committed yet: try again next pass
                    self._evacuations.setdefault(node, flag)
                continue
            (evacuating.add if flag else evacuating.discard)(node)
        if sorted(evacuating) == sorted(state.evacuating):
            return state, ()
        new = state.model_copy(deep=True)
        new.evacuating = sorted(evacuating)
        started = sorted(evacuating - set(state.evacuating))
        reasons = [(node, "operator request: start") for node in started]
        for node in sorted(set(state.evacuating) - evacuating):
            complete = node in self._evacuations_done
            self._evacuations_done.discard(node)
            reasons.append((node, "complete: nothing evictable left" if complete else "operator request: stop"))
        before = {"evacuating": list(state.evacuating)}
        steps = tuple(
            Step(OutcomeKind.EVACUATE, why, before, {"evacuating": new.evacuating, "node": node})
            for node, why in reasons
        )
        return new, steps

    def _carry_out(self, intent: EvictionIntent) -> None:
        """Run the evict lever on this pass's intent: one audited batch per node; an evacuation whose
        node has nothing evictable left ends (the node stays drained)."""
        if intent.waiting != self._last_eviction_wait and intent.waiting is not None:
            log.info("evict lever waiting: %s", intent.waiting)
        self._last_eviction_wait = intent.waiting
        if self.evict_lever is None or not intent.acts:
            return
        outcomes = self.evict_lever.carry_out(intent, self.eviction, dry_run=self.config.dry_run)
        for outcome in outcomes:
            self._record_batch(outcome, intent)
            if outcome.purpose == EVACUATE and outcome.error is None and outcome.remaining == 0:
                with self._drain_lock:
                    self._evacuations.setdefault(outcome.node, False)
                    self._evacuations_done.add(outcome.node)
                self.wake()

    def _record_batch(self, outcome: BatchOutcome, intent: EvictionIntent) -> None:
        if outcome.error is not None:
            reason = "not_configured" if outcome.error == "no eviction side configured" else "broker"
            self.metrics.failures.labels("evict", reason).inc()
        if not outcome.chosen and outcome.error is None:
            return  # nothing to take on this node this pass (the waiting reason is logged)
        why = intent.reason if outcome.purpose == REBALANCE else "evacuation (operator request)"
        step = Step(
            OutcomeKind.EVICT,
            f"{outcome.purpose} {outcome.node}: {why}",
            {"node": outcome.node, "surplus": round(outcome.surplus, 4)},
            outcome.as_dict(),
            {"recipients": list(intent.recipients), **({"answer": outcome.details["answer"]}
                                                       if "answer" in outcome.details else {})},
        )
        if outcome.error is not None:
            self._record((step,), dry_run=outcome.dry_run, error=outcome.error)
            return
        self._record((step,), dry_run=outcome.dry_run)
        if not outcome.dry_run:
            self.metrics.evicted.labels(outcome.node, outcome.purpose).inc(len(outcome.evicted))

    def _requeue_drains(self, wishes: Mapping[str, bool]) -> None:
        """Wishes the pass did not commit (the state could not be saved) stay desired for the next pass,
        unless a newer wish for the node came in meanwhile."""
        if self.config.dry_run:
            return
        with self._drain_lock:
            for node, flag in wishes.items():
                if (node in self._state.draining) != flag:
                    self._drains.setdefault(node, flag)

    def _act(
        self, state: WebhookState, result: PassResult, now: float, drain_steps: tuple[Step, ...] = ()
    ) -> PassReport:
        acting = drain_steps + tuple(s for s in result.steps if s.acts)
        quiet = tuple(s for s in result.steps if not s.acts)
        self._note_quiet(quiet)
        if self.config.dry_run:
            if acting:
                self._record(acting, dry_run=True)
            return PassReport(result.steps, None, dry_run=True)
        new = result.state
        failures: list[str] = []
        snapshot_changed = (
            new.weights != self._state.weights or new.draining != self._state.draining or self._snapshot is None
        )
        # An eviction decision (its cooldown) and an evacuation change are state worth keeping too.
        state_changed = new.evacuating != self._state.evacuating or bool(result.eviction.donors)
        if snapshot_changed or state_changed or new.shed_level != self._state.shed_level:
            new = new.model_copy(update={"version": self._state.version + 1})
            try:
                self._commit(new)
            except LeverError as exc:
                self.metrics.failures.labels("commit", exc.reason).inc()
                self._record(acting, error=str(exc))
                return PassReport(result.steps, None, (exc.reason,))
            if result.shed_changed:
                try:
                    self._apply_shed(new)
                except LeverError as exc:
                    failures.append(exc.reason)
            self._record(acting)
        else:
            self._state = new  # bookkeeping only (smoothing, early-steer timer): nothing to publish
        failures += self._verify()
        if not result.shed_changed:
            failures += self._verify_shed()
        return PassReport(result.steps, self._state.version if acting else None, tuple(failures))

    # ------------------------------------------------------------------ commit, levers, verify
    def _commit(self, state: WebhookState) -> None:
        """State file, then snapshot, then publication.  On failure the old state stays in force."""
        try:
            snapshot = build_snapshot(self.config, state)
        except ValueError as exc:
            raise LeverError("invalid_snapshot", str(exc)) from exc
        try:
            save_state(self.config.state_file, state)
        except OSError as exc:
            raise LeverError("state_write", f"cannot save state {self.config.state_file}: {exc}") from exc
        self._state = state
        self._snapshot = snapshot
        self._set_gauges(state)
        try:
            self.publisher.publish(snapshot)
        except LeverError as exc:
            # Committed but not published: the next pass's verify publishes it again.
            self.metrics.failures.labels("publish", exc.reason).inc()
            log.error("snapshot version %d committed, not published (%s): %s", state.version, exc.reason, exc)

    def _apply_shed(self, state: WebhookState) -> None:
        plan = shedding.plan_for(shedding.ShedState(state.shed_level, state.shed_anchor), self.policy.shed_levels)
        try:
            self.shed_lever.apply(plan)
        except LeverError as exc:
            self._shed_in_force = False
            self.metrics.failures.labels("shed", exc.reason).inc()
            log.error("shed level %d not applied (%s): %s", state.shed_level, exc.reason, exc)
            raise
        self._shed_in_force = True

    def _verify_shed(self) -> list[str]:
        """While shedding, or after a failed apply, check that Envoy runs the plan and apply it again if not
        (Envoy's runtime overrides die with an Envoy restart)."""
        state = self._state
        if state.shed_level == 0 and self._shed_in_force:
            return []
        plan = shedding.plan_for(shedding.ShedState(state.shed_level, state.shed_anchor), self.policy.shed_levels)
        try:
            if self._shed_in_force and self.shed_lever.in_force(plan):
                return []
        except LeverError as exc:
            self.metrics.failures.labels("shed", exc.reason).inc()
            log.warning("shed level %d not verified (%s): %s", state.shed_level, exc.reason, exc)
            return [exc.reason]
        log.warning("shed level %d is not in force in Envoy (restarted?): applying it again", state.shed_level)
        try:
            self._apply_shed(state)
        except LeverError as exc:
            return [exc.reason]
        return []

    def _verify(self) -> list[str]:
        snapshot = self._snapshot
        if snapshot is None:
            return []
        try:
            if self.publisher.published_version() != snapshot.version:
                self.publisher.publish(snapshot)
            applied = self.observer.applied_weights()
            self._last_applied = applied
        except LeverError as exc:
            self.metrics.failures.labels("verify", exc.reason).inc()
            log.warning("snapshot version %d not verified (%s): %s", snapshot.version, exc.reason, exc)
            return [exc.reason]
        expected = snapshot.weights
        if all(applied.get(n) == w for n, w in expected.items()):
            return []
        self.metrics.failures.labels("verify", "weights_not_applied").inc()
        log.warning("Envoy applies %s, snapshot %d says %s", applied, snapshot.version, expected)
        return ["weights_not_applied"]

    # ------------------------------------------------------------------ records
    def _record(self, steps: Sequence[Step], *, dry_run: bool = False, error: str | None = None) -> None:
        for step in steps:
            entry: dict[str, Any] = {**step.as_dict(), "dry_run": dry_run, "version": self._state.version}
            if error is not None:
                entry["error"] = error
                entry["applied"] = False
            else:
                entry["applied"] = not dry_run
                self.metrics.actions.labels(step.kind.value).inc()
            self._audit(entry)
            log.info("%s%s: %s", "dry run: " if dry_run else "", step.kind.value, step.reason)

    def record(self, entry: dict[str, Any]) -> None:
        """Audit an input that moved no lever but that an operator looks for (a test alert): the
        audit log and /status's recent decisions, as a step would be."""
        self._audit(entry)

    def _audit(self, entry: dict[str, Any]) -> None:
        """Append to the audit log; a full or read-only disk is logged and counted, never stops a pass."""
        self._recent.append({"time": self.clock(), **entry})
        try:
            self.audit.write(entry)
        except OSError as exc:
            self.metrics.failures.labels("audit", "write").inc()
            log.error("cannot write the audit log %s: %s (entry: %s)", self.audit.path, exc, entry.get("kind"))

    def _note_quiet(self, steps: Sequence[Step]) -> None:
        """HOLD and NOOP steps: counted, logged and audited only when their reason changes."""
        for step in steps:
            self.metrics.actions.labels(step.kind.value).inc()
        holds = [s for s in steps if s.kind is OutcomeKind.HOLD]
        reason = holds[0].reason if holds else None
        previous = self._last_hold_reason
        if reason is not None and (previous is None or _first_words(reason) != _first_words(previous)):
            self._audit({**holds[0].as_dict(), "dry_run": self.config.dry_run, "applied": False})
        self._last_hold_reason = reason

    def _set_gauges(self, state: WebhookState) -> None:
        for n in self.config.nodes:
            endpoint = host_port(n.host, n.port)
            self.metrics.weight.labels(self.config.envoy_cluster, n.name, endpoint).set(state.weights[n.name])
        self.metrics.shed_level.set(state.shed_level)

    def status(self) -> Mapping[str, Any]:
        """A JSON-ready view for ``/status`` and ``mqttlb status`` (no lock): per node the last
        observation (CPU, short-window CPU, connections, health), the weight decided (state),
        published (snapshot) and applied (Envoy, at the last verify), draining; the shed level, the
        firing set and the last decisions."""
        snap, state, seen = self._snapshot, self._state, self._last_observation
        published = snap.weights if snap else {}
        nodes = []
        for name in self.config.node_names:
            sample = seen.samples.get(name) if seen else None
            nodes.append(
                {
                    "node": name,
                    "cpu": sample.cpu if sample else None,
                    "fast_cpu": seen.fast_cpu.get(name) if seen else None,
                    "connections": sample.connections if sample else None,
                    "weight": state.weights.get(name),
                    "published": published.get(name),
                    "applied": self._last_applied.get(name),
                    "health": None if seen is None else self._health(name, seen),
                    "draining": name in state.draining,
                }
            )
        return {
            "cluster": self.config.cluster,
            "dry_run": self.config.dry_run,
            "version": state.version,
            "published_version": snap.version if snap else None,
            "shed_level": state.shed_level,
            "eviction": self._eviction_status(state, seen),
            "step_seconds": self.timing.step_seconds,
            "pass_seconds": self.pass_seconds,
            "last_pass_at": self.last_pass_at,
            "nodes": nodes,
            "firing": self.firing.snapshot()
            .as_json(self.clock())["clusters"]
            .get(self.config.cluster, {"rebalance_firing": False, "shed_firing": False, "nodes_hot": [], "alerts": []}),
            "recent": list(self._recent),
        }

    def _health(self, node: str, seen: Observation) -> str:
        """``up``, ``down``, or ``starting``: down but never seen up, within START_GRACE_SECONDS of the start."""
        if node not in seen.down:
            return "up"
        started = self._started_at
        in_grace = started is not None and self.clock() - started < START_GRACE_SECONDS
        return "starting" if in_grace and node not in self._seen_up else "down"

    def _eviction_status(self, state: WebhookState, seen: Observation | None) -> dict[str, Any]:
        spread = spread_of(taking_part_cpu(state, seen, self.policy, self.config.node_names)) if seen else None
        return {
            "available": self.evict_available() is None,
            "unavailable_reason": self.evict_available(),
            "armed": state.evict_armed,
            "reason": state.evict_reason,
            "imbalanced_since": state.evict_since,
            "waiting": shed_waiting(state.shed_level) or self._last_eviction_wait,
            "evacuating": list(state.evacuating),
            "last_batch": dict(state.last_eviction),
            "max_squared_deviation": None if spread is None else round(spread.max_squared_deviation, 4),
            "spread_target": self.eviction.params.spread_target,
        }


def _first_words(reason: str) -> str:
    # "CPU spread 0.231 still >= 0.05: weights held" -> compare without the changing figures
    return "".join(c for c in reason if not c.isdigit())
