"""Request bodies of the webhook's POST routes, validated, with short bounded error messages.

- :func:`parse_notification`: Alertmanager's webhook payload (version 4) for ``POST /alerts``;
- :func:`parse_drain`: ``{"node": str, "draining": bool}`` for ``POST /drain``;
- :func:`parse_discovery_request`: Envoy's REST ``DiscoveryRequest`` for ``POST /v3/discovery:endpoints``.

Every parser takes the raw body (bytes) and raises :class:`PayloadError` (status 400, or 422 for a
well-formed notification whose ``action`` the contract does not know) for anything it cannot take:
invalid JSON or UTF-8, JSON nested too deeply for the parser, an object with the same key twice
(``{"node": "node2", "node": "node3"}``: JSON parsers differ on which one wins, so none is guessed),
a value of the wrong type or shape.
An error message never echoes the body: it names the field and the problem, at most
``MAX_ERROR_CHARS`` characters on one line (``http_call.one_line``).
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, ValidationError

from mqttlb.contract import ACTION_LABEL, ALERTNAME_LABEL, Action
from mqttlb.http_call import one_line
from mqttlb.webhook.eds import CLA_TYPE

ACTIONS = tuple(action.value for action in Action)
MAX_ERROR_CHARS = 300  # an error answer or log line never echoes a large body back
MAX_ALERTS = 1000  # alerts in one notification (Alertmanager's max_alerts is 0 = unlimited; ours send few)
MAX_DISCOVERY_NAMES = 100


class PayloadError(ValueError):
    """A body the route cannot take; ``status`` is the HTTP answer (400 or 422), the message is short."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(one_line(message, MAX_ERROR_CHARS))
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
    fingerprint: str = Field(default="", max_length=64)  # Alertmanager's are 16 hex digits


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
    alerts: list[Alert] = Field(min_length=1, max_length=MAX_ALERTS)

    def actions(self) -> set[str]:
        """The ``action`` label values of the notification's alerts; raises PayloadError (422) for an
        alert without one or with a value the contract does not know."""
        actions = {a.labels.get(ACTION_LABEL, self.commonLabels.get(ACTION_LABEL)) for a in self.alerts}
        if None in actions:
            raise PayloadError("an alert carries no action label", 422)
        unknown = sorted(str(a) for a in actions if a not in ACTIONS)
        if unknown:
            raise PayloadError(f"unknown action {one_line(unknown[0], 60)!r} (known: {', '.join(ACTIONS)})", 422)
        return {str(a) for a in actions}

    def alert_names(self) -> list[str]:
        return sorted({a.labels.get(ALERTNAME_LABEL, "?") for a in self.alerts})

    def summary(self, max_names: int = 5) -> str:
        """``"firing MqttBrokerCpuHigh, MqttClusterImbalanced (2 alerts)"``: bounded, for one log line."""
        names = [one_line(n, 60) for n in self.alert_names()]
        shown = ", ".join(names[:max_names]) + (f" and {len(names) - max_names} more" if len(names) > max_names else "")
        return f"{self.status} {shown} ({len(self.alerts)} alert{'s' if len(self.alerts) != 1 else ''})"


class DrainRequest(BaseModel):
    """``POST /drain``: the operator's wish for one node."""

    model_config = ConfigDict(extra="forbid", strict=True)
    node: str = Field(min_length=1, max_length=253)
    draining: bool


class RebalanceRequest(BaseModel):
    """``POST /rebalance``: arm the evict lever now, or (``dry_run``) name who would go."""

    model_config = ConfigDict(extra="forbid", strict=True)
    dry_run: bool = False


class EvacuateRequest(BaseModel):
    """``POST /evacuate``: empty ``node`` (drain + evict everything, bounded), stop (``evacuate`` false),
    or (``dry_run``) name who would go in the first batch."""

    model_config = ConfigDict(extra="forbid", strict=True)
    node: str = Field(min_length=1, max_length=253)
    evacuate: bool = True
    dry_run: bool = False


class DiscoveryRequest(BaseModel):
    """Envoy's REST ``DiscoveryRequest`` (envoy.service.discovery.v3; proto3 JSON: either spelling of
    each field).  A field the message does not have is refused (400), as Envoy's own JSON parser would.

    The webhook reads ``type_url`` and ``resource_names``; ``node`` (with every extension Envoy was
    built with), ``version_info``, ``response_nonce``, ``error_detail`` and ``resource_locators`` are
    checked for their type only, since the answer is always the current snapshot."""

    model_config = ConfigDict(extra="forbid")
    type_url: str = Field(default=CLA_TYPE, validation_alias=AliasChoices("type_url", "typeUrl"), max_length=200)
    resource_names: list[str] | None = Field(
        default=None,
        validation_alias=AliasChoices("resource_names", "resourceNames"),
        max_length=MAX_DISCOVERY_NAMES,
    )
    version_info: str = Field(default="", validation_alias=AliasChoices("version_info", "versionInfo"))
    node: dict[str, Any] | None = None
    response_nonce: str = Field(default="", validation_alias=AliasChoices("response_nonce", "responseNonce"))
    error_detail: dict[str, Any] | None = Field(
        default=None, validation_alias=AliasChoices("error_detail", "errorDetail")
    )
    resource_locators: list[dict[str, Any]] | None = Field(
        default=None, validation_alias=AliasChoices("resource_locators", "resourceLocators")
    )

    @property
    def names(self) -> list[str]:
        return self.resource_names or []


