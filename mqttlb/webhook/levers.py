"""The controller's levers on Envoy: publish a snapshot (EDS file), set the shedding plan.

Adapters only: they know nothing of policy and raise :class:`LeverError` with a bounded reason.
"""

from __future__ import annotations

import json
from pathlib import Path

from mqttlb.atomic import atomic_write_text
from mqttlb.envoy_admin import EnvoyAdminClient, EnvoyAdminError, circuit_breaker_key
from mqttlb.webhook.actuators import read_overload, write_overload
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


class EnvoyShedLever:
    """Shedding through Envoy: the circuit-breaker cap (runtime) and the overload pressure file.

    :meth:`apply` reads the cap back (an admin that answers 200 without applying it is caught), and
    :meth:`in_force` tells whether Envoy still runs the plan: runtime overrides die with an Envoy
    restart, so the controller checks every pass while it sheds and applies the plan again.
    """

    def __init__(self, envoy: EnvoyAdminClient, envoy_cluster: str, overload_file: Path) -> None:
        self.envoy = envoy
        self.envoy_cluster = envoy_cluster
        self.overload_file = Path(overload_file)

    def apply(self, plan: ShedPlan) -> None:
        try:
            self.envoy.set_max_connections(self.envoy_cluster, plan.max_connections)
        except EnvoyAdminError as exc:
            raise LeverError("envoy", f"cannot set the circuit-breaker cap: {exc}") from exc
        try:
            write_overload(self.overload_file, plan.hard_stop)
        except OSError as exc:
            raise LeverError("overload_file", f"cannot write {self.overload_file}: {exc}") from exc
        if not self.in_force(plan):
            raise LeverError("envoy", f"Envoy's runtime does not show the cap {plan.max_connections} just set")

    def in_force(self, plan: ShedPlan) -> bool:
        """True when Envoy's cap and the pressure file are ``plan``'s; raises LeverError when unreadable."""
        key = circuit_breaker_key(self.envoy_cluster)
        try:
            value = self.envoy.runtime_value(key)
        except EnvoyAdminError as exc:
            raise LeverError("envoy", f"cannot read Envoy's runtime: {exc}") from exc
        try:
            cap = None if value is None else int(value)
        except ValueError:
            return False
        pressure = read_overload(self.overload_file)
        return cap == plan.max_connections and pressure == (OVERLOAD_ON if plan.hard_stop else OVERLOAD_OFF)
