"""Drains the local stack's webhook holds in its state file, as `stack up` and `stack status` report them.

A drain is desired state: the webhook persists it (``<state dir>/webhook/state.json``) and keeps the node
DRAINING across its own restarts and across ``make stack-down`` / ``make stack-up``, until the operator
undrains it.  That is right for maintenance, but easy to forget, so:

* ``stack up`` and ``stack status`` print every held drain with the command that ends it;
* ``stack up`` with another broker than the stack last ran (``BROKER=hivemq`` after Mosquitto, or back)
  clears the held drains and evacuations first and says so: the nodes are other brokers under the same
  names, and a drain meant for the old node2 says nothing about the new one.

The state file is only touched while the stack is down (before ``stack up`` starts the webhook).
"""

from __future__ import annotations

from pathlib import Path

from mqttlb.commandline import plural
from mqttlb.stack.addresses import curl_with_token
from mqttlb.stack.builders import stack_ca
from mqttlb.stack.topology import Topology
from mqttlb.webhook.state import StateError, load_state, save_state


def held_drains(state_file: Path) -> list[str]:
    """The nodes the webhook's state file holds as draining (sorted); empty without a usable file."""
    try:
        state = load_state(state_file)
    except StateError:
        return []
    return sorted(state.draining) if state is not None else []


def clear_held_drains(state_file: Path) -> list[str]:
    """Clear the drains and evacuations in the state file; the nodes that were draining (sorted).

    Raises OSError when the file cannot be written; an unusable file is left alone (the webhook refuses
    it at start with its own message)."""
    try:
        state = load_state(state_file)
    except StateError:
        return []
    if state is None or not (state.draining or state.evacuating):
        return []
    cleared = sorted(state.draining)
    save_state(state_file, state.model_copy(update={"draining": [], "evacuating": []}))
    return cleared


def undrain_command(topo: Topology, node: str) -> str:
    """The curl line that undrains ``node`` on the stack's webhook."""
    command = curl_with_token(topo.webhook.url("/drain"), topo.state.webhook_token, stack_ca(topo))
    return command.replace("curl", f"""curl -d '{{"node": "{node}", "draining": false}}'""", 1)


def held_drain_lines(topo: Topology, nodes: list[str]) -> list[str]:
    """Lines announcing ``nodes`` as held drains, each with its undrain command; none for no nodes."""
    if not nodes:
        return []
    lines = [
        f"  NOTE: {plural(len(nodes), 'node')} still DRAINING from before ({', '.join(nodes)}): a drain is kept "
        "across restarts until undrained"
    ]
    lines += [f"    undrain {node}: `{undrain_command(topo, node)}`" for node in nodes]
    return lines


def cleared_drain_line(nodes: list[str], before: str, now: str) -> str:
    """The line saying that ``nodes``' drains were cleared because the broker changed."""
    return (
        f"  cleared the drain of {', '.join(nodes)}: the stack ran {before} before and runs {now} now "
        "(other brokers under the same node names)"
    )