class _DuplicateKey(ValueError):
    """A JSON object of the body names the same key twice (``args[0]``: the key)."""


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """``json.loads``' object_pairs_hook: the object as a dict; raises _DuplicateKey for a key seen twice."""
    document: dict[str, Any] = {}
    for key, value in pairs:
        if key in document:
            raise _DuplicateKey(key)
        document[key] = value
    return document


def load_json(body: bytes, what: str = "body") -> Any:
    """The JSON document of ``body``; raises PayloadError for invalid UTF-8 or JSON, an object with a
    key given twice (anywhere in the document), or nesting too deep for the parser (which reports it as
    RecursionError)."""
    try:
        return json.loads(body, object_pairs_hook=_unique_keys)
    except RecursionError:
        raise PayloadError(f"{what} is nested too deeply") from None
    except _DuplicateKey as exc:
        key = one_line(repr(exc.args[0]), 40)
        raise PayloadError(
            f"{what} gives the key {key} more than once in one JSON object; give each key once"
        ) from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, a too-long integer
        raise PayloadError(f"{what} is not valid JSON: {exc}") from None


def _validate(model: type[BaseModel], document: Any, what: str) -> Any:
    if not isinstance(document, dict):
        raise PayloadError(f"{what} must be a JSON object")
    try:
        return model.model_validate(document)
    except RecursionError:
        raise PayloadError(f"{what} is nested too deeply") from None
    except ValidationError as exc:
        errors = exc.errors(include_input=False, include_url=False, include_context=False)[:3]
        problems = "; ".join(f"{'.'.join(one_line(str(p), 40) for p in e['loc']) or what}: {e['msg']}" for e in errors)
        raise PayloadError(f"{what} does not match the expected schema: {problems}") from None


def _describe(value: Any) -> str:
    """A short description of a value the caller sent, without echoing large or nested ones."""
    if isinstance(value, str | int | float | bool) or value is None:
        return one_line(repr(value), 40)
    return f"a JSON {'array' if isinstance(value, list) else 'object'}"


def parse_notification(body: bytes) -> Notification:
    """``POST /alerts``: an Alertmanager webhook payload of version 4; raises PayloadError (400)."""
    document = load_json(body)
    if not isinstance(document, dict):
        raise PayloadError("body must be a JSON object")
    if document.get("version") != "4":
        raise PayloadError(f'unsupported payload version {_describe(document.get("version"))} (expected "4")')
    notification: Notification = _validate(Notification, document, "payload")
    return notification


def parse_drain(body: bytes) -> DrainRequest:
    """``POST /drain``: ``{"node": str, "draining": bool}``; raises PayloadError (400)."""
    request: DrainRequest = _validate(DrainRequest, load_json(body), "drain request")
    return request


def parse_rebalance(body: bytes) -> RebalanceRequest:
    """``POST /rebalance``: ``{}`` or ``{"dry_run": bool}``; raises PayloadError (400), for an empty body too (a bare
    ``curl -X POST`` would otherwise arm the lever, where ``/drain`` and ``/evacuate`` refuse it)."""
    request: RebalanceRequest = _validate(RebalanceRequest, load_json(body), "rebalance request")
    return request


def parse_evacuate(body: bytes) -> EvacuateRequest:
    """``POST /evacuate``: ``{"node": str, "evacuate": bool = true, "dry_run": bool = false}``; raises
    PayloadError (400)."""
    request: EvacuateRequest = _validate(EvacuateRequest, load_json(body), "evacuate request")
    return request


def parse_discovery_request(body: bytes) -> DiscoveryRequest:
    """``POST /v3/discovery:endpoints``: an empty body or a DiscoveryRequest for ClusterLoadAssignments;
    raises PayloadError (400) for anything else (another ``type_url`` included)."""
    request: DiscoveryRequest = _validate(DiscoveryRequest, load_json(body or b"{}"), "DiscoveryRequest")
    if request.type_url != CLA_TYPE:
        raise PayloadError(f"unsupported type_url {one_line(request.type_url, 100)!r} (expected {CLA_TYPE})")
    return request
