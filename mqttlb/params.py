"""The one parameter file (``params.yaml``), validated once, at load.

Every parameter is checked here and nowhere else: Prometheus durations (:data:`Duration`), label
selectors (:data:`Selector`), numbers (a YAML ``true``/``false`` is not one), thresholds, the weight
order, the shed levels and every rule between two fields.  The rule generator, the Alertmanager config,
the dashboards, the stack and the webhook take a :class:`Params` as valid.  A bad value is refused with
one line naming the key and where it came from (:class:`ParamsError`, or the loader of the config that
embeds the parameters).
"""

from __future__ import annotations

import re
import types
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin
from urllib.parse import urlparse

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from mqttlb import contract
from mqttlb.yamlfile import ConfigError, Sources, deep_merge, invalid, load_yaml_mapping, not_a_bool, one_line

DEFAULT_PARAMS_FILE = Path(__file__).with_name("params.yaml")

# Prometheus' own duration grammar (prometheus/common model.ParseDuration): units largest first,
# each at most once, e.g. 1h30m, 90s, 500ms, 0s.
DURATION_UNITS: tuple[tuple[str, float], ...] = (
    ("y", 365 * 86400),
    ("w", 7 * 86400),
    ("d", 86400),
    ("h", 3600),
    ("m", 60),
    ("s", 1),
    ("ms", 0.001),
)
_DURATION = re.compile("^" + "".join(rf"(?:(\d+){unit})?" for unit, _ in DURATION_UNITS) + "$")
_MATCHER = r'\s*[a-zA-Z_][a-zA-Z0-9_]*\s*(?:=~|!~|!=|=)\s*"(?:[^"\\\n]|\\.)*"\s*'
_SELECTOR = re.compile(rf"^{_MATCHER}(?:,{_MATCHER})*$")


class ParamsError(ConfigError):
    """The parameters are unusable; the message is one line naming the key and its source."""


def duration_seconds(text: str) -> float:
    """A Prometheus duration (``30s``, ``1h30m``, ``500ms``, ``0s``) in seconds.

    Raises ValueError for anything else (``30``, ``30 s``, ``1m1h``, ``banana``, the empty string)."""
    match = _DURATION.match(text)
    if not text or match is None:
        raise ValueError("not a Prometheus duration such as 30s, 1m or 1h30m")
    counts = zip(match.groups(), DURATION_UNITS, strict=True)
    return sum(int(count) * seconds for count, (_, seconds) in counts if count)


def _check_duration(value: str) -> str:
    duration_seconds(value)
    return value


def _check_positive(value: str) -> str:
    if duration_seconds(value) <= 0:
        raise ValueError("must be longer than 0s")
    return value


def _check_selector(value: str) -> str:
    if not _SELECTOR.match(value):
        raise ValueError('not a label matcher list such as job="mqtt-brokers"')
    return value


_LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
# Label names the MQTT cluster label must not take: kube-prometheus' Kubernetes cluster, the labels
# mqttlb's own series and Prometheus targets already carry, and Prometheus' reserved ones.
TAKEN_LABELS = frozenset(
    {"cluster", "namespace", "pod", "container", "job", "instance", "endpoint", "service",
     contract.NODE_LABEL, contract.ENVOY_CLUSTER_LABEL, contract.ACTION_LABEL, contract.ALERTNAME_LABEL}
)


def _check_cluster_label(value: str) -> str:
    if not _LABEL_NAME.match(value) or value.startswith("__"):
        raise ValueError("not a Prometheus label name such as mqtt_cluster")
    if value in TAKEN_LABELS:
        raise ValueError(f"{value!r} is taken (kube-prometheus or mqttlb use it for something else)")
    return value


def _check_http_url(value: str) -> str:
    parsed = urlparse(value)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise ValueError("must be an http(s) URL")
    return value


