"""The controller's levers on Envoy: publish a snapshot (EDS file), set the shedding plan (the cap over the
admin API; the hard stop as a pressure file or a listener's runtime connection limit) on one Envoy or on
every address of its admin host name.

Adapters only: they know nothing of policy and raise :class:`LeverError` with a bounded reason.
"""

from __future__ import annotations

import dataclasses
import json
import math
import socket
import urllib.parse
from collections.abc import Callable
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


def admin_addresses(admin_url: str) -> list[str]:
    """Every base URL ``admin_url``'s host resolves to (``http://10.1.2.3:9901``, IPv6 in brackets), sorted;
    a headless Service's name gives one per ready pod.  Raises LeverError("envoy") when it resolves to none."""
    parts = urllib.parse.urlsplit(admin_url)
    host, port = parts.hostname or "", parts.port or 80
    try:
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise LeverError("envoy", f"cannot resolve Envoy's admin host {host!r}: {exc}") from exc
    addresses = sorted({str(info[4][0]) for info in found})
    if not addresses:
        raise LeverError("envoy", f"Envoy's admin host {host!r} resolves to no address")
    return [f"{parts.scheme}://{f'[{a}]' if ':' in a else a}:{port}" for a in addresses]


class EnvoyFleetShedLever:
    """The shed lever on every Envoy behind one admin host name (``envoy_admin_all_addresses``): the host is
    resolved afresh on each call (:func:`admin_addresses`; a headless Service: every ready Envoy pod), and
    each address gets the hard stop and an equal share of the cap, ``ceil(cap / Envoys)`` (each Envoy's circuit
    breaker counts its own connections; clients spread evenly over the replicas), through its own
    :class:`EnvoyShedLever` (``lever_for``).  An Envoy that joins or leaves changes the share and fails
    :meth:`in_force`, so the controller applies the plan again."""

    def __init__(
        self,
        admin_url: str,
        lever_for: Callable[[str], EnvoyShedLever],
        resolve: Callable[[str], list[str]] = admin_addresses,
    ) -> None:
        self.admin_url = admin_url
        self.lever_for = lever_for
        self.resolve = resolve

    def _levers(self) -> list[tuple[str, EnvoyShedLever]]:
        return [(url, self.lever_for(url)) for url in self.resolve(self.admin_url)]

    @staticmethod
    def share(plan: ShedPlan, envoys: int) -> ShedPlan:
        """``plan`` for one of ``envoys`` Envoys: its cap divided among them (rounded up, at least 1)."""
        if plan.max_connections is None:
            return plan
        return dataclasses.replace(plan, max_connections=max(1, math.ceil(plan.max_connections / envoys)))

    def apply(self, plan: ShedPlan) -> None:
        """Apply ``plan`` on every Envoy (all are tried); LeverError naming the first that failed."""
        failures: list[tuple[str, LeverError]] = []
        levers = self._levers()
        for url, lever in levers:
            try:
                lever.apply(self.share(plan, len(levers)))
            except LeverError as exc:
                failures.append((url, exc))
        if failures:
            url, first = failures[0]
            raise LeverError(first.reason, f"{len(failures)} Envoy(s) failed, first {url}: {first}") from first

    def in_force(self, plan: ShedPlan) -> bool:
        """True when every Envoy the host resolves to runs ``plan``; LeverError when one cannot be read."""
        levers = self._levers()
        return all(lever.in_force(self.share(plan, len(levers))) for _, lever in levers)


def hard_stop_of(config: WebhookConfig, envoy: EnvoyAdminClient) -> PressureFileHardStop | ListenerLimitHardStop:
    """The hard stop ``config`` names: ``hard_stop_listener`` (runtime limit) or ``overload_file``."""
    if config.hard_stop_listener is not None:
        return ListenerLimitHardStop(envoy, config.hard_stop_listener)
    assert config.overload_file is not None  # WebhookConfig requires exactly one of the two
    return PressureFileHardStop(config.overload_file)


def shed_lever_of(
    config: WebhookConfig,
    envoy: EnvoyAdminClient,
    timeout: float,
    resolve: Callable[[str], list[str]] = admin_addresses,
) -> EnvoyShedLever | EnvoyFleetShedLever:
    """The shed lever ``config`` describes: on ``envoy`` (the one at ``envoy_admin``), or with
    ``envoy_admin_all_addresses`` on every Envoy its host resolves to (``resolve``; clients with
    ``timeout`` s)."""
    if not config.envoy_admin_all_addresses:
        return EnvoyShedLever(envoy, config.envoy_cluster, hard_stop_of(config, envoy))

    def lever_for(url: str) -> EnvoyShedLever:
        one = EnvoyAdminClient(url, timeout=timeout, session=envoy.session)
        return EnvoyShedLever(one, config.envoy_cluster, hard_stop_of(config, one))

    return EnvoyFleetShedLever(config.envoy_admin, lever_for, resolve)
