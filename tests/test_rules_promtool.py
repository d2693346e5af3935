"""The committed rules pass `promtool check rules` and the unit tests in rules/tests/."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from mqttlb import contract, rulegen
from mqttlb.params import load_params

REPO = Path(__file__).resolve().parents[1]
RULES_DIR = REPO / "rules"
UNIT_TESTS = sorted((RULES_DIR / "tests").glob("*.yml"))
PROMTOOL = shutil.which("promtool")


def _promtool(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None, "promtool is not installed (Debian package prometheus)"
    return subprocess.run([PROMTOOL, *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def test_promtool_check_rules() -> None:
    files = [str(RULES_DIR / name) for name in (rulegen.RECORDING_FILE, rulegen.ALERTS_FILE)]
    result = _promtool("check", "rules", *files)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(contract.ALERT_NAMES)} rules found" in result.stdout


def test_promtool_check_rules_rejects_bad_promql(tmp_path: Path) -> None:
    # The check is not vacuous: a broken expression fails it.
    bad = tmp_path / "bad.yml"
    bad.write_text("groups:\n- name: x\n  rules:\n  - record: a:b:c\n    expr: sum by (node (x)\n")
    assert _promtool("check", "rules", str(bad)).returncode != 0


def test_unit_tests_exist() -> None:
    assert {p.name for p in UNIT_TESTS} >= {
        "recording_test.yml",
        "alerts_load_test.yml",
        "alerts_availability_test.yml",
        "counters_test.yml",
    }


@pytest.mark.parametrize("unit_test", UNIT_TESTS, ids=lambda p: p.name)
def test_promtool_unit_tests_pass(unit_test: Path) -> None:
    result = _promtool("test", "rules", str(unit_test))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_counters_test_covers_every_action_kind() -> None:
    # counters_test.yml shows that the first action of *each* kind is visible to increase() when the
    # counter starts at 0: it must list every kind the contract knows, as input and as a result.
    cases = yaml.safe_load((RULES_DIR / "tests" / "counters_test.yml").read_text())["tests"]

    def kind(text: str) -> str:
        match = re.search(r'kind="([^"]+)"', text)
        assert match is not None, text
        return match[1]

    prefix = contract.WEBHOOK_ACTIONS + "{"
    inputs = {
        kind(s["series"])
        for case in cases
        for s in case["input_series"]
        if s["series"].startswith(prefix) and 'instance="from-zero"' in s["series"]
    }
    visible = {
        kind(sample["labels"])
        for case in cases
        for check in case["promql_expr_test"]
        if check["expr"].startswith(f"increase({prefix}") and 'instance="from-zero"' in check["expr"]
        for sample in check["exp_samples"]
    }
    every_kind = {k.value for k in contract.OutcomeKind}
    assert inputs == every_kind
    assert visible == every_kind


def _unit_test_cases() -> list[dict]:
    return [case for path in UNIT_TESTS for case in yaml.safe_load(path.read_text())["tests"]]


def test_every_alert_is_tested_firing_and_silent() -> None:
    firing: set[str] = set()
    silent: set[str] = set()
    for case in _unit_test_cases():
        for check in case.get("alert_rule_test", []):
            (firing if check.get("exp_alerts") else silent).add(check["alertname"])
    assert firing == set(contract.ALERT_NAMES)
    assert silent == set(contract.ALERT_NAMES)


def test_every_recording_rule_value_is_asserted() -> None:
    recorded = {
        rule["record"]
        for group in rulegen.recording_groups(load_params())
        for rule in group["rules"]
    }
    # `round(<rule>, 2 ^ -20)` counts as asserting <rule> (see the comment in recording_test.yml).
    asserted = {
        re.sub(r"^round\(", "", check["expr"]).split("{")[0].split(",")[0].strip()
        for case in _unit_test_cases()
        for check in case.get("promql_expr_test", [])
        if check.get("exp_samples")
    }
    assert recorded <= asserted, f"recording rules without a value test: {sorted(recorded - asserted)}"


def test_unit_tests_catch_a_changed_threshold(tmp_path: Path) -> None:
    # Rules generated with another threshold must fail the committed unit tests, so they check values.
    rules = tmp_path / "rules"
    (rules / "tests").mkdir(parents=True)
    changed = {"cpu_high": 0.95, "cpu_critical": 0.97, "imbalance_max_squared_deviation": 0.1}
    rulegen.write_rule_files(load_params(changed), rules)
    for path in UNIT_TESTS:
        shutil.copy(path, rules / "tests" / path.name)
    result = _promtool("test", "rules", str(rules / "tests" / "alerts_load_test.yml"))
    assert result.returncode != 0
    assert "MqttBrokerCpuHigh" in result.stdout + result.stderr
    assert "MqttClusterImbalanced" in result.stdout + result.stderr


CADVISOR_TEST = RULES_DIR / "tests" / "cadvisor" / "cpu_test.yml"


def _cadvisor_rules(tmp_path: Path, overrides: dict) -> Path:
    """The rules generated with ``overrides`` next to a copy of the cAdvisor unit test; its path."""
    rulegen.write_rule_files(load_params(overrides), tmp_path)
    return Path(shutil.copy(CADVISOR_TEST, tmp_path / CADVISOR_TEST.name))


def test_cadvisor_cpu_source_unit_test(tmp_path: Path) -> None:
    result = _promtool("test", "rules", str(_cadvisor_rules(tmp_path, {"broker_cpu": {"source": "cadvisor"}})))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_cadvisor_unit_test_fails_on_the_exporter_source(tmp_path: Path) -> None:
    # The cAdvisor test is not vacuous: the exporter's own reading (0.1 for hivemq-0) does not pass it.
    result = _promtool("test", "rules", str(_cadvisor_rules(tmp_path, {})))
    assert result.returncode != 0
    assert "mqttlb_node:mqtt_broker_cpu_utilisation:ratio" in result.stdout + result.stderr


CADVISOR_30S_TEST = RULES_DIR / "tests" / "cadvisor" / "cpu_30s_scrape_test.yml"


@pytest.mark.parametrize(("window", "passes"), [(None, True), ("30s", False)])
def test_cadvisor_cpu_with_the_kubelet_scraped_every_30s(tmp_path: Path, window: str | None, passes: bool) -> None:
    # kube-prometheus-stack scrapes cAdvisor every 30 s: the default cadvisor_rate_window (2m) gives the CPU,
    # a 30 s range (rate_window's value, which the cAdvisor rules used before) holds one sample and gives none.
    broker_cpu: dict[str, str] = {"source": "cadvisor"}
    if window is not None:
        broker_cpu["cadvisor_rate_window"] = window
    rulegen.write_rule_files(load_params({"broker_cpu": broker_cpu}), tmp_path)
    test = shutil.copy(CADVISOR_30S_TEST, tmp_path / CADVISOR_30S_TEST.name)
    result = _promtool("test", "rules", str(test))
    assert (result.returncode == 0) is passes, result.stdout + result.stderr
    if not passes:
        assert "mqttlb_node:mqtt_broker_cpu_utilisation:ratio" in result.stdout + result.stderr


def test_cadvisor_rules_pass_promtool_check(tmp_path: Path) -> None:
    rulegen.write_rule_files(load_params({"broker_cpu": {"source": "cadvisor"}}), tmp_path)
    result = _promtool("check", "rules", *(str(tmp_path / n) for n in (rulegen.RECORDING_FILE, rulegen.ALERTS_FILE)))
    assert result.returncode == 0, result.stdout + result.stderr