Duration = Annotated[str, AfterValidator(_check_duration)]
"""A Prometheus duration such as ``30s``, ``1m30s`` or ``0s``, kept as written."""
PositiveDuration = Annotated[Duration, AfterValidator(_check_positive)]
"""A :data:`Duration` longer than 0s (a range such as ``rate(x[30s])``, an interval)."""
Selector = Annotated[str, AfterValidator(_check_selector)]
"""A PromQL label matcher list to put inside ``{...}``: ``job="mqtt-brokers", env=~"eu.*"``."""
HttpUrl = Annotated[str, AfterValidator(_check_http_url)]
"""An http(s) URL with a host, kept as written."""
Fraction = Annotated[float, Field(gt=0, lt=1)]
ClusterLabel = Annotated[str, AfterValidator(_check_cluster_label)]
"""The name of the MQTT cluster label: a Prometheus label name that is not in :data:`TAKEN_LABELS`."""


def _takes_only_numbers(annotation: Any) -> bool:
    """Whether a field of this type holds an int or float (or a list of them; ``None`` aside), never a bool."""
    if get_origin(annotation) is list:
        return _takes_only_numbers(get_args(annotation)[0])
    if get_origin(annotation) is Annotated:
        return _takes_only_numbers(get_args(annotation)[0])
    if get_origin(annotation) in (Union, types.UnionType):
        kinds = [kind for kind in get_args(annotation) if kind is not type(None)]
        return bool(kinds) and all(_takes_only_numbers(kind) for kind in kinds)
    return annotation in (int, float)


def _not_text(value: Any) -> Any:
    """``value`` unchanged, unless it is a string given for a number (pydantic's lax mode would parse it; YAML
    reads ``1e9`` as text, as it wants a dot: ``1.0e9``): ValueError naming the text then."""
    if isinstance(value, str):
        raise ValueError("Input should be a number, not text")
    return value


class _Strict(BaseModel):
    """Base of every parameter model: unknown keys refused, frozen, and for every int or float field (and in
    a list of them) a YAML ``true``/``false`` (``Input should be a number, not true``), a string and an
    infinite or NaN value refused; pydantic's lax mode would read them as 1, 0, the parsed text or infinity.
    Ints stay fine for float fields, strings for durations."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _numbers_are_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        if info.field_name is not None and _takes_only_numbers(cls.model_fields[info.field_name].annotation):
            for item in value if isinstance(value, list) else [value]:
                _not_text(not_a_bool(item))
        return value


class AlertmanagerTiming(_Strict):
    group_wait: Duration
    group_interval: PositiveDuration
    repeat_interval: PositiveDuration

    @property
    def group_interval_seconds(self) -> float:
        return duration_seconds(self.group_interval)

    @property
    def repeat_interval_seconds(self) -> float:
        return duration_seconds(self.repeat_interval)

    @model_validator(mode="after")
    def _repeat_not_before_group(self) -> AlertmanagerTiming:
        if duration_seconds(self.repeat_interval) < duration_seconds(self.group_interval):
            raise invalid(
                f"need group_interval <= repeat_interval, got {self.group_interval} > {self.repeat_interval}",
                "repeat_interval",
                "group_interval",
            )
        return self


class PolicyParams(_Strict):
    """The rebalancer's policy.  Weights are Envoy ``load_balancing_weight`` values."""

    neutral_weight: int = Field(gt=0)
    min_weight: int = Field(gt=0)
    # Envoy refuses an EDS update whose endpoint weights in a locality sum above 2^32 - 1
    # (endpoint_components.proto, load_balancing_weight); MAX_NODES (64) x 1e6 stays far below.
    max_weight: int = Field(gt=0, le=1_000_000)
    max_step: int = Field(gt=0)
    ewma_alpha: float = Field(gt=0, le=1)
    spare_exponent: float = Field(gt=0, le=4)
    # Envoy's lb_policy the weights are computed for (mqttlb.webhook.policy_base): the stack writes its
    # own lb_policy here, so the two cannot disagree.
    base_policy: Literal["ROUND_ROBIN", "LEAST_REQUEST"]
    # Envoy's least_request_lb_config.active_request_bias (LEAST_REQUEST: weight / (active + 1) ** bias);
    # the stack's Envoy cluster and the policy's conversion of shares into weights both read it.
    active_request_bias: float = Field(ge=0, le=10)
    hysteresis: float = Field(ge=0, lt=1)
    # What the weights aim at: "spare-share" (each node's share of the new connections from its spare CPU)
    # or "connection-count" (the connections each node should hold for even CPU; policy_base.count_targets).
    steer_target: Literal["spare-share", "connection-count"] = "spare-share"
    count_gain: float = Field(default=0.5, gt=0, le=1)
    # Steer whenever the CPU spread is above the hysteresis, not only while a rebalance alert fires.
    steer_below_alert: StrictBool = False
    # Minimum time between two changes of one lever; None = the measurement lag (scrape interval +
    # rate window), so the effect of one step is measured before the next.
    cooldown_seconds: float | None = Field(default=None, ge=0)
    recover_step: int = Field(gt=0)
    recover_max_spread: float = Field(gt=0, le=1)
    sample_max_age_seconds: float = Field(gt=0)
    # Caps on new connections as fractions of the active ones, each level stricter than the last.
    shed_levels: list[Fraction] = Field(min_length=1)
    # Floor of the connection count the shed caps are fractions of (right after an Envoy restart the
    # active count is 0, and a cap of a fraction of 0 would admit one client).
    shed_min_connections: int = Field(default=100, ge=1)

    @model_validator(mode="after")
    def _weights_in_order(self) -> PolicyParams:
        if self.min_weight > self.neutral_weight:
            raise invalid(
                f"need min_weight <= neutral_weight, got {self.min_weight} > {self.neutral_weight}",
                "min_weight",
                "neutral_weight",
            )
        if self.neutral_weight > self.max_weight:
            raise invalid(
                f"need neutral_weight <= max_weight, got {self.neutral_weight} > {self.max_weight}",
                "neutral_weight",
                "max_weight",
            )
        span = self.max_weight - self.min_weight
        if self.max_step > span:
            raise invalid(
                f"need max_step <= max_weight - min_weight, got {self.max_step} > {span}",
                "max_step",
                "max_weight",
                "min_weight",
            )
        if self.recover_step > self.max_step:
            raise invalid(
                f"need recover_step <= max_step (recovery is never faster than steering), "
                f"got {self.recover_step} > {self.max_step}",
                "recover_step",
                "max_step",
            )
        levels = self.shed_levels
        if any(later >= earlier for earlier, later in zip(levels, levels[1:], strict=False)):
            raise invalid(f"must decrease strictly (each level is stricter than the last), got {levels}", "shed_levels")
        return self


