"""The controller's levers on Envoy: publish a snapshot (EDS file), set the shedding plan (the cap over the
admin API; the hard stop as a pressure file or a listener's runtime connection limit).

Adapters only: they know nothing of policy and raise :class:`LeverError` with a bounded reason.
"""

from __future__ import annotations

import json
from pathlib import Path

from mqttlb.atomic import atomic_write_text
from mqttlb.envoy_admin import EnvoyAdminClient, EnvoyAdminError, circuit_breaker_key, listener_limit_key
from mqttlb.webhook.actuators import read_overload, write_overload
from mqttlb.webhook.config import WebhookConfig
from mqttlb.webhook.controller import LeverError, Snapshot
from mqttlb.webhook.shedding import OVERLOAD_OFF, OVERLOAD_ON, ShedPlan


class EdsFilePublisher:
    """Path-based EDS: the snapshot's DiscoveryResponse, written temp -> fsync -> rename.

    The temp file lives outside the watched directory (Envoy's file watcher reacts to the rename
    into the directory, never to a half-written file).
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def publish(self, snapshot: Snapshot) -> None:
        text = json.dumps(snapshot.discovery(), indent=2, sort_keys=True) + "\n"
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(self.path, text, tmp_dir=self.path.parent.parent)
        except OSError as exc:
            raise LeverError("eds_write", f"cannot write EDS file {self.path}: {exc}") from exc

    def published_version(self) -> int | None:
        """The version in the EDS file, None when it is missing or unreadable (then it is rewritten)."""
        try:
            return int(json.loads(self.path.read_text())["version_info"])
        except (OSError, ValueError, KeyError, TypeError):
            return None


class PressureFileHardStop:
    """The hard stop as the overload manager's injected-resource file (Envoy on the same host or volume)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def set(self, on: bool) -> None:
        try:
            write_overload(self.path, on)
        except OSError as exc:
            raise LeverError("overload_file", f"cannot write {self.path}: {exc}") from exc

    def is_on(self) -> bool | None:
        """True / False as the file says; None when it holds neither value (missing, or written by hand)."""
        pressure = read_overload(self.path)
        return {OVERLOAD_ON: True, OVERLOAD_OFF: False}.get(pressure or "")


class ListenerLimitHardStop:
    """The hard stop as the runtime connection limit of an Envoy listener (:func:`listener_limit_key`), set
    to 0 over the admin API and removed to lift it: Envoy then closes every new connection at accept and
    keeps the open ones.  Reaches an Envoy in another pod (Kubernetes) through its admin address."""

    def __init__(self, envoy: EnvoyAdminClient, listener: str) -> None:
        self.envoy = envoy
        self.key = listener_limit_key(listener)

    def set(self, on: bool) -> None:
        try:
            self.envoy.set_runtime({self.key: HARD_STOP_LIMIT if on else ""})
        except EnvoyAdminError as exc:
            raise LeverError("envoy", f"cannot set {self.key}: {exc}") from exc

    def is_on(self) -> bool | None:
        """True at limit 0, False when unset; None for any other value (set by hand)."""
        try:
            value = self.envoy.runtime_value(self.key)
        except EnvoyAdminError as exc:
            raise LeverError("envoy", f"cannot read Envoy's runtime: {exc}") from exc
        return {HARD_STOP_LIMIT: True, None: False}.get(value)


HARD_STOP_LIMIT = "0"  # the listener connection limit of the hard stop: no new connection


class EnvoyShedLever:
    """Shedding through Envoy: the circuit-breaker cap (runtime) and the hard stop (``hard_stop``: the
    overload pressure file, or a listener's runtime connection limit).

    :meth:`apply` reads the cap back (an admin that answers 200 without applying it is caught), and
    :meth:`in_force` tells whether Envoy still runs the plan: runtime overrides die with an Envoy
    restart, so the controller checks every pass while it sheds and applies the plan again.
    """

    def __init__(
        self, envoy: EnvoyAdminClient, envoy_cluster: str, hard_stop: PressureFileHardStop | ListenerLimitHardStop
    ) -> None:
        self.envoy = envoy
        self.envoy_cluster = envoy_cluster
        self.hard_stop = hard_stop

    def apply(self, plan: ShedPlan) -> None:
        try:
            self.envoy.set_max_connections(self.envoy_cluster, plan.max_connections)
        except EnvoyAdminError as exc:
            raise LeverError("envoy", f"cannot set the circuit-breaker cap: {exc}") from exc
        self.hard_stop.set(plan.hard_stop)
        if not self.in_force(plan):
            raise LeverError(
                "envoy",
                f"Envoy's runtime does not show the cap {plan.max_connections} and hard stop "
                f"{'on' if plan.hard_stop else 'off'} just set",
            )

    def in_force(self, plan: ShedPlan) -> bool:
        """True when Envoy's cap and the hard stop are ``plan``'s; raises LeverError when unreadable."""
        key = circuit_breaker_key(self.envoy_cluster)
        try:
            value = self.envoy.runtime_value(key)
        except EnvoyAdminError as exc:
            raise LeverError("envoy", f"cannot read Envoy's runtime: {exc}") from exc
        try:
            cap = None if value is None else int(value)
        except ValueError:
            return False
        return cap == plan.max_connections and self.hard_stop.is_on() == plan.hard_stop


def hard_stop_of(config: WebhookConfig, envoy: EnvoyAdminClient) -> PressureFileHardStop | ListenerLimitHardStop:
    """The hard stop ``config`` names: ``hard_stop_listener`` (runtime limit) or ``overload_file``."""
    if config.hard_stop_listener is not None:
        return ListenerLimitHardStop(envoy, config.hard_stop_listener)
    assert config.overload_file is not None  # WebhookConfig requires exactly one of the two
    return PressureFileHardStop(config.overload_file)
