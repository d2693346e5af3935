"""Alertmanager webhook payload (version 4): validation with short, bounded error messages."""

from __future__ import annotations

import json
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mqttlb.contract import ACTION_LABEL, ALERTNAME_LABEL, Action

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

    def actions(self) -> set[str]:
        """The ``action`` label values of the notification's alerts; raises PayloadError (422) for an
        alert without one or with a value the contract does not know."""
        actions = {a.labels.get(ACTION_LABEL, self.commonLabels.get(ACTION_LABEL)) for a in self.alerts}
        if None in actions:
            raise PayloadError("an alert carries no action label", 422)
        unknown = sorted(str(a) for a in actions if a not in ACTIONS)
        if unknown:
            raise PayloadError(f"unknown action {_short(unknown[0])!r} (known: {', '.join(ACTIONS)})", 422)
        return {str(a) for a in actions}

    def alert_names(self) -> list[str]:
        return sorted({a.labels.get(ALERTNAME_LABEL, "?") for a in self.alerts})


MAX_ERROR_CHARS = 300  # an error answer or log line never echoes a large body back


def _short(text: str) -> str:
    return text if len(text) <= MAX_ERROR_CHARS else text[: MAX_ERROR_CHARS - 3] + "..."


def parse_notification(body: bytes) -> Notification:
    try:
        document = json.loads(body)
    except (UnicodeDecodeError, ValueError) as exc:
        raise PayloadError(_short(f"body is not valid JSON: {exc}")) from None
    except RecursionError:
        raise PayloadError("body is nested too deeply") from None
    if not isinstance(document, dict):
        raise PayloadError("body must be a JSON object")
    if document.get("version") != "4":
        raise PayloadError(_short(f'unsupported payload version {document.get("version")!r} (expected "4")'))
    try:
        notification = Notification.model_validate(document)
    except ValidationError as exc:
        errors = exc.errors(include_input=False, include_url=False)[:3]
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in errors)
        raise PayloadError(_short(f"payload does not match the Alertmanager v4 schema: {problems}")) from None
    except RecursionError:
        raise PayloadError("body is nested too deeply") from None
    return notification