# The evict lever's recipients must take more than this share of the new connections whatever the policy's
# targets give them: below it most evicted clients would land on the donors or on nodes above the mean, and
# disconnecting them is for nothing (trial: a recipient holding 300 connections got 31 % under least request
# at its target weights).  ``min_recipient_share`` must be above it, or it would do nothing.
MIN_LANDING = 0.5


class EvictionParams(_Strict):
    """The evict lever: moving clients that are already connected off donor nodes (issue 14).

    A node is a **donor** when its CPU is above the cluster mean by more than ``spread_target``
    (utilisation points, 0..1), a **recipient** when below the mean.  Evicting starts automatically once
    the cluster has been imbalanced for ``after`` without the weights reducing its max squared
    deviation by ``min_improvement`` (a fraction), or sooner, after ``idle_after``, when fewer clients
    connected through Envoy in that time than the donors' surplus amounts to (the weights steer only new
    connections, so they have too little to steer), and stops when no node is above the mean by more than
    ``spread_target`` (no donor left).  A batch waits until the recipients would take at least
    ``min_recipient_share`` of the new connections (what Envoy's base policy makes of the weights), or the
    share the policy's target weights give them less 5 points when that is lower, and always more than half.
    Bounds: at most ``max_per_second`` clients/s per node, at most ``max_fraction`` of a node's clients per
    batch, one batch per node per ``cooldown_seconds``
    (None = the step interval: a batch's effect is measured before the next).  Persistent sessions on
    independent brokers are evicted only with ``allow_persistent``.
    """

    enabled: StrictBool = True
    after: Duration = "30s"
    idle_after: Duration = "10s"
    min_improvement: float = Field(default=0.25, gt=0, lt=1)
    spread_target: float = Field(default=0.05, gt=0, lt=1)
    min_recipient_share: float = Field(default=0.8, gt=MIN_LANDING, le=1)
    max_per_second: float = Field(default=20.0, gt=0, le=10000)
    max_fraction: float = Field(default=0.25, gt=0, le=1)
    cooldown_seconds: float | None = Field(default=None, ge=0)
    allow_persistent: StrictBool = False

    @model_validator(mode="after")
    def _idle_after_not_after_after(self) -> EvictionParams:
        if duration_seconds(self.idle_after) > duration_seconds(self.after):
            raise invalid(
                f"need idle_after <= after (it arms sooner, never later), got {self.idle_after} > {self.after}",
                "idle_after",
                "after",
            )
        return self


