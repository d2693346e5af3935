"""Crash and fault safety of the rebalancer (issue 13, faults 1 and 3), with the real CLI and a real Envoy.

* kill -9 at random points of the publish path, 20 times: after each restart the EDS file, the
  state file, REST EDS and Envoy agree, and no version number ever names two contents;
* Envoy's admin answering HTML, a read-only and a full state dir: every failure is counted in
  ``mqttlb_webhook_action_failures_total`` and the EDS file and the state never drift apart;
* a semantically invalid state file: exit 2, one line naming the file, nothing published.

The rebalancer runs as ``python -m mqttlb.cli webhook`` with the stack's config (``webhookrig``);
Envoy with the product bootstrap; Mosquitto with the stack's config; Prometheus is a stub.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import random
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from stackutil import running_envoy, wait_until
from webhookrig import (
    NODES,
    Brokers,
    FlakyEnvoyAdmin,
    PrometheusStub,
    View,
    alert,
    eds_file_view,
    envoy_view,
    failures,
    notification,
    post_alerts,
    post_drain,
    rest_eds_view,
    rig_topology,
    running_webhook,
    sigkill,
    state_view,
    status,
    view_of_discovery,
    webhook_argv,
    write_webhook_config,
)

from mqttlb.contract import ALERT_CPU_CRITICAL, ALERT_CPU_HIGH, Action
from mqttlb.envoy_admin import EnvoyAdminClient, circuit_breaker_key
from mqttlb.stack.topology import Topology
from mqttlb.webhook.eds import Endpoint, write_eds_file
from mqttlb.webhook.state import StateError, WebhookState, load_state, save_state

pytestmark = pytest.mark.live

KILLS = 20
# CPU patterns the kill test flips between: every pair of nodes differs by >= 0.3, so with no
# rebalance alert firing the weights are held (recover_max_spread), and with one firing they move.
HOT_NODE1 = {"node1": 0.8, "node2": 0.5, "node3": 0.2}
HOT_NODE3 = {"node1": 0.2, "node2": 0.5, "node3": 0.8}
FAST_BELOW_HIGH = dict.fromkeys(NODES, 0.5)  # short-window CPU under cpu_high: no early steering


def content(view: View) -> tuple[tuple[tuple[str, int], ...], tuple[str, ...]]:
    return tuple(sorted(view.weights.items())), view.draining


@dataclass
class Ledger:
    """Every (version -> content) observed anywhere; a second content for a version is a conflict."""

    seen: dict[int, tuple[object, str]] = field(default_factory=dict)
    conflicts: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, view: View) -> None:
        with self.lock:
            previous = self.seen.setdefault(view.version, (content(view), view.where))
            if previous[0] != content(view):
                self.conflicts.append(
                    f"version {view.version}: {previous[1]} had {previous[0]}, {view.where} has {content(view)}"
                )

    @property
    def highest(self) -> int:
        with self.lock:
            return max(self.seen, default=0)


@contextlib.contextmanager
def watching_eds_file(topo: Topology, ledger: Ledger) -> Iterator[list[int]]:
    """Record every EDS file version a 2 ms poll sees (yields the list of versions, in order seen)."""
    stop = threading.Event()
    versions: list[int] = []

    def watch() -> None:
        while not stop.is_set():
            try:
                text = topo.state.eds_file.read_text()
            except FileNotFoundError:
                text = ""
            if text:
                try:
                    view = view_of_discovery("eds file", json.loads(text))
                except (ValueError, KeyError) as exc:
                    ledger.conflicts.append(f"unreadable EDS file: {exc}: {text[:200]!r}")
                else:
                    ledger.record(view)
                    if not versions or versions[-1] != view.version:
                        versions.append(view.version)
            stop.wait(0.002)

    thread = threading.Thread(target=watch, daemon=True, name="eds-watch")
    thread.start()
    try:
        yield versions
    finally:
        stop.set()
        thread.join(timeout=5)


def agreed_view(topo: Topology, ledger: Ledger, state_file: Path | None = None) -> View | None:
    """The common view when the state file, the EDS file, REST EDS and Envoy agree, else None."""
    views = [
        state_view(state_file or topo.state.webhook_state),
        eds_file_view(topo),
        rest_eds_view(topo),
        envoy_view(topo),
    ]
    for view in views:
        ledger.record(view)
    first = views[0]
    if all((v.version, content(v)) == (first.version, content(first)) for v in views):
        return first
    return None


def wait_agreed(
    topo: Topology,
    ledger: Ledger,
    what: str,
    state_file: Path | None = None,
    until: Callable[[View], bool] = lambda _view: True,
) -> View:
    """The view once the state file, EDS file, REST EDS and Envoy agree on one for which ``until`` holds."""

    def agreed() -> View | None:
        view = agreed_view(topo, ledger, state_file)
        return view if view is not None and until(view) else None

    return wait_until(agreed, 15, f"{what}: file, state, REST EDS and Envoy agree")


def drained_and_steered(view: View) -> bool:
    """node2 draining (the drain request) and node1 below neutral (the rebalance alert, node1 hot)."""
    return view.draining == ("node2",) and view.weights["node1"] < 100


# --------------------------------------------------------------------------- kill -9
KILL_POINTS = ("state saved", "EDS published", "anywhere")


def signature(path: Path) -> tuple[int, int, int] | None:
    """Changes whenever ``path`` is replaced (atomic rename: new inode, mtime, size)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_mtime_ns, st.st_size


