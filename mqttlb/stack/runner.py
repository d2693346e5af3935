"""Start, stop and inspect the local stack under supervisord.

supervisord (from PyPI) is the process supervisor: it restarts crashed parts, keeps their
logs and reports their PIDs.  Its control interface is XML-RPC on a Unix socket in the state dir
(``supervisord.sock``, mode 0700): no TCP port, so no other local user can stop or start a part.
This module renders its config, starts it, waits until every
part answers, and on the way down stops exactly the PIDs it started.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import xmlrpc.client
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import requests
from supervisor.xmlrpc import SupervisorTransport

from mqttlb.commandline import plural
from mqttlb.envoy_admin import EndpointStatus, EnvoyAdminClient, EnvoyAdminError
from mqttlb.secure import SecretError, read_secret
from mqttlb.shipped import checkout_root
from mqttlb.stack import builders
from mqttlb.stack.addresses import stack_addresses
from mqttlb.stack.config import HIVEMQ_JAR, StackConfig, StackConfigError, check_binaries, recorded_config
from mqttlb.stack.held_drains import clear_held_drains, cleared_drain_line, held_drain_lines, held_drains
from mqttlb.stack.render import Program, programs, render_all
from mqttlb.stack.topology import LOOPBACK, Paths, native_topology

log = logging.getLogger("mqttlb.stack")

READY_TIMEOUT_SECONDS = 90.0
BROKER_NAMES = {"mosquitto": "Mosquitto", "hivemq": "HiveMQ CE"}
STOP_TIMEOUT_SECONDS = 30.0


class StackError(RuntimeError):
    """The stack could not be started or stopped; the message says which part and why."""


@dataclass(frozen=True)
class OperatorCommands:
    """How the operator stops the stack and asks for its status, as the messages spell it (backquoted)."""

    down: str
    status: str


def operator_commands(cwd: Path | None = None) -> OperatorCommands:
    """``make stack-down`` / ``make stack-status`` when ``cwd`` (default: the current directory) is the
    checkout mqttlb runs from, where the Makefile is; else ``mqttlb stack down`` / ``mqttlb stack status``
    (an installed wheel, or a checkout's mqttlb run from another folder)."""
    root = checkout_root()
    here = (cwd or Path.cwd()).resolve()
    if root is not None and here == root.resolve() and (root / "Makefile").is_file():
        return OperatorCommands("`make stack-down`", "`make stack-status`")
    return OperatorCommands("`mqttlb stack down`", "`mqttlb stack status`")


@dataclass(frozen=True)
class ComponentStatus:
    name: str
    up: bool
    pid: int | None
    address: str
    detail: str

    def line(self) -> str:
        state = "up" if self.up else "down"
        pid = f"pid {self.pid}" if self.pid else "pid -"
        detail = f"  ({self.detail})" if self.detail else ""
        return f"{self.name:<20} {state:<5} {pid:<11} {self.address}{detail}"


def port_accepts(port: int, host: str = LOOPBACK, timeout: float = 0.5) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=timeout):
        return True
    return False


def _http_ok(
    url: str,
    timeout: float = 1.0,
    token_file: Path | None = None,
    password_file: Path | None = None,
    verify: str | bool = True,
) -> bool:
    """GET ``url`` answers 200 (with the bearer token in ``token_file``, or as builders.WEB_USER with the
    password in ``password_file``, if given; ``verify``: the CA file of an https URL)."""
    try:
        headers = {"Authorization": f"Bearer {read_secret(token_file)}"} if token_file is not None else {}
        auth = (builders.WEB_USER, read_secret(password_file)) if password_file is not None else None
        return requests.get(url, timeout=timeout, headers=headers, auth=auth, verify=verify).status_code == 200
    except SecretError:  # the token or password file is not there (yet), or still empty
        return False
    except requests.RequestException:
        return False


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child still answers kill(0); treat it as gone.
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().split(") ", 1)[1][0] != "Z"
    except (OSError, IndexError):  # gone between kill(0) and the read (ENOENT or ESRCH)
        return False