class BrokerCpuParams(_Strict):
    """Where the per-node CPU utilisation (``contract.NODE_CPU``) comes from.

    ``exporter``: the broker exporter's ``mqtt_broker_process_cpu_seconds_total`` over its configured
    ``mqtt_broker_cpu_capacity_cores``.  ``cadvisor`` (Kubernetes): cAdvisor's
    ``container_cpu_usage_seconds_total`` (``cadvisor_selector``) of the broker pod's containers over the
    sum of their CPU limits from kube-state-metrics' ``kube_pod_container_resource_limits{resource="cpu"}``
    (``kube_state_metrics_selector``), joined on ``namespace`` and ``pod``; the broker's node name must
    be its pod name (a StatefulSet's ``hivemq-0``), and a pod without CPU limits has no utilisation.
    ``cadvisor_rate_window``: the ``rate``/``irate`` range over cAdvisor's counter, not ``rate_window``:
    the kubelet is scraped far less often than mqttlb's exporters (kube-prometheus-stack: every 30 s),
    and a range holding one sample gives no rate at all; keep it >= 4 x the kubelet's scrape interval."""

    source: Literal["exporter", "cadvisor"] = "exporter"
    cadvisor_rate_window: PositiveDuration = "2m"
    cadvisor_selector: Selector = 'job="kubelet", metrics_path="/metrics/cadvisor"'
    kube_state_metrics_selector: Selector = 'job="kube-state-metrics"'


class Params(_Strict):
    broker_selector: Selector
    envoy_selector: Selector  # mqttlb's Envoy exporter: weights, detailed health, cap, overload
    envoy_stats_selector: Selector  # Envoy's own /stats/prometheus (every Envoy of a fleet)
    webhook_selector: Selector
    rate_window: PositiveDuration
    cpu_high: float = Field(gt=0, le=1)
    cpu_high_for: Duration
    cpu_critical: float = Field(gt=0, le=1)
    cpu_critical_for: Duration
    imbalance_max_squared_deviation: float = Field(gt=0)
    imbalance_min_mean: float = Field(ge=0, le=1)
    imbalance_for: Duration
    broker_down_for: Duration
    exporter_down_for: Duration
    endpoint_unhealthy_for: Duration
    rebalancer_failing_for: PositiveDuration  # also the range of increase(failures[...])
    cpu_missing_for: Duration = "5m"  # an up broker without a CPU utilisation sample (MqttBrokerCpuMissing)
    # The controller steers before the alert fires once a node's short-window CPU (NODE_CPU_FAST)
    # above cpu_high, integrated, reaches (1 - cpu_high) x this (see mqttlb.webhook.plan.early_hot).
    early_steer_for: Duration = "5s"
    # None: docs/runbooks/<AlertName>.md, relative (mqttlb.rulegen.runbook_url); the native stack sets it
    # to its webhook's /runbooks (mqttlb.stack.render, mqttlb.webhook.runbooks).
    runbook_base_url: HttpUrl | None = None
    alertmanager: AlertmanagerTiming
    policy: PolicyParams
    eviction: EvictionParams = Field(default_factory=EvictionParams)
    # Name of the MQTT cluster label on every broker series, recording rule and alert (not `cluster`,
    # which kube-prometheus gives the Kubernetes cluster).
    mqtt_cluster_label: ClusterLabel = contract.CLUSTER_LABEL
    broker_cpu: BrokerCpuParams = Field(default_factory=BrokerCpuParams)

    @model_validator(mode="after")
    def _thresholds_in_order(self) -> Params:
        if self.cpu_high >= self.cpu_critical:
            raise invalid(
                f"need cpu_high < cpu_critical, got {self.cpu_high:g} >= {self.cpu_critical:g}",
                "cpu_high",
                "cpu_critical",
            )
        if self.imbalance_min_mean >= self.cpu_critical:
            raise invalid(
                f"need imbalance_min_mean < cpu_critical (above it the cluster sheds, rebalancing cannot "
                f"help), got {self.imbalance_min_mean:g} >= {self.cpu_critical:g}",
                "imbalance_min_mean",
                "cpu_critical",
            )
        return self


