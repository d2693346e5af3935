"""Alertmanager webhook payload (version 4): validation and the idempotency key."""

from __future__ import annotations

import hashlib
import json
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mqttlb.contract import Action

ACTIONS = tuple(action.value for action in Action)


class PayloadError(ValueError):
    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


class Alert(BaseModel):
    # Alertmanager may add fields over time: ignore unknown ones, require the ones we use.
    model_config = ConfigDict(extra="ignore")
    status: Literal["firing", "resolved"]
    labels: dict[str, str]
    annotations: dict[str, str] = Field(default_factory=dict)
    startsAt: str = Field(min_length=1)
    endsAt: str = ""
    generatorURL: str = ""
    fingerprint: str = ""


class Notification(BaseModel):
    model_config = ConfigDict(extra="ignore")
    version: str
    groupKey: str = Field(min_length=1)
    truncatedAlerts: int = Field(default=0, ge=0)
    status: Literal["firing", "resolved"]
    receiver: str = ""
    groupLabels: dict[str, str] = Field(default_factory=dict)
    commonLabels: dict[str, str] = Field(default_factory=dict)
    commonAnnotations: dict[str, str] = Field(default_factory=dict)
    externalURL: str = ""
    alerts: list[Alert] = Field(min_length=1, max_length=1000)

    def action(self) -> str:
        """The one ``action`` label the notification's alerts share (routes group by it)."""
        actions = {a.labels.get("action", self.commonLabels.get("action")) for a in self.alerts}
        if len(actions) != 1:
            raise PayloadError(
                f"alerts in one notification carry different actions: {sorted(map(str, actions))}", 422
            )
        action = actions.pop()
        if action is None:
            raise PayloadError("alerts carry no action label", 422)
        if action not in ACTIONS:
            raise PayloadError(f"unknown action {action!r} (known: {', '.join(ACTIONS)})", 422)
        return action

    def alert_names(self) -> list[str]:
        return sorted({a.labels.get("alertname", "?") for a in self.alerts})

    def idempotency_key(self) -> str:
        """Same group, status and alert set (fingerprint + startsAt) -> same key.

        Alertmanager retries and the second member of an HA pair send exactly this, so they map to
        one action; a repeat_interval re-send also maps to it, which is why keys expire after the
        dedup window (see docs/webhook.md).
        """
        alerts = sorted(
            (a.fingerprint or json.dumps(a.labels, sort_keys=True), a.startsAt, a.status) for a in self.alerts
        )
        material = json.dumps([self.groupKey, self.status, alerts], separators=(",", ":"))
        return hashlib.sha256(material.encode()).hexdigest()


def parse_notification(body: bytes) -> Notification:
    try:
        document = json.loads(body)
    except (UnicodeDecodeError, ValueError) as exc:
        raise PayloadError(f"body is not valid JSON: {exc}") from exc
    if not isinstance(document, dict):
        raise PayloadError("body must be a JSON object")
    if document.get("version") != "4":
        raise PayloadError(f'unsupported payload version {document.get("version")!r} (expected "4")')
    try:
        notification = Notification.model_validate(document)
    except ValidationError as exc:
        raise PayloadError(f"payload does not match the Alertmanager v4 schema: {exc.errors()[:3]}") from exc
    return notification