class Stack:
    def __init__(
        self, cfg: StackConfig, out: Callable[[str], None] | None = None, commands: OperatorCommands | None = None
    ) -> None:
        """``commands``: how the messages tell the operator to stop the stack and ask for its status
        (:func:`operator_commands` unless given: a temporary stack names its own)."""
        self.cfg = cfg
        self.topology = native_topology(cfg)
        self.paths: Paths = self.topology.state
        self.out = out or (lambda line: print(line, flush=True))
        self.commands = commands or operator_commands()

    # --- supervisord plumbing -------------------------------------------------------
    def _rpc(self) -> xmlrpc.client.ServerProxy:
        socket_url = f"unix://{self.paths.supervisor_socket}"
        # the host part is unused: SupervisorTransport connects to the socket
        return xmlrpc.client.ServerProxy("http://supervisord", transport=SupervisorTransport(None, None, socket_url))

    def web_session(self) -> requests.Session:
        """A session that logs in to the stack's Prometheus and Alertmanager (builders.WEB_USER and the
        generated password); raises SecretError before the stack has written the password."""
        return builders.web_client_auth(self.topology).session()

    def supervisord_pid(self) -> int | None:
        """PID of this stack's supervisord, if it runs (a stale PID file of a crash is ignored)."""
        try:
            pid = int(self.paths.supervisord_pid.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return None
        if b"supervisord" not in cmdline or str(self.paths.supervisord_conf).encode() not in cmdline:
            return None  # the PID was reused by another process
        return pid if _pid_alive(pid) else None

    def is_running(self) -> bool:
        return self.supervisord_pid() is not None

    def _process_infos(self) -> list[dict]:
        try:
            return list(self._rpc().supervisor.getAllProcessInfo())  # type: ignore[arg-type]
        except (OSError, xmlrpc.client.Error):
            return []

    def programs(self) -> list[Program]:
        """The programs as rendered, with bare binary names (status only needs names and addresses)."""
        return programs(
            self.topology,
            {n: n for n in ("mosquitto", "java", HIVEMQ_JAR, "envoy", "prometheus", "prometheus-alertmanager")},
        )

    # --- up -----------------------------------------------------------------------------
    def up(self, timeout: float = READY_TIMEOUT_SECONDS) -> None:
        if self.is_running():
            recorded = recorded_config(self.paths.root)
            if recorded is not None and recorded.model_dump(mode="json") != self.cfg.model_dump(mode="json"):
                raise StackError(
                    f"the stack in {self.paths.root} is already running with other settings; "
                    f"run {self.commands.down} first to apply the new ones"
                )
            self._start_stopped_parts(timeout)
            self.print_addresses()
            for line in self.held_drain_lines():
                self.out(line)
            return
        binaries = check_binaries(self.cfg.broker)
        self._refuse_busy_ports()
        drain_notes = self._settle_held_drains()
        paths, progs = render_all(self.cfg, binaries)
        self.out(f"configs rendered into {paths.root}")
        supervisord = str(Path(sys.executable).with_name("supervisord"))
        if not Path(supervisord).exists():
            supervisord = binaries["supervisord"]
        result = subprocess.run(
            [supervisord, "-c", str(paths.supervisord_conf)], capture_output=True, text=True, timeout=30
        )
        if result.returncode != 0:
            raise StackError(f"supervisord failed to start: {(result.stderr or result.stdout).strip()}")
        self.out(f"supervisord started; waiting for {len(progs)} components (up to {timeout:.0f} s)")
        try:
            self._wait_ready(progs, timeout)
        except StackError:
            self.out("start-up failed; stopping what was started")
            self.down(quiet=True)
            raise
        self.print_addresses()
        for line in drain_notes:
            self.out(line)

    def _start_stopped_parts(self, timeout: float) -> None:
        """On a running stack: start (supervisord startProcess, waiting for RUNNING) every part it does not report
        RUNNING -- stopped by hand, exited, given up on -- and wait up to ``timeout`` seconds until each
        answers.  Says which it started, or that nothing changed.  Raises StackError naming the parts
        that cannot be started or do not answer in time; the parts that were running are left alone."""
        infos = {info["name"]: info for info in self._process_infos()}
        progs = [prog for prog in self.programs() if infos.get(prog.name, {}).get("statename") != "RUNNING"]
        pid = self.supervisord_pid()
        if not progs:
            self.out(f"stack already running (supervisord pid {pid}); nothing changed")
            return
        names = ", ".join(prog.name for prog in progs)
        self.out(f"stack already running (supervisord pid {pid}); starting what is not running: {names}")
        failed = []
        for prog in progs:
            try:
                self._rpc().supervisor.startProcess(prog.name, True)  # returns once RUNNING, or a Fault
            except (OSError, xmlrpc.client.Error) as exc:
                reason = exc.faultString if isinstance(exc, xmlrpc.client.Fault) else str(exc)
                failed.append(f"{prog.name} ({reason})")
        if failed:
            raise StackError(
                f"cannot start {', '.join(failed)}; see {self.paths.logs}/<name>.log "
                f"(the other parts keep running; stop with {self.commands.down})"
            )
        self._wait_ready(progs, timeout)

    def _settle_held_drains(self) -> list[str]:
        """Before the webhook starts: clear the drains its state holds when the broker changed since the
        last start (other brokers under the same names), else list them (mqttlb.stack.held_drains).
        Returns the lines to print after the addresses."""
        state_file = self.paths.webhook_state
        previous = recorded_config(self.paths.root)
        if previous is not None and previous.broker != self.cfg.broker:
            try:
                cleared = clear_held_drains(state_file)
            except OSError as exc:
                raise StackError(f"cannot clear the held drains in {state_file}: {exc}") from None
            if cleared:
                return [cleared_drain_line(cleared, BROKER_NAMES[previous.broker], BROKER_NAMES[self.cfg.broker])]
            return []
        return held_drain_lines(self.topology, held_drains(state_file))

    def held_drain_lines(self) -> list[str]:
        """The drains the running webhook holds, with their undrain commands (for `stack status`)."""
        return held_drain_lines(self.topology, held_drains(self.paths.webhook_state))

    def _refuse_busy_ports(self) -> None:
        ports = self.cfg.listening_ports()
        busy = [f"{name} ({port})" for name, port in ports.items() if port_accepts(port, timeout=0.2)]
        if busy:
            raise StackConfigError(
                "ports already in use, nothing started: "
                + ", ".join(busy)
                + " (stop what holds them or set MQTTLB_PORT_<NAME> / ports: in the stack file)"
            )

    def _wait_ready(self, progs: list[Program], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        pending = {prog.name: prog for prog in progs}
        last_report = time.monotonic()
        while pending and time.monotonic() < deadline:
            for name, prog in list(pending.items()):
                if self._component_answers(prog):
                    self.out(f"  ready: {name:<18} {prog.address}")
                    del pending[name]
            # FATAL: supervisord gave up on it; EXITED or BACKOFF with a spawn error: it cannot be run.
            fatal = [
                info["name"]
                for info in self._process_infos()
                if info["name"] in pending
                and (
                    info["statename"] == "FATAL"
                    or (info["statename"] in ("EXITED", "BACKOFF") and info.get("spawnerr"))
                )
            ]
            if fatal:
                raise StackError(f"{', '.join(fatal)} failed to start; see {self.paths.logs}/<name>.log")
            if pending and time.monotonic() - last_report > 10:
                last_report = time.monotonic()
                self.out(f"  waiting for: {', '.join(sorted(pending))}")
            time.sleep(0.25)
        if pending:
            details = "; ".join(f"{n}: see {self.paths.logs / (n + '.log')}" for n in sorted(pending))
            raise StackError(f"not ready after {timeout:.0f} s: {details}")
        self._wait_envoy_endpoints(deadline)

    def _wait_envoy_endpoints(self, deadline: float) -> None:
        """Envoy answers /ready before the EDS file is loaded; wait until it lists every node."""
        while time.monotonic() < deadline:
            if len(self.envoy_hosts()) == self.cfg.nodes:
                return
            time.sleep(0.25)
        raise StackError(f"Envoy did not load the {plural(self.cfg.nodes, 'endpoint')} from {self.paths.eds_file}")

    def envoy_hosts(self) -> list[EndpointStatus]:
        """The stack cluster's endpoints as Envoy applies them; empty while Envoy cannot answer."""
        admin = EnvoyAdminClient(self.topology.envoy_admin.url(), timeout=2)
        try:
            return list(admin.cluster(self.cfg.envoy_cluster).endpoints)
        except EnvoyAdminError:
            return []

    def _component_answers(self, prog: Program) -> bool:
        if prog.ready_url is not None:
            ca = builders.stack_ca(self.topology)
            return _http_ok(
                prog.ready_url, token_file=prog.token_file, password_file=prog.password_file, verify=ca or True
            )
        return prog.ready_port is not None and port_accepts(prog.ready_port)

    def print_addresses(self) -> None:
        """Print every address of the running stack (mqttlb.stack.addresses), one per line."""
        cfg = self.cfg
        self.out("")
        nodes = plural(cfg.nodes, f"{BROKER_NAMES[cfg.broker]} node")
        self.out(f"mqttlb stack '{cfg.cluster}' is up ({nodes}, {cfg.lb_policy})")
        for address in stack_addresses(self.topology, self.paths.webhook_token, self.paths.logs):
            self.out(address.line())
        self.out(f"  stop with {self.commands.down}; status with {self.commands.status}")

    # --- status ---------------------------------------------------------------------------
    def status(self) -> list[ComponentStatus]:
        """One line per program of this stack.  Only this state dir's supervisord is asked: another
        stack's, answering on the same control port, is not this one (every part is then down)."""
        infos = {info["name"]: info for info in self._process_infos()} if self.is_running() else {}
        statuses = []
        for prog in self.programs():
            info = infos.get(prog.name)
            pid = int(info["pid"]) if info and info.get("pid") else None
            running = info is not None and info["statename"] == "RUNNING"
            answers = running and self._component_answers(prog)
            detail = "" if answers else (info["statename"].lower() if info else "not started")
            if running and not answers:
                detail = "running but not answering"
            statuses.append(ComponentStatus(prog.name, answers, pid, prog.address, detail))
        return statuses

    def stop_component(self, name: str) -> None:
        """Stop one program of the running stack (a name from :meth:`programs`) and wait until it
        has exited; the rest keeps running and :meth:`down` still stops everything.  Tests and
        benchmarks use it to put their own process (a second Alertmanager, an in-process webhook)
        in its place.  Raises StackError when supervisord refuses (unknown name, not running)."""
        try:
            self._rpc().supervisor.stopProcess(name, True)
        except (OSError, xmlrpc.client.Error) as exc:
            raise StackError(f"cannot stop {name}: {exc}") from exc

    def start_component(self, name: str) -> None:
        """Start again a program stopped with :meth:`stop_component` and wait until supervisord reports it
        running (the experiment's restart scenario stops a broker node and brings it back).  Raises
        StackError when supervisord refuses (unknown name, already running, failed to start)."""
        try:
            self._rpc().supervisor.startProcess(name, True)
        except (OSError, xmlrpc.client.Error) as exc:
            raise StackError(f"cannot start {name}: {exc}") from exc

    def signal_component(self, name: str, signal_name: str = "HUP") -> None:
        """Send ``signal_name`` (``HUP``, ``USR1``, ...) to one running program of the stack: SIGHUP makes
        Prometheus read its config again (its lifecycle API is off unless ``prometheus_lifecycle_api``).
        Raises StackError when supervisord refuses (unknown name, not running, bad signal)."""
        try:
            self._rpc().supervisor.signalProcess(name, signal_name)
        except (OSError, xmlrpc.client.Error) as exc:
            raise StackError(f"cannot signal {name}: {exc}") from exc

    # --- down -----------------------------------------------------------------------------
    def down(self, quiet: bool = False) -> None:
        sup_pid = self.supervisord_pid()
        if sup_pid is None:
            if not quiet:
                self.out(f"stack in {self.paths.root} is not running; nothing to stop")
            return
        child_pids = [int(info["pid"]) for info in self._process_infos() if info.get("pid")]
        self.out(f"stopping {plural(len(child_pids), 'process', 'processes')} and supervisord (pid {sup_pid})")
        try:
            self._rpc().supervisor.shutdown()
        except (OSError, xmlrpc.client.Error):
            os.kill(sup_pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_SECONDS
        pids = [*child_pids, sup_pid]
        while time.monotonic() < deadline and any(_pid_alive(pid) for pid in pids):
            time.sleep(0.2)
        survivors = [pid for pid in pids if _pid_alive(pid)]
        for pid in survivors:
            log.warning("pid %d did not stop in %.0f s; sending SIGKILL", pid, STOP_TIMEOUT_SECONDS)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self._wait_ports_released()
        self.out("stack stopped")

    def listening_ports(self) -> list[int]:
        return [port for port in self.cfg.listening_ports().values() if port_accepts(port, timeout=0.2)]

    def _wait_ports_released(self) -> None:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and self.listening_ports():
            time.sleep(0.2)
        left = self.listening_ports()
        if left:
            raise StackError(f"stack stopped but something still listens on {left}")
