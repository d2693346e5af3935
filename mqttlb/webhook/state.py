"""The webhook's persisted state (one JSON file, written atomically after each applied action)."""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mqttlb.atomic import atomic_write_text


class StateError(RuntimeError):
    """The state file exists but cannot be used."""


class WebhookState(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: int = Field(default=0, ge=0)  # EDS version last published
    nodes: list[str] = Field(default_factory=list)  # node set the weights belong to
    weights: dict[str, int] = Field(default_factory=dict)
    draining: list[str] = Field(default_factory=list)
    smoothed_cpu: dict[str, float] = Field(default_factory=dict)
    last_weight_change: float | None = None  # unix time
    recovering: bool = False  # weights are ramping back to neutral after a resolved alert
    shed_level: int = Field(default=0, ge=0)
    shed_anchor: int | None = None
    last_shed_change: float | None = None
    shed_relaxing: bool = False  # shedding is being lifted stepwise after a resolved alert
    seen: dict[str, float] = Field(default_factory=dict)  # notification key -> unix time handled


def load_state(path: Path) -> WebhookState | None:
    """The persisted state, or None when there is none yet; a corrupt file raises StateError."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    try:
        return WebhookState.model_validate(json.loads(text))
    except (ValueError, ValidationError) as exc:
        raise StateError(f"state file {path} is not valid: {exc}") from exc


def save_state(path: Path, state: WebhookState) -> None:
    atomic_write_text(Path(path), state.model_dump_json(indent=2) + "\n")
