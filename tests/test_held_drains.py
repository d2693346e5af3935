"""A drain held in the webhook's state survives `stack down` / `stack up` (it is desired state), so
`stack up` and `stack status` announce it with the command that ends it; a broker switch clears it
(trial: a drain of node2 followed the operator from Mosquitto to HiveMQ without a word)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import requests
from stackutil import wait_until, webhook_headers

from mqttlb.stack.config import RECORD_FILE
from mqttlb.stack.ephemeral import stack_config
from mqttlb.stack.held_drains import clear_held_drains, held_drain_lines, held_drains
from mqttlb.stack.runner import Stack
from mqttlb.webhook.state import WebhookState, load_state, save_state


def _stack(tmp_path: Path, broker: str = "mosquitto", ran: str | None = None, draining=("node2",)) -> Stack:
    """A stack (not started) whose webhook state holds ``draining``; ``ran``: the broker of its last start."""
    cfg = stack_config(tmp_path / "state", broker=broker)
    stack = Stack(cfg, out=lambda line: None)
    state_file = stack.paths.webhook_state
    state_file.parent.mkdir(parents=True, exist_ok=True)
    weights = {n: 100 for n in cfg.node_names}
    save_state(
        state_file,
        WebhookState(
            nodes=cfg.node_names, weights=weights, draining=list(draining), evacuating=list(draining)[:1], version=7
        ),
    )
    if ran is not None:
        recorded = stack_config(tmp_path / "state", broker=ran).model_dump(mode="json")
        (stack.paths.root / RECORD_FILE).write_text(json.dumps(recorded))
    return stack


def test_a_held_drain_is_announced_with_its_undrain_command(tmp_path: Path) -> None:
    stack = _stack(tmp_path, ran="mosquitto")
    lines = stack._settle_held_drains()
    assert "1 node still DRAINING from before (node2)" in lines[0]
    assert '-d \'{"node": "node2", "draining": false}\'' in lines[1]
    assert f"{stack.topology.webhook.url('/drain')}`" in lines[1] and str(stack.paths.webhook_token) in lines[1]
    assert held_drains(stack.paths.webhook_state) == ["node2"], "announcing changed the state"
    assert stack.held_drain_lines() == lines


def test_a_broker_switch_clears_held_drains_and_says_so(tmp_path: Path) -> None:
    stack = _stack(tmp_path, broker="mosquitto", ran="hivemq")
    [line] = stack._settle_held_drains()
    assert "cleared the drain of node2: the stack ran HiveMQ CE before and runs Mosquitto now" in line
    state = load_state(stack.paths.webhook_state)
    assert state is not None and (state.draining, state.evacuating, state.version) == ([], [], 7)
    assert state.weights == {n: 100 for n in stack.cfg.node_names}, "only the drains are cleared"


def test_nothing_to_say_without_drains_or_state(tmp_path: Path) -> None:
    assert _stack(tmp_path, ran="hivemq", draining=())._settle_held_drains() == []
    assert _stack(tmp_path / "b", ran="mosquitto", draining=())._settle_held_drains() == []
    missing = tmp_path / "none" / "state.json"
    assert held_drains(missing) == [] and clear_held_drains(missing) == []
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert held_drains(bad) == [] and clear_held_drains(bad) == [] and bad.read_text() == "{not json"


def test_lines_name_every_node(tmp_path: Path) -> None:
    stack = _stack(tmp_path, draining=("node1", "node3"))
    lines = held_drain_lines(stack.topology, ["node1", "node3"])
    assert "2 nodes still DRAINING from before (node1, node3)" in lines[0] and len(lines) == 3


@pytest.mark.live
def test_a_drain_survives_stack_down_and_up_and_is_announced(tmp_path: Path) -> None:
    cfg = stack_config(tmp_path / "state")
    printed: list[str] = []
    stack = Stack(cfg, out=printed.append)
    try:
        stack.up()
        drain = requests.post(
            stack.topology.webhook.url("/drain"),
            json={"node": "node2", "draining": True},
            headers=webhook_headers(stack),
            timeout=10,
        )
        assert drain.status_code == 202, drain.text
        wait_until(lambda: held_drains(stack.paths.webhook_state) == ["node2"], 15, "the drain committed")
        stack.down(quiet=True)
        printed.clear()
        stack.up()
        notes = [line for line in printed if "DRAINING" in line or "undrain" in line]
        assert len(notes) == 2 and "(node2)" in notes[0], printed
        undrain = notes[1].split("`")[1]
        done = subprocess.run(undrain, shell=True, capture_output=True, text=True, timeout=10)  # noqa: S602 (our line)
        assert done.returncode == 0 and "accepted" in done.stdout, done
        wait_until(lambda: held_drains(stack.paths.webhook_state) == [], 15, "the undrain committed")
    finally:
        stack.down(quiet=True)
