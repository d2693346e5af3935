"""The controller's persisted state: one JSON file, validated whole on load, written atomically.

The file is the controller's journal: a pass saves it *before* it publishes the EDS snapshot of the
same version (state -> snapshot -> publish), so a crash between the two leaves a state whose version
is at least the published one, and the restarted controller publishes a new, higher version with
the state's content.  A version number is never published twice with different contents.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mqttlb.atomic import atomic_write_text
from mqttlb.params import PolicyParams
from mqttlb.webhook.shedding import max_level

# Keys of the notification-driven webhook's state file (before the controller): dropped on load.
_LEGACY_KEYS = ("seen", "recovering", "shed_relaxing")


class StateError(RuntimeError):
    """The state file exists but cannot be used; the message is one line naming the file and why."""


class WebhookState(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: int = Field(default=0, ge=0)  # EDS version last committed (published or about to be)
    nodes: list[str] = Field(default_factory=list)  # node set the weights belong to
    weights: dict[str, int] = Field(default_factory=dict)
    draining: list[str] = Field(default_factory=list)
    smoothed_cpu: dict[str, float] = Field(default_factory=dict)
    last_weight_change: float | None = None  # unix time
    shed_level: int = Field(default=0, ge=0)
    shed_anchor: int | None = Field(default=None, ge=0)
    last_shed_change: float | None = None
    hot_since: float | None = None  # start of the current early-steer episode (short-window CPU hot)
    # Short-window CPU above cpu_high integrated over the episode (utilisation x seconds), and when
    # it was last added to.
    hot_excess: float = Field(default=0.0, ge=0)
    hot_checked: float | None = None
    # The evict lever (mqttlb.webhook.eviction_policy.Episode, flattened), the last batch per node,
    # and the nodes the operator asked to evacuate (drained, emptied batch by batch).
    evict_since: float | None = None
    evict_mark: float | None = Field(default=None, ge=0)
    evict_connects_mark: float | None = Field(default=None, ge=0)  # Envoy's connects total at evict_since
    evict_armed: bool = False
    evict_reason: str = ""
    last_eviction: dict[str, float] = Field(default_factory=dict)
    evacuating: list[str] = Field(default_factory=list)


def check_state(state: WebhookState, nodes: list[str], params: PolicyParams) -> None:
    """Raise ValueError (one line) when ``state`` cannot be published for ``nodes`` under ``params``."""
    for node, weight in state.weights.items():
        if not params.min_weight <= weight <= params.max_weight:
            raise ValueError(
                f"weight of {node} is {weight}, outside min_weight..max_weight "
                f"({params.min_weight}..{params.max_weight})"
            )
    unknown = sorted(set(state.draining) - set(nodes))
    if unknown:
        raise ValueError(f"draining names unknown nodes {unknown}")
    if nodes and set(state.draining) >= set(nodes):
        raise ValueError("every node is draining: no node could take connections")
    top = max_level(params.shed_levels)
    if state.shed_level > top:
        raise ValueError(f"shed_level {state.shed_level} above the highest level {top}")
    if state.shed_level > 0 and state.shed_anchor is None:
        raise ValueError(f"shed_level {state.shed_level} without a shed_anchor")


def load_state(path: Path, nodes: list[str] | None = None, params: PolicyParams | None = None) -> WebhookState | None:
    """The persisted state, or None when there is none yet.

    Raises StateError for a file that cannot be read (a directory, no permission), is not JSON, does
    not match the schema, or (given ``nodes`` and ``params``) holds values that cannot be published.
    """
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StateError(f"state file {path} cannot be read: {exc.strerror or exc}") from None
    try:
        document: Any = json.loads(text)
        if isinstance(document, dict):
            for key in _LEGACY_KEYS:
                document.pop(key, None)
        state = WebhookState.model_validate(document)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "document"
        raise StateError(f"state file {path} is not valid: {where}: {first['msg']}") from None
    except ValueError as exc:
        raise StateError(f"state file {path} is not valid JSON: {exc}") from None
    if nodes is not None and params is not None and state.nodes == nodes:
        try:
            check_state(state, nodes, params)
        except ValueError as exc:
            raise StateError(f"state file {path} is not valid: {exc}") from None
    return state


def save_state(path: Path, state: WebhookState) -> None:
    """Write the state atomically (temp file, fsync, rename); raises OSError on failure."""
    atomic_write_text(Path(path), state.model_dump_json(indent=2) + "\n")
