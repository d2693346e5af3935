"""`mqttlb stack up` on a stack that already runs: it starts the parts supervisord does not report
RUNNING and waits until they answer, and says which; a part that cannot be started is named and the
command fails.  supervisord is replaced by a fake control interface (no process is started); the
live counterpart is in tests/test_stack_live.py (test_cli_up_is_idempotent_...)."""

from __future__ import annotations

import xmlrpc.client
from pathlib import Path
from typing import Any

import pytest
from stackutil import free_ports_config

from mqttlb.stack.render import Program
from mqttlb.stack.runner import Stack, StackError, operator_commands


class FakeSupervisor:
    """supervisord's ``supervisor.*`` calls that Stack makes: process infos and startProcess."""

    def __init__(self, states: dict[str, str], refuse: set[str]) -> None:
        self.states = states
        self.refuse = refuse
        self.started: list[str] = []

    def getAllProcessInfo(self) -> list[dict[str, Any]]:  # noqa: N802 -- supervisord's name
        return [
            {"name": name, "statename": state, "pid": 100 + i, "spawnerr": ""}
            for i, (name, state) in enumerate(self.states.items())
        ]

    def startProcess(self, name: str, wait: bool) -> bool:  # noqa: N802 -- supervisord's name
        if name in self.refuse:
            raise xmlrpc.client.Fault(50, "SPAWN_ERROR: " + name)
        self.started.append(name)
        self.states[name] = "RUNNING"
        return True


class FakeRpc:
    def __init__(self, supervisor: FakeSupervisor) -> None:
        self.supervisor = supervisor


def running_stack_with(
    tmp_path: Path, stopped: dict[str, str], refuse: frozenset[str] = frozenset()
) -> tuple[Stack, FakeSupervisor, list[str]]:
    """A Stack whose supervisord "runs" with every program RUNNING except ``stopped`` (name -> state);
    a program answers once it is RUNNING.  Returns (stack, fake supervisor, printed lines)."""
    cfg = free_ports_config(tmp_path / "state", nodes=3)
    lines: list[str] = []
    stack = Stack(cfg, out=lines.append)
    names = [prog.name for prog in stack.programs()]
    fake = FakeSupervisor({name: stopped.get(name, "RUNNING") for name in names}, set(refuse))
    stack.supervisord_pid = lambda: 4242  # type: ignore[method-assign]
    stack._rpc = lambda: FakeRpc(fake)  # type: ignore[method-assign,assignment,return-value]
    stack._component_answers = lambda prog: fake.states[prog.name] == "RUNNING"  # type: ignore[method-assign]
    stack.envoy_hosts = lambda: [object()] * cfg.nodes  # type: ignore[method-assign,return-value]
    # the addresses need the secrets a real start writes; the line that opens them is enough here
    stack.print_addresses = lambda: lines.append(f"mqttlb stack '{cfg.cluster}' is up (...)")  # type: ignore[method-assign]
    return stack, fake, lines


def test_up_on_a_running_stack_starts_the_stopped_part_and_says_so(tmp_path: Path) -> None:
    stack, fake, lines = running_stack_with(tmp_path, {"mosquitto-node3": "STOPPED"})
    stack.up(timeout=5)
    assert fake.started == ["mosquitto-node3"]
    assert "stack already running (supervisord pid 4242); starting what is not running: mosquitto-node3" in lines
    assert any(line.strip().startswith("ready: mosquitto-node3") for line in lines), lines
    assert not any("nothing changed" in line for line in lines)
    assert any(" is up (" in line for line in lines)


def test_up_on_a_whole_running_stack_changes_nothing(tmp_path: Path) -> None:
    stack, fake, lines = running_stack_with(tmp_path, {})
    stack.up(timeout=5)
    assert fake.started == []
    assert "stack already running (supervisord pid 4242); nothing changed" in lines


def test_up_names_the_part_that_cannot_be_started(tmp_path: Path) -> None:
    stopped = {"mosquitto-node3": "FATAL", "webhook": "EXITED"}
    stack, fake, lines = running_stack_with(tmp_path, stopped, refuse=frozenset({"mosquitto-node3"}))
    with pytest.raises(StackError) as caught:
        stack.up(timeout=5)
    assert str(caught.value).startswith("cannot start mosquitto-node3 (SPAWN_ERROR: mosquitto-node3); see ")
    assert fake.started == ["webhook"]
    assert not any(" is up (" in line for line in lines)


def test_up_names_the_started_part_that_does_not_answer(tmp_path: Path) -> None:
    stack, fake, _lines = running_stack_with(tmp_path, {"mosquitto-node2": "STOPPED"})
    answers = stack._component_answers

    def node2_never_answers(prog: Program) -> bool:
        return prog.name != "mosquitto-node2" and answers(prog)

    stack._component_answers = node2_never_answers  # type: ignore[method-assign]
    with pytest.raises(StackError, match=r"not ready after 1 s: mosquitto-node2: see .*mosquitto-node2\.log"):
        stack.up(timeout=1)
    assert fake.started == ["mosquitto-node2"]


def test_the_printed_commands_are_make_targets_only_in_the_checkout(tmp_path: Path) -> None:
    repo = Path(__file__).resolve().parents[1]
    assert operator_commands(repo).down == "`make stack-down`"
    assert operator_commands(tmp_path) == operator_commands(tmp_path / "x")
    assert (operator_commands(tmp_path).down, operator_commands(tmp_path).status) == (
        "`mqttlb stack down`",
        "`mqttlb stack status`",
    )


def test_a_temporary_stack_does_not_tell_the_user_to_run_make_stack_down(tmp_path: Path) -> None:
    """Trial of 2026-12-01: each experiment stack's log ended with "stop with `make stack-down`", which acts on
    the user's own stack, not the temporary one."""
    from mqttlb.stack.ephemeral import temporary_commands

    cfg = free_ports_config(tmp_path / "state")
    commands = temporary_commands(cfg)
    assert Stack(cfg, commands=commands).commands == commands  # what every "stop with ..." message prints
    assert f"`mqttlb stack --state-dir {cfg.state_dir} down`" in commands.down and "make" not in commands.down
    assert commands.status == f"`mqttlb stack --state-dir {cfg.state_dir} status`"