def kill_once_replaced(proc: subprocess.Popen[bytes], path: Path, before: object, timeout: float = 1.0) -> None:
    """SIGKILL ``proc`` as soon as ``path`` differs from ``before`` (a tight stat loop), at the latest after
    ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while signature(path) == before and time.monotonic() < deadline:
        pass
    sigkill(proc)


def drive_then_kill(
    topo: Topology,
    proc: subprocess.Popen[bytes],
    prometheus: PrometheusStub,
    rng: random.Random,
    start: View,
    point: str,
    iteration: int,
) -> None:
    """Make passes publish (a rebalance alert fires, CPU flips, drains toggle) for 0.2-1.2 s, then
    toggle one more drain and SIGKILL the webhook at ``point`` of the pass it wakes: right after it
    replaced the state file, right after it replaced the EDS file, or at a random moment."""
    starts = f"2026-11-30T13:{iteration:02d}:00Z"
    post_alerts(topo, notification([alert(ALERT_CPU_HIGH, Action.REBALANCE, starts_at=starts)], "cpu"))
    draining = {n: n in start.draining for n in ("node2", "node3")}  # node1 always takes connections

    def toggle_drain() -> None:
        node = rng.choice(sorted(draining))
        draining[node] = not draining[node]
        post_drain(topo, node, draining[node])

    deadline = time.monotonic() + rng.uniform(0.2, 1.2)
    while time.monotonic() < deadline:
        if rng.random() < 0.3:
            prometheus.set(cpu=rng.choice([HOT_NODE1, HOT_NODE3]), fast=FAST_BELOW_HIGH)
        else:
            toggle_drain()
        time.sleep(rng.uniform(0.01, 0.12))
    watched = {"state saved": topo.state.webhook_state, "EDS published": topo.state.eds_file}.get(point)
    if watched is not None:
        before = signature(watched)
        toggle_drain()
        kill_once_replaced(proc, watched, before)
    else:
        toggle_drain()
        time.sleep(rng.uniform(0.0, 0.04))
        sigkill(proc)


@pytest.mark.slow
def test_sigkill_anywhere_in_the_publish_path_never_drifts_or_reuses_a_version(tmp_path):
    seed = int(os.environ.get("MQTTLB_KILL_SEED", "1313"))
    rng = random.Random(seed)
    topo = rig_topology(tmp_path, policy={"cooldown_seconds": 0.2})
    prometheus = PrometheusStub()
    prometheus.set(cpu=HOT_NODE1, fast=FAST_BELOW_HIGH)
    write_webhook_config(topo, prometheus_url=prometheus.url)
    ledger = Ledger()
    in_window = 0  # kills that left the state file ahead of the EDS file
    published_during_drive = 0
    try:
        with Brokers(topo), running_envoy(topo), watching_eds_file(topo, ledger) as versions:
            previous_highest = 0
            for kill in range(KILLS + 1):
                with running_webhook(topo, log=topo.state.logs / f"webhook-{kill}.log") as proc:
                    agreed = wait_agreed(topo, ledger, f"start {kill}")
                    assert agreed.version > previous_highest, (
                        f"restart {kill} published version {agreed.version}, not above every version seen "
                        f"before ({previous_highest}): a version would be reused"
                    )
                    if kill == KILLS:
                        break
                    drive_then_kill(topo, proc, prometheus, rng, agreed, KILL_POINTS[kill % len(KILL_POINTS)], kill)
                state_after, eds_after = state_view(topo.state.webhook_state), eds_file_view(topo)
                ledger.record(state_after)
                ledger.record(eds_after)
                assert state_after.version >= eds_after.version, "the EDS file got ahead of the state file"
                in_window += state_after.version > eds_after.version
                published_during_drive += eds_after.version > agreed.version
                previous_highest = ledger.highest
            assert not ledger.conflicts, "\n".join(ledger.conflicts[:10])
            assert published_during_drive >= KILLS // 2, "the drive phase should publish new snapshots"
            assert in_window >= 2, "kills right after the state was saved should land before the EDS publish"
            print(
                f"kill -9 x{KILLS} (seed {seed}, points {KILL_POINTS} in turn): {len(ledger.seen)} versions seen, "
                f"{len(versions)} EDS file changes watched, {in_window} kills between state save and EDS publish, "
                f"{published_during_drive} runs published before the kill; no version reused"
            )
    finally:
        prometheus.close()


# --------------------------------------------------------------------------- Envoy admin answering HTML
def test_envoy_admin_answering_html_is_counted_and_nothing_drifts(tmp_path):
    topo = rig_topology(tmp_path, policy={"cooldown_seconds": 0.5})
    prometheus = PrometheusStub()
    prometheus.set(cpu=HOT_NODE1, fast=FAST_BELOW_HIGH)
    ledger = Ledger()
    try:
        with Brokers(topo), running_envoy(topo):
            admin = FlakyEnvoyAdmin(topo.envoy_admin.url())
            write_webhook_config(topo, prometheus_url=prometheus.url, envoy_admin=admin.url)
            try:
                with running_webhook(topo):
                    start = wait_agreed(topo, ledger, "start")
                    # 1. every admin read answers HTML: each pass is skipped and counted
                    admin.garbage = lambda method, path, n: True
                    post_drain(topo, "node2", True)
                    post_alerts(topo, notification([alert(ALERT_CPU_HIGH, Action.REBALANCE)], "cpu"))
                    wait_until(lambda: failures(topo, "observe", "envoy") >= 3, 10, "observe failures counted")
                    held = wait_agreed(topo, ledger, "admin answering HTML")
                    assert (held.version, content(held)) == (start.version, content(start))
                    assert held.draining == ()
                    # 2. only the read that verifies a pass answers HTML: the pass commits (state,
                    # then EDS), Envoy applies it, the failed verification is counted
                    admin.garbage = lambda method, path, n: method == "GET" and path == "/clusters" and n % 2 == 1
                    wait_until(lambda: failures(topo, "verify", "envoy_unreachable") >= 2, 10, "verify failures")
                    admin.garbage = lambda method, path, n: False
                    # the drain and the rebalance asked for while Envoy was unreadable are applied
                    wait_agreed(topo, ledger, "admin healthy again", until=drained_and_steered)
                    assert admin.garbage_answers >= 5
            finally:
                admin.close()
        assert not ledger.conflicts, "\n".join(ledger.conflicts[:10])
    finally:
        prometheus.close()


def test_envoy_admin_answering_html_to_the_shed_cap_is_counted_and_applied_later(tmp_path):
    """An admin that answers 200 with HTML to /runtime_modify has not set the cap: the read-back
    catches it, the failure is counted, and the passes apply the cap once the admin answers again."""
    floor = 20
    topo = rig_topology(tmp_path, policy={"cooldown_seconds": 60, "shed_min_connections": floor})
    prometheus = PrometheusStub()
    try:
        with Brokers(topo), running_envoy(topo):
            admin = FlakyEnvoyAdmin(topo.envoy_admin.url())
            write_webhook_config(topo, prometheus_url=prometheus.url, envoy_admin=admin.url)
            real = EnvoyAdminClient(topo.envoy_admin.url())
            key = circuit_breaker_key(topo.settings.envoy_cluster)
            try:
                with running_webhook(topo):
                    admin.garbage = lambda method, path, n: path == "/runtime_modify"
                    shed = alert(ALERT_CPU_CRITICAL, Action.SHED, starts_at="2026-11-30T12:10:00Z")
                    post_alerts(topo, notification([shed], ALERT_CPU_CRITICAL))
                    wait_until(lambda: failures(topo, "shed", "envoy") >= 3, 10, "shed failures counted")
                    assert status(topo)["shed_level"] == 1, "the level is committed; applying it is retried"
                    assert real.runtime_value(key) is None, "Envoy never got the cap"
                    admin.garbage = lambda method, path, n: False
                    wait_until(lambda: real.runtime_value(key) == str(floor), 5, "the cap applied once Envoy answers")
                    assert status(topo)["shed_level"] == 1
            finally:
                admin.close()
    finally:
        prometheus.close()


# --------------------------------------------------------------------------- read-only and full state dir
def unprivileged() -> tuple[str, ...]:
    """A prefix that runs a command without the power to ignore file permissions (root ignores chmod)."""
    if os.geteuid() != 0:
        return ()
    return ("setpriv", "--bounding-set=-dac_override,-dac_read_search", "--")


def private_tmpfs(directory: Path, size: str) -> tuple[str, ...]:
    """A prefix that runs a command with a ``size`` tmpfs mounted on ``directory`` in its own mount namespace."""
    unshare = ["unshare", "--mount", "--propagation", "private"]
    if os.geteuid() != 0:
        unshare.insert(1, "--map-root-user")
    return (*unshare, "sh", "-c", f'mount -t tmpfs -o size={size} tmpfs "$0" && exec "$@"', str(directory))


def fill(directory: Path) -> Path:
    """Fill the filesystem of ``directory`` with one file; returns it."""
    filler = directory / "filler"
    with filler.open("wb", buffering=0) as out:
        for _ in range(100_000):  # bounded: 400 MB at most
            try:
                out.write(b"\0" * 4096)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc
                break
        else:
            raise AssertionError(f"{directory} never filled up")
    return filler


@pytest.mark.parametrize("fault", ["read-only", "full"])
def test_unwritable_state_dir_is_counted_and_eds_and_state_stay_together(tmp_path, fault):
    topo = rig_topology(tmp_path, policy={"cooldown_seconds": 0.5})
    state_dir = topo.state.root / "webhook-state"
    state_dir.mkdir(parents=True)
    prometheus = PrometheusStub()
    prometheus.set(cpu=HOT_NODE1, fast=FAST_BELOW_HIGH)
    ledger = Ledger()
    overrides: dict[str, str] = {"state_file": str(state_dir / "state.json")}
    if fault == "full":  # the stack keeps the audit log beside the state: both on the full filesystem
        overrides["audit_log"] = str(state_dir / "audit.jsonl")
    write_webhook_config(topo, prometheus_url=prometheus.url, **overrides)
    prefix = unprivileged() if fault == "read-only" else private_tmpfs(state_dir, "256k")
    try:
        with Brokers(topo), running_envoy(topo), running_webhook(topo, argv_prefix=prefix) as proc:
            # the full filesystem is only visible in the webhook's mount namespace
            seen_dir = state_dir if fault == "read-only" else Path(f"/proc/{proc.pid}/root{state_dir}")
            state_file = seen_dir / "state.json"
            start = wait_agreed(topo, ledger, "start", state_file)
            if fault == "read-only":
                state_dir.chmod(0o500)
            else:
                filler = fill(seen_dir)
            try:
                post_drain(topo, "node2", True)
                post_alerts(topo, notification([alert(ALERT_CPU_HIGH, Action.REBALANCE)], "cpu"))
                wait_until(lambda: failures(topo, "commit", "state_write") >= 3, 10, "state write failures counted")
                held = wait_agreed(topo, ledger, f"{fault} state dir", state_file)
                assert (held.version, content(held)) == (start.version, content(start)), "nothing committed"
                assert status(topo)["version"] == start.version
                assert failures(topo, "reconcile", "exception") == 0, "a failed write must not crash the pass"
                if fault == "full":
                    assert failures(topo, "audit", "write") >= 1, "the audit log on the full disk fails too"
            finally:
                if fault == "read-only":
                    state_dir.chmod(0o700)
                else:
                    filler.unlink()
            # the drain and the rebalance asked for while the state was unwritable are applied now
            final = wait_agreed(topo, ledger, "state dir writable again", state_file, until=drained_and_steered)
            assert final.version > start.version
            assert proc.poll() is None
        assert not ledger.conflicts, "\n".join(ledger.conflicts[:10])
    finally:
        prometheus.close()


def test_start_with_an_unwritable_state_dir_exits_2_and_publishes_nothing(tmp_path):
    topo = rig_topology(tmp_path)
    state_dir = topo.state.root / "webhook-state"
    state_dir.mkdir(parents=True)
    state_dir.chmod(0o500)
    write_webhook_config(topo, prometheus_url="http://127.0.0.1:1", state_file=str(state_dir / "state.json"))
    result = subprocess.run([*unprivileged(), *webhook_argv(topo)], capture_output=True, timeout=60, text=True)
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    assert result.returncode == 2, result.stderr[-2000:]
    assert len(lines) == 1 and str(state_dir / "state.json") in lines[0], lines
    assert not topo.state.eds_file.exists()


# --------------------------------------------------------------------------- invalid state file
def neutral() -> dict[str, int]:
    return dict.fromkeys(NODES, 100)


INVALID_STATES = {
    "weight 99999": ({"weights": {**neutral(), "node1": 99999}}, "99999"),
    "weight 0": ({"weights": {**neutral(), "node2": 0}}, "weight of node2 is 0"),
    "weight -5": ({"weights": {**neutral(), "node3": -5}}, "weight of node3 is -5"),
    "every node draining": ({"draining": list(NODES)}, "every node is draining"),
    "shed level 99": ({"shed_level": 99, "shed_anchor": 50}, "shed_level 99"),
    "a directory": (None, "cannot be read"),
}


class RecordingAdmin(FlakyEnvoyAdmin):
    """An 'Envoy admin' that records requests and forwards nothing (there is no Envoy)."""

    def answer(self, method: str, path: str, query: dict[str, list[str]]) -> tuple[int, object, str]:
        return 200, {}, "application/json"


@pytest.mark.parametrize("eds_before", ["present", "absent"])
@pytest.mark.parametrize("case", sorted(INVALID_STATES))
def test_invalid_state_file_exits_2_with_one_line_and_publishes_nothing(tmp_path, case, eds_before):
    change, message = INVALID_STATES[case]
    topo = rig_topology(tmp_path)
    admin = RecordingAdmin("http://127.0.0.1:1")
    try:
        write_webhook_config(topo, prometheus_url="http://127.0.0.1:1", envoy_admin=admin.url)
        state_file = topo.state.webhook_state
        if change is None:
            state_file.mkdir(parents=True)
        else:
            document = {"version": 4, "nodes": list(NODES), "weights": neutral(), **change}
            state_file.write_text(json.dumps(document))
        if eds_before == "present":
            endpoints = [Endpoint(n.name, n.ip, n.port, 100) for n in topo.nodes]
            write_eds_file(topo.state.eds_file, 3, topo.settings.envoy_cluster, endpoints)
        topo.state.pressure_file.parent.mkdir(parents=True, exist_ok=True)
        topo.state.pressure_file.write_text("0\n")
        watched = [topo.state.eds_file, topo.state.pressure_file, topo.state.webhook_audit]
        before = {p: p.read_bytes() if p.exists() else None for p in watched}
        state_before = None if change is None else state_file.read_bytes()

        result = subprocess.run(webhook_argv(topo), capture_output=True, timeout=60, text=True)

        lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
        assert result.returncode == 2, result.stderr[-2000:]
        assert len(lines) == 1, lines
        assert str(state_file) in lines[0] and message in lines[0], lines[0]
        assert "Traceback" not in result.stderr
        assert {p: p.read_bytes() if p.exists() else None for p in watched} == before, "something was published"
        if state_before is not None:
            assert state_file.read_bytes() == state_before
        assert admin.requests == [], f"Envoy's admin was called: {admin.requests}"
    finally:
        admin.close()


def test_state_round_trip_and_unusable_files_are_one_line_errors(tmp_path):
    path = tmp_path / "state.json"
    assert load_state(path) is None
    state = WebhookState(version=7, nodes=["a", "b"], weights={"a": 10, "b": 190}, shed_level=2, shed_anchor=40)
    save_state(path, state)
    assert load_state(path) == state
    for text in ('{"version": -1}', "{trunc", json.dumps({"unknown": 1})):
        path.write_text(text)
        with pytest.raises(StateError, match=str(path)) as raised:
            load_state(path)
        assert "\n" not in str(raised.value)


def test_sigkill_of_a_plain_writer_leaves_a_complete_eds_file(tmp_path):
    """The EDS file is replaced atomically: a writer killed mid-loop leaves a whole snapshot and no temp file."""
    path = tmp_path / "eds" / "eds.json"
    writer = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from mqttlb.webhook.eds import Endpoint, write_eds_file\n"
        "deadline = time.monotonic() + 10\n"
        "for version in range(1, 200_001):\n"
        "    if time.monotonic() > deadline:\n"
        "        break\n"
        "    eps = [Endpoint(f'node{i}', '127.0.0.1', 18830 + i, 1 + (version + i) % 400) for i in range(1, 51)]\n"
        "    write_eds_file(Path(sys.argv[1]), version, 'mqtt_brokers', eps)\n"
        "    if version == 3:\n"
        "        print('started', flush=True)\n"
    )
    for delay in (0.05, 0.2, 0.4):
        proc = subprocess.Popen(
            [sys.executable, "-c", writer, str(path)], stdout=subprocess.PIPE, start_new_session=True
        )
        try:
            assert proc.stdout is not None
            assert proc.stdout.readline().strip() == b"started"
            time.sleep(delay)
        finally:
            sigkill(proc)
        assert proc.returncode == -9, "the writer must have been killed mid-loop, not finished"
        view = view_of_discovery("eds file", json.loads(path.read_text()))
        assert len(view.weights) == 50
        assert all(view.weights[f"node{i}"] == 1 + (view.version + i) % 400 for i in range(1, 51))
        assert sorted(p.name for p in path.parent.iterdir()) == ["eds.json"], "temp files stay outside the dir"
