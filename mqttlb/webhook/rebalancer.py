"""The rebalancer: turns one validated notification into one decision and applies it.

Order of every action: compute everything on a copy of the state, then act on Envoy, then persist
the new state, then swap it in.  A failure before acting leaves state, files and Envoy unchanged.
One decision at a time (a lock): Alertmanager HA duplicates arrive concurrently.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from mqttlb.envoy_admin import EnvoyAdminClient, EnvoyAdminError
from mqttlb.params import Params
from mqttlb.prometheus_api import PrometheusApi, PrometheusApiError
from mqttlb.webhook import policy, shedding
from mqttlb.webhook.actuators import publish_eds, write_overload
from mqttlb.webhook.audit import AuditLog
from mqttlb.webhook.config import WebhookConfig
from mqttlb.webhook.eds import Endpoint, cluster_load_assignment, discovery_response
from mqttlb.webhook.metrics import WebhookMetrics
from mqttlb.webhook.payload import Notification
from mqttlb.webhook.samples import fetch_node_samples
from mqttlb.webhook.state import WebhookState, load_state, save_state

log = logging.getLogger(__name__)


class ActionFailed(RuntimeError):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class Rebalancer:
    def __init__(
        self,
        config: WebhookConfig,
        *,
        prometheus: PrometheusApi | None = None,
        envoy: EnvoyAdminClient | None = None,
        audit: AuditLog | None = None,
        metrics: WebhookMetrics | None = None,
        clock: Callable[[], float] = time.time,
        verify_timeout: float = 1.0,
    ) -> None:
        self.config = config
        self.params: Params = config.params()
        self.policy = self.params.policy
        self.prometheus = prometheus or PrometheusApi(config.prometheus_url, config.http_timeout_seconds)
        self.envoy = envoy or EnvoyAdminClient(config.envoy_admin, config.http_timeout_seconds)
        self.audit = audit or AuditLog(config.audit_log)
        self.metrics = metrics or WebhookMetrics()
        self.clock = clock
        self.verify_timeout = verify_timeout
        self.lock = threading.Lock()
        self.state = WebhookState()
        self.state_loaded = False
        self.eds_published = False
        # Within this window an identical notification (same key) is a duplicate; after it, a
        # repeat_interval re-send of a still-firing alert acts again (one step per cooldown).
        self.dedup_window = self.policy.cooldown_seconds
        self._decision_started = time.perf_counter()  # of the decision holding the lock

    # ---------------------------------------------------------------- snapshot
    def neutral_state(self) -> WebhookState:
        names = self.config.node_names
        return WebhookState(nodes=names, weights={n: self.policy.neutral_weight for n in names})

    def endpoints(self, state: WebhookState) -> list[Endpoint]:
        return [
            Endpoint(
                node=n.name,
                host=n.host,
                port=n.port,
                weight=state.weights[n.name],
                health_status="DRAINING" if n.name in state.draining else "HEALTHY",
            )
            for n in self.config.nodes
        ]

    def discovery(self) -> dict[str, Any]:
        """The current snapshot as a DiscoveryResponse (what the EDS file holds)."""
        with self.lock:
            state = self.state
            return discovery_response(
                state.version, [cluster_load_assignment(self.config.envoy_cluster, self.endpoints(state))]
            )

    def _publish(self, state: WebhookState) -> None:
        publish_eds(self.config.eds_path, state.version, self.config.envoy_cluster, self.endpoints(state))

    def _set_weight_metrics(self, state: WebhookState) -> None:
        for n in self.config.nodes:
            self.metrics.weight.labels(self.config.envoy_cluster, n.name, f"{n.host}:{n.port}").set(
                state.weights[n.name]
            )
        self.metrics.shed_level.set(state.shed_level)

    # ---------------------------------------------------------------- start-up
    def start(self) -> None:
        """Load the persisted state and re-publish it (or a neutral snapshot for a new node set)."""
        with self.lock:
            persisted = load_state(self.config.state_file)
            names = self.config.node_names
            if persisted is not None and persisted.nodes == names and set(persisted.weights) == set(names):
                state = persisted.model_copy(deep=True)
                log.info(
                    "loaded state %s: version %d, weights %s",
                    self.config.state_file,
                    state.version,
                    state.weights,
                )
            else:
                if persisted is not None:
                    log.warning(
                        "persisted node set %s differs from configured %s: starting neutral",
                        persisted.nodes,
                        names,
                    )
                state = self.neutral_state()
                if persisted is not None:
                    state.version = persisted.version
            self.state_loaded = True
            if self.config.dry_run:
                self.state = state
                self._set_weight_metrics(state)
                log.info("dry run: not publishing the EDS snapshot")
                return
            state.version += 1
            self._publish(state)
            save_state(self.config.state_file, state)
            self.state = state
            self.eds_published = True
            self._set_weight_metrics(state)
            log.info("published EDS version %d to %s", state.version, self.config.eds_path)
            if state.shed_level > 0:
                try:
                    self._apply_shed(state)
                except ActionFailed as exc:
                    log.error("could not re-apply shed level %d at start: %s", state.shed_level, exc)

    @property
    def ready(self) -> bool:
        return self.state_loaded and (self.eds_published or self.config.dry_run)

    # ---------------------------------------------------------------- notifications
    def handle(self, notification: Notification, action: str) -> tuple[int, dict[str, Any]]:
        key = notification.idempotency_key()
        started = time.perf_counter()
        with self.lock:
            self._decision_started = started
            now = self.clock()
            seen_at = self.state.seen.get(key)
            if seen_at is not None and now - seen_at < self.dedup_window:
                log.info(
                    "duplicate notification %s (%s %s) within %.0fs: ignored",
                    key[:12],
                    notification.alert_names(),
                    notification.status,
                    self.dedup_window,
                )
                self.metrics.actions.labels("duplicate").inc()
                return 200, {"result": "duplicate", "key": key}
            new = self.state.model_copy(deep=True)
            new.seen = {k: t for k, t in new.seen.items() if now - t < max(self.dedup_window, 1.0) * 4}
            new.seen[key] = now
            alert = {
                "names": notification.alert_names(),
                "status": notification.status,
                "action": action,
                "group_key": notification.groupKey,
                "key": key,
                "alerts": len(notification.alerts),
            }
            try:
                entry = self._dispatch(action, notification.status, new, now)
            except ActionFailed as exc:
                self.metrics.failures.labels(action, exc.reason).inc()
                log.error(
                    "%s %s failed (%s): %s; state unchanged", action, notification.status, exc.reason, exc
                )
                self.audit.write(
                    {
                        "kind": action,
                        "alert": alert,
                        "error": str(exc),
                        "reason": exc.reason,
                        "applied": False,
                        "dry_run": self.config.dry_run,
                    }
                )
                return 503, {"result": "failed", "reason": exc.reason, "error": str(exc)}
            entry = {"alert": alert, "dry_run": self.config.dry_run, **entry}
            self._commit(new, entry)
            self.metrics.decision_seconds.observe(time.perf_counter() - started)
            self.metrics.actions.labels(entry["kind"]).inc()
            self.audit.write(entry)
            log.info(
                "%s for %s (%s): %s", entry["kind"], alert["names"], notification.status, entry["reason"]
            )
            return 200, {
                "result": entry["kind"],
                "reason": entry["reason"],
                "after": entry["after"],
                "applied": entry["applied"],
            }

    def _commit(self, new: WebhookState, entry: dict[str, Any]) -> None:
        if self.config.dry_run:
            self.state.seen = new.seen  # remember duplicates, change nothing else
            return
        save_state(self.config.state_file, new)
        self.state = new
        self._set_weight_metrics(new)

    def _dispatch(self, action: str, status: str, new: WebhookState, now: float) -> dict[str, Any]:
        if action == "rebalance" and status == "firing":
            return self._rebalance(new, now)
        if action == "rebalance":
            new.recovering = True
            return self._recover_step(new, now, kind="recover")
        if action == "shed" and status == "firing":
            return self._shed(new, now, escalate=True)
        if action == "shed":
            return self._shed(new, now, escalate=False)
        return {
            "kind": "page",
            "reason": "page alert recorded; no lever pulled",
            "before": None,
            "after": None,
            "applied": False,
        }

    # ---------------------------------------------------------------- levers
    def _apply_weights(self, new: WebhookState) -> dict[str, Any]:
        """Publish the EDS snapshot (version + 1) and read back what Envoy applied."""
        if self.config.dry_run:
            return {"eds_version": None, "envoy": None, "verified": False}
        new.version = self.state.version + 1
        try:
            self._publish(new)
        except (OSError, ValueError) as exc:
            raise ActionFailed("eds_publish", f"cannot publish EDS: {exc}") from exc
        self.eds_published = True
        published_ms = round((time.perf_counter() - self._decision_started) * 1000, 2)
        try:
            hosts, verified = self.envoy.wait_for_weights(
                self.config.envoy_cluster, new.weights, timeout=self.verify_timeout
            )
        except EnvoyAdminError as exc:
            # The file is published: Envoy picks it up when it is back.  Record, count, go on.
            self.metrics.failures.labels("verify", "envoy_unreachable").inc()
            log.warning("EDS version %d published but not verified: %s", new.version, exc)
            return {
                "eds_version": new.version,
                "envoy": None,
                "verified": False,
                "verify_error": str(exc),
                "published_after_ms": published_ms,
            }
        if not verified:
            self.metrics.failures.labels("verify", "weights_not_applied").inc()
            log.warning(
                "Envoy does not show EDS version %d weights within %.1fs", new.version, self.verify_timeout
            )
        return {
            "eds_version": new.version,
            "envoy": {n: h.weight for n, h in hosts.items()},
            "verified": verified,
            # from the notification's arrival: EDS file renamed into place / weights seen in Envoy
            "published_after_ms": published_ms,
            "visible_after_ms": round((time.perf_counter() - self._decision_started) * 1000, 2),
        }

    def _rebalance(self, new: WebhookState, now: float) -> dict[str, Any]:
        names = self.config.node_names
        try:
            samples = fetch_node_samples(self.prometheus, self.config.cluster, names, now)
        except PrometheusApiError as exc:
            raise ActionFailed("prometheus", str(exc)) from exc
        decision = policy.decide(
            names,
            samples,
            new.weights,
            new.smoothed_cpu,
            self.policy,
            now,
            new.last_weight_change,
            draining=frozenset(new.draining),
        )
        before = dict(new.weights)
        new.smoothed_cpu = decision.smoothed_cpu
        new.recovering = False
        applied: dict[str, Any] = {"eds_version": None, "envoy": None, "verified": False}
        if decision.changed:
            new.weights = decision.weights
            new.last_weight_change = now
            applied = self._apply_weights(new)
        return {
            "kind": "rebalance" if decision.changed else "noop",
            "reason": decision.reason,
            "before": before,
            "after": dict(new.weights),
            "applied": applied,
            "nodes": [asdict(n) for n in decision.nodes],
            "donors": decision.donors(),
            "recipients": decision.recipients(),
        }

    def _recovery_hold(self, new: WebhookState, now: float) -> str | None:
        if all(w == self.policy.neutral_weight for w in new.weights.values()):
            return None
        try:
            samples = fetch_node_samples(self.prometheus, self.config.cluster, self.config.node_names, now)
        except PrometheusApiError as exc:
            # Neutral is the safe place to be when the load cannot be seen.
            log.warning("recovery: Prometheus unavailable (%s); stepping toward neutral anyway", exc)
            return None
        return policy.recovery_hold(samples, self.policy, frozenset(new.draining))

    def _recover_step(self, new: WebhookState, now: float, kind: str) -> dict[str, Any]:
        before = dict(new.weights)
        hold = self._recovery_hold(new, now)
        if hold is not None:
            new.recovering = True  # the tick checks again
            return {"kind": "hold", "reason": hold, "before": before, "after": before, "applied": False}
        after, neutral = policy.recover(new.weights, self.policy)
        new.recovering = not neutral
        applied: dict[str, Any] = {"eds_version": None, "envoy": None, "verified": False}
        if after != before:
            new.weights = after
            new.last_weight_change = now
            applied = self._apply_weights(new)
        reason = (
            f"alert resolved: weights one step (<= {self.policy.recover_step}) toward neutral "
            f"{self.policy.neutral_weight}" + ("; neutral reached" if neutral else "")
        )
        return {
            "kind": kind if after != before else "noop",
            "reason": reason,
            "before": before,
            "after": after,
            "applied": applied,
        }

    def _apply_shed(self, state: WebhookState) -> dict[str, Any]:
        plan = shedding.plan_for(
            shedding.ShedState(state.shed_level, state.shed_anchor), self.policy.shed_levels
        )
        if self.config.dry_run:
            return {"plan": asdict(plan), "applied": False}
        try:
            self.envoy.set_max_connections(self.config.envoy_cluster, plan.max_connections)
        except EnvoyAdminError as exc:
            raise ActionFailed("envoy", f"cannot set the circuit-breaker cap: {exc}") from exc
        try:
            write_overload(self.config.overload_file, plan.hard_stop)
        except OSError as exc:
            raise ActionFailed("overload_file", f"cannot write {self.config.overload_file}: {exc}") from exc
        return {"plan": asdict(plan), "applied": True}

    def _shed(self, new: WebhookState, now: float, escalate: bool) -> dict[str, Any]:
        current = shedding.ShedState(new.shed_level, new.shed_anchor)
        before = {"shed_level": current.level, "anchor": current.anchor}
        if (
            escalate
            and new.last_shed_change is not None
            and now - new.last_shed_change < self.policy.cooldown_seconds
            and current.level > 0
        ):
            return {
                "kind": "noop",
                "reason": "shed cooldown",
                "before": before,
                "after": before,
                "applied": {"applied": False},
            }
        if escalate:
            try:
                active = self.envoy.active_connections(self.config.envoy_cluster) if current.level == 0 else 0
            except EnvoyAdminError as exc:
                raise ActionFailed("envoy", f"cannot read active connections: {exc}") from exc
            target = shedding.escalate(current, active, self.policy.shed_levels)
            new.shed_relaxing = False
        else:
            target = shedding.relax(current)
            new.shed_relaxing = target.level > 0
        new.shed_level, new.shed_anchor = target.level, target.anchor
        if target == current:
            return {
                "kind": "noop",
                "reason": f"shed level stays {current.level}",
                "before": before,
                "after": before,
                "applied": {"applied": False},
            }
        new.last_shed_change = now
        applied = self._apply_shed(new)
        return {
            "kind": "shed" if escalate else "unshed",
            "reason": applied["plan"]["reason"],
            "before": before,
            "after": {"shed_level": target.level, "anchor": target.anchor},
            "applied": applied,
        }

    # ---------------------------------------------------------------- recovery ticker
    def tick(self) -> dict[str, Any] | None:
        """One slow-ramp step after a resolved alert, at most once per cooldown; None when idle.

        Alertmanager sends ``resolved`` once, so the stepwise return to neutral (and the stepwise
        lifting of shedding) is driven by this tick, which the CLI calls periodically.
        """
        started = time.perf_counter()
        with self.lock:
            self._decision_started = started
            now = self.clock()
            new = self.state.model_copy(deep=True)
            entries = []
            try:
                if new.recovering and (
                    new.last_weight_change is None
                    or now - new.last_weight_change >= self.policy.cooldown_seconds
                ):
                    entries.append(self._recover_step(new, now, kind="recover"))
                if (
                    new.shed_relaxing
                    and new.shed_level > 0
                    and (
                        new.last_shed_change is None
                        or now - new.last_shed_change >= self.policy.cooldown_seconds
                    )
                ):
                    entries.append(self._shed(new, now, escalate=False))
            except ActionFailed as exc:
                self.metrics.failures.labels("tick", exc.reason).inc()
                log.error("recovery tick failed (%s): %s; state unchanged", exc.reason, exc)
                return None
            if all(e["kind"] == "hold" for e in entries):
                # Holding changes nothing: no commit and no audit line per tick, a debug log only.
                if entries:
                    log.debug("recovery tick: %s", entries[0]["reason"])
                return None
            entry = {
                "alert": None,
                "dry_run": self.config.dry_run,
                "kind": "tick",
                "steps": entries,
                "reason": "; ".join(e["reason"] for e in entries),
                "before": [e["before"] for e in entries],
                "after": [e["after"] for e in entries],
                "applied": [e["applied"] for e in entries],
            }
            self._commit(new, entry)
            self.metrics.decision_seconds.observe(time.perf_counter() - started)
            for e in entries:
                self.metrics.actions.labels(e["kind"]).inc()
            self.audit.write(entry)
            log.info("recovery tick: %s", entry["reason"])
            return entry

    # ---------------------------------------------------------------- drain
    def set_draining(self, node: str, draining: bool) -> tuple[int, dict[str, Any]]:
        if node not in self.config.node_names:
            return 404, {"error": f"unknown node {node!r}"}
        with self.lock:
            new = self.state.model_copy(deep=True)
            members = set(new.draining) | {node} if draining else set(new.draining) - {node}
            if members >= set(self.config.node_names):
                return 409, {"error": "refusing to drain the last node taking connections"}
            before = sorted(new.draining)
            new.draining = sorted(members)
            if new.draining == before:
                return 200, {"result": "noop", "draining": before}
            try:
                applied = self._apply_weights(new)
            except ActionFailed as exc:
                self.metrics.failures.labels("drain", exc.reason).inc()
                return 503, {"result": "failed", "error": str(exc)}
            entry = {
                "kind": "drain" if draining else "undrain",
                "alert": None,
                "dry_run": self.config.dry_run,
                "reason": f"{node} {'set DRAINING' if draining else 'back in rotation'} by operator",
                "before": {"draining": before},
                "after": {"draining": new.draining},
                "applied": applied,
            }
            self._commit(new, entry)
            self.metrics.actions.labels(entry["kind"]).inc()
            self.audit.write(entry)
            log.info("%s", entry["reason"])
            return 200, {"result": entry["kind"], "draining": new.draining}
