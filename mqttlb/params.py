"""Load the one parameter file (``params.yaml``) with optional overrides."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field

DEFAULT_PARAMS_FILE = Path(__file__).with_name("params.yaml")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AlertmanagerTiming(_Strict):
    group_wait: str
    group_interval: str
    repeat_interval: str


class PolicyParams(_Strict):
    neutral_weight: int = Field(gt=0)
    min_weight: int = Field(gt=0)
    max_weight: int = Field(gt=0)
    max_step: int = Field(gt=0)
    ewma_alpha: float = Field(gt=0, le=1)
    spare_exponent: float = Field(gt=0, le=4)
    hysteresis: float = Field(ge=0, lt=1)
    cooldown_seconds: float = Field(ge=0)
    recover_step: int = Field(gt=0)
    recover_max_spread: float = Field(gt=0, le=1)
    sample_max_age_seconds: float = Field(gt=0)
    shed_levels: list[float]


class Params(_Strict):
    broker_selector: str
    envoy_selector: str
    webhook_selector: str
    rate_window: str
    cpu_high: float = Field(gt=0, le=1)
    cpu_high_for: str
    cpu_critical: float = Field(gt=0, le=1)
    cpu_critical_for: str
    imbalance_max_squared_deviation: float = Field(gt=0)
    imbalance_min_mean: float = Field(ge=0, le=1)
    imbalance_for: str
    broker_down_for: str
    exporter_down_for: str
    endpoint_unhealthy_for: str
    rebalancer_failing_for: str
    runbook_base_url: str
    alertmanager: AlertmanagerTiming
    policy: PolicyParams


def _merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def load_params(overrides: dict[str, Any] | None = None, path: Path = DEFAULT_PARAMS_FILE) -> Params:
    """Read the parameter file and apply ``overrides`` (a nested dict); raises on unknown keys."""
    base = yaml.safe_load(path.read_text())
    return Params.model_validate(_merge(base, overrides or {}))