# Short-lived stacks (tests, benchmarks, demos, the experiment) react faster than the shipped
# defaults: short `for` durations, a 5 s step interval and quick Alertmanager timing, so an
# alert-driven run takes a minute.  The one such set; the experiment adds its named deltas to it.
SHORT_LIVED_STACK_PARAMS: dict[str, Any] = {
    "rate_window": "20s",
    "cpu_high_for": "10s",
    "cpu_critical_for": "10s",
    "imbalance_for": "10s",
    "broker_down_for": "10s",
    "alertmanager": {"group_wait": "2s", "group_interval": "5s", "repeat_interval": "10s"},
    "policy": {"cooldown_seconds": 5},
}


def step_interval_seconds(params: Params, scrape_interval_seconds: float) -> float:
    """Minimum seconds between two changes of one lever: ``policy.cooldown_seconds`` when set, else the
    measurement lag — one scrape plus the rate window, after which a step's effect is fully measured."""
    if params.policy.cooldown_seconds is not None:
        return params.policy.cooldown_seconds
    return measurement_lag_seconds(scrape_interval_seconds, params.rate_window)


def measurement_lag_seconds(scrape_interval_seconds: float, rate_window: str) -> float:
    """Seconds until a change shows in full in a rate over ``rate_window`` (a Prometheus duration) scraped
    every ``scrape_interval_seconds``: one scrape plus the window."""
    return scrape_interval_seconds + duration_seconds(rate_window)


def check_rate_window(params: Params, scrape_interval: str, key: str = "rate_window") -> None:
    """Refuse a ``params.rate_window`` that cannot go with a Prometheus ``scrape_interval`` (a duration string):
    rate() needs two samples, so the window must span at least two scrapes.  For a model validator: raises
    the cross-field error (:func:`mqttlb.yamlfile.invalid`) on ``key`` (how the caller's file spells
    rate_window) and ``scrape_interval``, e.g. ``"need params.rate_window >= 2 x scrape_interval (rate() needs
    two samples), got 5s < 2 x 5s"``.  The stack's and the webhook's config both check with this."""
    window = params.rate_window
    if duration_seconds(window) < 2 * duration_seconds(scrape_interval):
        message = f"need {key} >= 2 x scrape_interval (rate() needs two samples), got {window} < 2 x {scrape_interval}"
        raise invalid(message, key, "scrape_interval")


def params_file_data(path: Path = DEFAULT_PARAMS_FILE) -> dict[str, Any]:
    """The parameter file as a plain mapping (not validated); raises :class:`ParamsError`."""
    return load_yaml_mapping(path, ParamsError)


def with_defaults(value: Any, path: Path = DEFAULT_PARAMS_FILE) -> Any:
    """For a field of type :class:`Params` (``mode="before"``): a mapping of overrides merged onto
    the parameter file; ``None`` means no overrides; anything else is returned for pydantic to refuse."""
    if value is None:
        value = {}
    if isinstance(value, Mapping):
        return deep_merge(params_file_data(path), value)
    return value


def load_params(
    overrides: Mapping[str, Any] | None = None,
    path: Path = DEFAULT_PARAMS_FILE,
    source: str = "parameter overrides",
) -> Params:
    """Read the parameter file at ``path``, apply ``overrides`` (nested, keys as in the file), validate.

    Raises :class:`ParamsError`, one line naming the key and its source: ``path``, or ``source``
    for a key set by ``overrides`` (e.g. ``"parameter overrides: policy.min_weight: need ..."``)."""
    base = params_file_data(path)
    sources = Sources(str(path))
    sources.add(str(path), base)
    sources.add(source, overrides or {})
    try:
        return Params.model_validate(deep_merge(base, overrides or {}))
    except ValidationError as exc:
        raise ParamsError(one_line(exc, sources)) from None
