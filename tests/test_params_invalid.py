"""Invalid parameters and configs: each is refused at load with one exact line naming key and source.

A table in the style of blackbox_exporter's config tests: input -> the exact error.  ``{file}`` in
an expected message (or a case's file or variables) stands for the path of the file the case writes,
``{dir}`` for the case's temporary folder and ``{repo}`` for this checkout.  The stack cases also run
``mqttlb stack check`` (and ``stack up`` for some) as a subprocess: exit status 2, that one line
on stderr, and nothing created -- no state directory, no other file.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from mqttlb.exporters.broker_config import BrokerExporterConfigError
from mqttlb.exporters.broker_config import load_config as load_broker_config
from mqttlb.params import ParamsError, duration_seconds, load_params
from mqttlb.rulegen import params_from_args
from mqttlb.stack.config import StackConfigError, load_stack_config
from mqttlb.webhook.config import WebhookConfigError
from mqttlb.webhook.config import load_config as load_webhook_config
from mqttlb.yamlfile import ConfigError, Sources, load_yaml_mapping


@dataclass(frozen=True)
class StackCase:
    id: str
    message: str
    file: str | None = None  # stack file content, passed with --stack-file
    env: dict[str, str] = field(default_factory=dict)
    up: bool = False  # also run `mqttlb stack up`


DURATION = "not a Prometheus duration such as 30s, 1m or 1h30m"
SELECTOR = 'not a label matcher list such as job="mqtt-brokers"'
OWN_FOLDER = "name a folder of its own, such as .stack"
REPO = Path(__file__).resolve().parents[1]
NODES_NOT_A_NUMBER = (
    "environment variable NODES: nodes: Input should be a valid integer, unable to parse string as an integer "
    "(got 'abc')"
)

STACK_CASES = [
    # --- params: in the stack file ---------------------------------------------------------------
    StackCase(
        "duration-and-selector",
        f"{{file}}: params.broker_selector: {SELECTOR} (got 'oops'); "
        f"{{file}}: params.cpu_high_for: {DURATION} (got 'banana')",
        file="params: {cpu_high_for: banana, broker_selector: oops}\n",
        up=True,
    ),
    StackCase(
        "duration-units-out-of-order",
        f"{{file}}: params.cpu_critical_for: {DURATION} (got '1m1h')",
        file="params: {cpu_critical_for: 1m1h}\n",
    ),
    StackCase(
        "selector-injection",
        f"{{file}}: params.envoy_selector: {SELECTOR} (got 'job=\"x\"}} or vector(1')",
        file="params: {envoy_selector: 'job=\"x\"} or vector(1'}\n",
    ),
    StackCase(
        "min-weight-above-neutral",
        "{file}: params.policy.min_weight: need min_weight <= neutral_weight, got 500 > 100",
        file="params:\n  policy:\n    min_weight: 500\n",
        up=True,
    ),
    StackCase(
        "max-step-beyond-weight-range",
        "{file}: params.policy.max_step: need max_step <= max_weight - min_weight, got 500 > 390",
        file="params: {policy: {max_step: 500}}\n",
    ),
    StackCase(
        "recover-step-above-max-step",
        "{file}: params.policy.recover_step: need recover_step <= max_step "
        "(recovery is never faster than steering), got 60 > 50",
        file="params: {policy: {recover_step: 60}}\n",
    ),
    StackCase(
        "shed-levels-not-decreasing",
        "{file}: params.policy.shed_levels: must decrease strictly (each level is stricter than the last), "
        "got [0.8, 0.9]",
        file="params: {policy: {shed_levels: [0.8, 0.9]}}\n",
        up=True,
    ),
    StackCase(
        "shed-level-above-one",
        "{file}: params.policy.shed_levels.0: Input should be less than 1 (got 1.5)",
        file="params: {policy: {shed_levels: [1.5, 0.5]}}\n",
    ),
    StackCase(
        "no-shed-levels",
        "{file}: params.policy.shed_levels: List should have at least 1 item after validation, not 0 (got [])",
        file="params: {policy: {shed_levels: []}}\n",
    ),
    StackCase(
        "cpu-high-not-below-critical",
        "{file}: params.cpu_high: need cpu_high < cpu_critical, got 0.9 >= 0.85",
        file="params: {cpu_high: 0.9}\n",
    ),
    StackCase(
        "imbalance-mean-not-below-critical",
        "{file}: params.imbalance_min_mean: need imbalance_min_mean < cpu_critical (above it the cluster "
        "sheds, rebalancing cannot help), got 0.9 >= 0.85",
        file="params: {imbalance_min_mean: 0.9}\n",
    ),
    StackCase(
        "rate-window-zero",
        "{file}: params.rate_window: must be longer than 0s (got '0s')",
        file="params: {rate_window: 0s}\n",
    ),
    StackCase(
        "negative-hysteresis",
        "{file}: params.policy.hysteresis: Input should be greater than or equal to 0 (got -0.1)",
        file="params: {policy: {hysteresis: -0.1}}\n",
    ),
    StackCase(
        "unknown-steer-target",
        "{file}: params.policy.steer_target: Input should be 'spare-share' or 'connection-count' (got 'cpu')",
        file="params: {policy: {steer_target: cpu}}\n",
    ),
    StackCase(
        "count-gain-above-one",
        "{file}: params.policy.count_gain: Input should be less than or equal to 1 (got 1.5)",
        file="params: {policy: {count_gain: 1.5}}\n",
    ),
    StackCase(
        "count-gain-bool",
        "{file}: params.policy.count_gain: Input should be a number, not true (got True)",
        file="params: {policy: {count_gain: true}}\n",
        up=True,
    ),
    StackCase(
        "max-fraction-bool",
        "{file}: params.eviction.max_fraction: Input should be a number, not false (got False)",
        file="params: {eviction: {max_fraction: false}}\n",
    ),
    StackCase(
        "neutral-weight-bool",
        "{file}: params.policy.neutral_weight: Input should be a number, not true (got True)",
        file="params: {policy: {neutral_weight: true}}\n",
    ),
    StackCase(
        "shed-level-bool",
        "{file}: params.policy.shed_levels: Input should be a number, not true (got [0.8, True])",
        file="params: {policy: {shed_levels: [0.8, true]}}\n",
    ),
    StackCase(
        "min-recipient-share-text",
        "{file}: params.eviction.min_recipient_share: Input should be a number, not text (got '0.8')",
        file="params: {eviction: {min_recipient_share: \"0.8\"}}\n",
    ),
    StackCase(
        "min-recipient-share-half-does-nothing",  # trial: the lever never acts at half or less (MIN_LANDING)
        "{file}: params.eviction.min_recipient_share: Input should be greater than 0.5 (got 0.3)",
        file="params: {eviction: {min_recipient_share: 0.3}}\n",
    ),
    StackCase(
        "evict-switch-text",  # trial: "no", "off" and 1 were read as switches
        "{file}: params.eviction.enabled: Input should be a valid boolean (got 'no')",
        file="params: {eviction: {enabled: \"no\"}}\n",
    ),
    StackCase(
        "steer-below-alert-number",
        "{file}: params.policy.steer_below_alert: Input should be a valid boolean (got 1)",
        file="params: {policy: {steer_below_alert: 1}}\n",
    ),
    StackCase(
        "exponent-without-sign-is-text-in-yaml",  # params.yaml's header said 1.0e9 would do
        "{file}: params.policy.max_weight: Input should be a number, not text (got '1.0e9')",
        file="params: {policy: {max_weight: 1.0e9}}\n",
    ),
    StackCase(
        "max-weight-1e9-is-text-in-yaml",
        "{file}: params.policy.max_weight: Input should be a number, not text (got '1e9')",
        file="params: {policy: {max_weight: 1e9}}\n",
    ),
    StackCase(
        "max-weight-above-envoy-bound",
        "{file}: params.policy.max_weight: Input should be less than or equal to 1000000 (got 2000000000)",
        file="params: {policy: {max_weight: 2000000000}}\n",
    ),
    StackCase(
        "cooldown-infinite",
        "{file}: params.policy.cooldown_seconds: Input should be a finite number (got inf)",
        file="params: {policy: {cooldown_seconds: .inf}}\n",
    ),
    StackCase(
        "count-gain-nan",
        "{file}: params.policy.count_gain: Input should be a finite number (got nan)",
        file="params: {policy: {count_gain: .nan}}\n",
    ),
    StackCase(
        "repeat-before-group-interval",
        "{file}: params.alertmanager.repeat_interval: need group_interval <= repeat_interval, got 1m > 30s",
        file="params: {alertmanager: {group_interval: 1m, repeat_interval: 30s}}\n",
    ),
    StackCase(
        "early-steer-for-not-a-duration",
        "{file}: params.early_steer_for: not a Prometheus duration such as 30s, 1m or 1h30m (got 'soon')",
        file="params: {early_steer_for: soon}\n",
    ),
    StackCase(
        "shed-floor-zero",
        "{file}: params.policy.shed_min_connections: Input should be greater than or equal to 1 (got 0)",
        file="params: {policy: {shed_min_connections: 0}}\n",
    ),
    StackCase(
        "runbook-url-not-http",
        "{file}: params.runbook_base_url: must be an http(s) URL (got 'docs/runbooks')",
        file="params: {runbook_base_url: docs/runbooks}\n",
    ),
    StackCase("unknown-param", "{file}: params.cpu_hihg: unknown key", file="params: {cpu_hihg: 0.5}\n"),
    StackCase(
        "params-not-a-mapping",
        "{file}: params: Input should be a valid dictionary or instance of Params (got 'oops')",
        file="params: oops\n",
    ),
    # --- stack-file keys -------------------------------------------------------------------------
    StackCase("unknown-key", "{file}: colour: unknown key", file="nodes: 3\ncolour: blue\n", up=True),
    StackCase(
        "nodes-zero",
        "{file}: nodes: Input should be greater than or equal to 1 (got 0)",
        file="nodes: 0\n",
    ),
    StackCase(
        "rate-window-shorter-than-two-scrapes",
        "{file}: scrape_interval: need params.rate_window >= 2 x scrape_interval (rate() needs two samples), "
        "got 30s < 2 x 20s",
        file="scrape_interval: 20s\n",
    ),
    StackCase(
        "slow-start-not-a-duration",
        "{file}: slow_start_window: Input should be a valid string (got 20)",
        file="slow_start_window: 20\n",
    ),
    StackCase(
        "port-clash",
        "{file}: ports.prometheus: port clash: envoy_listener and prometheus both use 1883",
        file="ports: {prometheus: 1883}\n",
    ),
    StackCase(
        "port-clash-with-a-node",
        "{file}: ports.webhook: port clash: node2 (18832) and webhook both use 18832",
        file="ports: {webhook: 18832}\n",
    ),
    StackCase(
        "yaml-syntax-error",
        "{file}: not valid YAML at line 3, column 12: mapping values are not allowed here",
        file="cluster: local\nnodes: 3\n  lb_policy: ROUND_ROBIN\n",
        up=True,
    ),
    StackCase(
        "duplicate-key",
        "{file}: not valid YAML at line 2, column 1: duplicate key 'nodes'",
        file="nodes: 3\nnodes: 4\n",
    ),
    StackCase(
        "not-a-mapping",
        "{file}: must be a mapping of keys to values, got a list",
        file="- nodes: 3\n",
    ),
    # --- environment variables ---------------------------------------------------------------------
    StackCase(
        "cpu-cores-infinite",
        "environment variable MQTTLB_NODE_CPU_CORES: node_cpu_cores: Input should be a finite number (got 'inf')",
        env={"MQTTLB_NODE_CPU_CORES": "inf"},
    ),
    StackCase("yaml-nested-too-deeply", "{file}: not valid YAML: nested too deeply", file="a: " + "[" * 10_000 + "\n"),
    StackCase("NODES-not-a-number", NODES_NOT_A_NUMBER, env={"NODES": "abc"}, up=True),
    StackCase("NODES-beats-the-file", NODES_NOT_A_NUMBER, file="nodes: 5\n", env={"NODES": "abc"}),
    StackCase(
        "MQTTLB_NODES-too-many",
        "environment variable MQTTLB_NODES: nodes: Input should be less than or equal to 64 (got '65')",
        env={"MQTTLB_NODES": "65"},
    ),
    StackCase(
        "MQTTLB_LB_POLICY",
        "environment variable MQTTLB_LB_POLICY: lb_policy: Input should be 'ROUND_ROBIN' or 'LEAST_REQUEST' "
        "(got 'FOO')",
        file="lb_policy: LEAST_REQUEST\n",
        env={"MQTTLB_LB_POLICY": "FOO"},
        up=True,
    ),
    StackCase(
        "MQTTLB_PORT_WEBHOOK-out-of-range",
        "environment variable MQTTLB_PORT_WEBHOOK: ports.webhook: Input should be less than or equal to 65535 "
        "(got '99999')",
        env={"MQTTLB_PORT_WEBHOOK": "99999"},
    ),
    StackCase(
        "MQTTLB_PORT-clash-blames-the-variable",
        "environment variable MQTTLB_PORT_PROMETHEUS: ports.prometheus: port clash: prometheus and webhook both "
        "use 9700",
        file="ports: {webhook: 9700}\n",
        env={"MQTTLB_PORT_PROMETHEUS": "9700"},
    ),
    StackCase(
        "MQTTLB_PORT-unknown-name",
        "environment variable MQTTLB_PORT_BOGUS: ports.bogus: unknown key",
        env={"MQTTLB_PORT_BOGUS": "1"},
    ),
    StackCase(
        "MQTTLB_DRY_RUN",
        "environment variable MQTTLB_DRY_RUN: dry_run: Input should be a valid boolean, unable to interpret "
        "input (got 'maybe')",
        env={"MQTTLB_DRY_RUN": "maybe"},
    ),
    StackCase(
        "state-dir-empty",
        "{file}: state_dir: must name a folder (empty, the stack would write its files into the current folder) "
        "(got '')",
        file='state_dir: ""\n',
        up=True,
    ),
    StackCase(
        "MQTTLB_STATE_DIR-the-checkout",
        f"environment variable MQTTLB_STATE_DIR: state_dir: holds mqttlb's own files (mqttlb/ or stack/stack.yaml): "
        f"the stack would write its tokens and configs among them; {OWN_FOLDER} (got '{{repo}}')",
        env={"MQTTLB_STATE_DIR": "{repo}"},
        up=True,
    ),
    StackCase(
        "state-dir-in-the-package",
        f"{{file}}: state_dir: is inside the mqttlb package ({{repo}}/mqttlb); {OWN_FOLDER} "
        "(got '{repo}/mqttlb/state')",
        file="state_dir: {repo}/mqttlb/state\n",
    ),
    StackCase(
        "state-dir-the-checkouts-stack-folder",
        f"{{file}}: state_dir: is the checkout's stack/ folder, whose files are tracked; {OWN_FOLDER} "
        "(got '{repo}/stack')",
        file="state_dir: {repo}/stack\n",
    ),
    StackCase(
        "state-dir-a-folder-of-other-files",  # trial: --state-dir / (or /etc, a typo) was accepted
        "{file}: state_dir: holds files a stack does not write (EnvoyEndpointUnhealthy.md, MqttBrokerCpuCritical.md, "
        "MqttBrokerCpuHigh.md) and no stack.json: it is not a stack's state dir, and the stack would write its "
        "tokens, configs and logs among them; name a new or empty folder, such as .stack (got '{repo}/docs/runbooks')",
        file="state_dir: {repo}/docs/runbooks\n",
        up=True,
    ),
    StackCase(
        "MQTTLB_STACK_FILE-missing",
        "{dir}/missing.yaml: cannot read: No such file or directory "
        "(file named by environment variable MQTTLB_STACK_FILE)",
        env={"MQTTLB_STACK_FILE": "{dir}/missing.yaml"},
    ),
]


def _fill(text: str, tmp_path: Path) -> str:
    for name, value in (("{file}", tmp_path / "stack.yaml"), ("{dir}", tmp_path), ("{repo}", REPO)):
        text = text.replace(name, str(value))
    return text


def _prepare(case: StackCase, tmp_path: Path) -> tuple[Path | None, dict[str, str], str]:
    """Write the case's stack file; return (path or None, environment, expected message)."""
    path = None
    if case.file is not None:
        path = tmp_path / "stack.yaml"
        path.write_text(_fill(case.file, tmp_path))
    env = {name: _fill(value, tmp_path) for name, value in case.env.items()}
    return path, env, _fill(case.message, tmp_path)


def test_the_table_is_big_enough() -> None:
    assert len(STACK_CASES) >= 20
    assert len({case.id for case in STACK_CASES}) == len(STACK_CASES)


@pytest.mark.parametrize("case", STACK_CASES, ids=lambda case: case.id)
def test_stack_config_refuses_with_the_exact_line(case: StackCase, tmp_path: Path) -> None:
    path, env, expected = _prepare(case, tmp_path)
    with pytest.raises(StackConfigError) as caught:
        load_stack_config(path, env=env)
    assert str(caught.value) == expected


@pytest.mark.parametrize("case", STACK_CASES, ids=lambda case: case.id)
def test_stack_cli_refuses_before_anything_starts(case: StackCase, tmp_path: Path) -> None:
    path, case_env, expected = _prepare(case, tmp_path)
    work = tmp_path / "cwd"
    work.mkdir()
    no_binaries = tmp_path / "empty-bin"  # were the config accepted, `up` would stop at "missing binary"
    no_binaries.mkdir()
    state = tmp_path / "state"
    env = {"PATH": str(no_binaries), "HOME": str(work), **case_env}
    if "state_dir:" not in (case.file or ""):  # a case about the file's state_dir: the variable would win
        env.setdefault("MQTTLB_STATE_DIR", str(state))
    args = ["--stack-file", str(path)] if path is not None else []
    for command in ["check", "up"] if case.up else ["check"]:
        result = subprocess.run(
            [sys.executable, "-m", "mqttlb.cli", "stack", *args, command],
            capture_output=True,
            text=True,
            env=env,
            cwd=work,
            timeout=60,
        )
        assert (result.returncode, result.stdout, result.stderr) == (2, "", f"mqttlb stack: error: {expected}\n")
    assert not state.exists()
    assert list(work.iterdir()) == []
    assert not (REPO / "supervisord.conf").exists() and not (REPO / "mqttlb" / "state").exists()


def test_stack_command_line_override_is_blamed_on_the_command_line(tmp_path: Path) -> None:
    env = {"PATH": str(tmp_path), "MQTTLB_STATE_DIR": str(tmp_path / "state")}
    result = subprocess.run(
        [sys.executable, "-m", "mqttlb.cli", "stack", "--nodes", "65", "check"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr == (
        "mqttlb stack: error: command line: nodes: Input should be less than or equal to 64 (got 65)\n"
    )
    assert not (tmp_path / "state").exists()


# --- the webhook's config ---------------------------------------------------------------------------

WEBHOOK_BASE: dict[str, Any] = {
    "eds_path": "/nonexistent/eds.json",
    "overload_file": "/nonexistent/pressure",
    "state_file": "/nonexistent/state.json",
    "audit_log": "/nonexistent/audit.jsonl",
    "nodes": [
        {"name": "node1", "host": "127.0.0.1", "port": 18831},
        {"name": "node2", "host": "127.0.0.1", "port": 18832},
    ],
}

WEBHOOK_CASES = [
    (
        "params-unknown-key",
        {"params_overrides": {"policy": {"bogus": 1}}},
        "{file}: params_overrides.policy.bogus: unknown key",
    ),
    (
        "params-shed-levels-equal",
        {"params_overrides": {"policy": {"shed_levels": [0.5, 0.5]}}},
        "{file}: params_overrides.policy.shed_levels: must decrease strictly (each level is stricter than the "
        "last), got [0.5, 0.5]",
    ),
    (
        "params-min-weight",
        {"params_overrides": {"policy": {"min_weight": 500}}},
        "{file}: params_overrides.policy.min_weight: need min_weight <= neutral_weight, got 500 > 100",
    ),
    (
        "params-duration",
        {"params_overrides": {"cpu_high_for": "banana"}},
        f"{{file}}: params_overrides.cpu_high_for: {DURATION} (got 'banana')",
    ),
    ("listen", {"listen": "9643"}, "{file}: listen: must be host:port (got '9643')"),
    (
        "no-nodes",
        {"nodes": []},
        "{file}: nodes: List should have at least 1 item after validation, not 0 (got [])",
    ),
    (
        "duplicate-node",
        {"nodes": [{"name": "node1", "host": "10.0.0.1", "port": 1}, {"name": "node1", "host": "10.0.0.1", "port": 2}]},
        "{file}: nodes: node names must be unique, got ['node1', 'node1']",
    ),
    (
        "node-ip",
        {"nodes": [{"name": "node1", "host": "999.1.1.1", "port": 1883}]},
        "{file}: nodes.0.host: must be an IPv4 or IPv6 address (Envoy's EDS takes no names), got '999.1.1.1'",
    ),
    (
        "rate-window-one-scrape",
        {"params_overrides": {"rate_window": "5s"}, "scrape_interval": "5s"},
        "{file}: params_overrides.rate_window: need params_overrides.rate_window >= 2 x scrape_interval "
        "(rate() needs two samples), got 5s < 2 x 5s",
    ),
    (
        "scrape-interval-too-long-for-the-window",
        {"scrape_interval": "20s"},
        "{file}: scrape_interval: need params_overrides.rate_window >= 2 x scrape_interval "
        "(rate() needs two samples), got 30s < 2 x 20s",
    ),
    (
        "timeout-zero",
        {"http_timeout_seconds": 0},
        "{file}: http_timeout_seconds: Input should be greater than 0 (got 0)",
    ),
]


@pytest.mark.parametrize(("mutation", "message"), [c[1:] for c in WEBHOOK_CASES], ids=[c[0] for c in WEBHOOK_CASES])
def test_webhook_config_refuses_with_the_exact_line(mutation: dict[str, Any], message: str, tmp_path: Path) -> None:
    path = tmp_path / "webhook.yaml"
    path.write_text(json.dumps({**WEBHOOK_BASE, **mutation}))
    with pytest.raises(WebhookConfigError) as caught:
        load_webhook_config(path)
    assert str(caught.value) == message.replace("{file}", str(path))


def test_webhook_command_line_override_and_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "webhook.yaml"
    path.write_text(json.dumps(WEBHOOK_BASE))
    with pytest.raises(WebhookConfigError) as caught:
        load_webhook_config(path, {"listen": "localhost"})
    assert str(caught.value) == "command line: listen: must be host:port (got 'localhost')"
    with pytest.raises(WebhookConfigError) as caught:
        load_webhook_config(tmp_path / "missing.yaml")
    assert str(caught.value) == f"{tmp_path}/missing.yaml: cannot read: No such file or directory"


# --- the broker exporter's config ---------------------------------------------------------------------

BROKER_BASE: dict[str, Any] = {
    "cluster": "local",
    "nodes": [
        {"name": "node1", "kind": "mosquitto", "address": "127.0.0.1:18831", "cpu_cores": 0.5},
        {
            "name": "hq",
            "kind": "hivemq",
            "address": "10.0.0.5:1883",
            "cpu_cores": 4,
            "metrics_url": "http://10.0.0.5:9399/metrics",
        },
    ],
}
MOSQUITTO, HIVEMQ = BROKER_BASE["nodes"]

BROKER_CASES = [
    ("hivemq-without-metrics-url", {"nodes": [MOSQUITTO, {**HIVEMQ, "metrics_url": None}]},
     "{file}: nodes.1.metrics_url: a hivemq node needs metrics_url"),
    ("duplicate-node", {"nodes": [MOSQUITTO, MOSQUITTO]}, "{file}: nodes: node name 'node1' appears twice"),
    ("address", {"nodes": [{**MOSQUITTO, "address": "localhost"}]},
     "{file}: nodes.0.address: expected host:port, got 'localhost'"),
    ("kind", {"nodes": [{**MOSQUITTO, "kind": "emqx"}]},
     "{file}: nodes.0.kind: Input should be 'mosquitto' or 'hivemq' (got 'emqx')"),
    ("unknown-key", {"bogus": 1}, "{file}: bogus: unknown key"),
    ("metrics-url-on-mosquitto", {"nodes": [{**MOSQUITTO, "metrics_url": "http://x/m"}]},
     "{file}: nodes.0.metrics_url: metrics_url is for hivemq nodes"),
    ("metrics-url-scheme", {"nodes": [{**HIVEMQ, "metrics_url": "ftp://x/metrics"}]},
     "{file}: nodes.0.metrics_url: must be an http(s) URL (got 'ftp://x/metrics')"),
    ("stale-factor", {"stale_factor": 1}, "{file}: stale_factor: Input should be greater than or equal to 1.5 (got 1)"),
]


@pytest.mark.parametrize(("mutation", "message"), [c[1:] for c in BROKER_CASES], ids=[c[0] for c in BROKER_CASES])
def test_broker_exporter_config_refuses_with_the_exact_line(
    mutation: dict[str, Any], message: str, tmp_path: Path
) -> None:
    path = tmp_path / "broker.yaml"
    path.write_text(json.dumps({**BROKER_BASE, **mutation}))
    with pytest.raises(BrokerExporterConfigError) as caught:
        load_broker_config(path)
    assert str(caught.value) == message.replace("{file}", str(path))


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("cluster: local\nnodes: [\n", "{file}: not valid YAML at line 3, column 1: expected the node content, "
         "but found '<stream end>'"),
        ("just text\n", "{file}: must be a mapping of keys to values, got a string"),
        (b"cluster: \xff\n", "{file}: not valid YAML: not UTF-8 text (byte 10)"),
        ("cluster: \x07\n", "{file}: not valid YAML: character '\\x07' at offset 9 is not allowed"),
    ],
)
def test_broker_exporter_config_file_errors(content: str | bytes, message: str, tmp_path: Path) -> None:
    path = tmp_path / "broker.yaml"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    with pytest.raises(BrokerExporterConfigError) as caught:
        load_broker_config(path)
    assert str(caught.value) == message.replace("{file}", str(path))


# --- parameter overrides (mqttlb rules / alertmanager --overrides, load_params) ---------------------------


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("cpu_hihg: 0.5\n", "{file}: cpu_hihg: unknown key"),
        ("rate_window: 1 minute\n", f"{{file}}: rate_window: {DURATION} (got '1 minute')"),
        ("policy: {min_weight: 500}\n", "{file}: policy.min_weight: need min_weight <= neutral_weight, got 500 > 100"),
        ("- cpu_high\n", "{file}: must be a mapping of keys to values, got a list"),
    ],
)
def test_overrides_file_refuses_with_the_exact_line(content: str, message: str, tmp_path: Path) -> None:
    path = tmp_path / "overrides.yaml"
    path.write_text(content)
    with pytest.raises(ParamsError) as caught:
        params_from_args(path)
    assert str(caught.value) == message.replace("{file}", str(path))


def test_load_params_blames_the_overrides_not_the_defaults() -> None:
    with pytest.raises(ParamsError) as caught:
        load_params({"policy": {"neutral_weight": 5}})
    assert str(caught.value) == (
        "parameter overrides: policy.neutral_weight: need min_weight <= neutral_weight, got 10 > 5"
    )
    with pytest.raises(ParamsError) as caught:
        load_params({"cpu_critical": 0.5}, source="experiment")
    assert str(caught.value) == "experiment: cpu_critical: need cpu_high < cpu_critical, got 0.75 >= 0.5"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            {"mqtt_cluster_label": "cluster"},
            "parameter overrides: mqtt_cluster_label: 'cluster' is taken (kube-prometheus or mqttlb use it for "
            "something else) (got 'cluster')",
        ),
        (
            {"mqtt_cluster_label": "mqtt-cluster"},
            "parameter overrides: mqtt_cluster_label: not a Prometheus label name such as mqtt_cluster "
            "(got 'mqtt-cluster')",
        ),
        (
            {"broker_cpu": {"source": "psutil"}},
            "parameter overrides: broker_cpu.source: Input should be 'exporter' or 'cadvisor' (got 'psutil')",
        ),
        (
            {"broker_cpu": {"cadvisor_selector": "kubelet"}},
            f"parameter overrides: broker_cpu.cadvisor_selector: {SELECTOR} (got 'kubelet')",
        ),
    ],
)
def test_kubernetes_params_refused(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ParamsError) as caught:
        load_params(overrides)
    assert str(caught.value) == message


def _number_keys(data: dict[str, Any], prefix: str = "") -> list[str]:
    """Dotted keys of ``data`` whose value is a number or a list of numbers (bools are not numbers)."""
    keys = []
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict):
            keys += _number_keys(value, dotted + ".")
        values = value if isinstance(value, list) else [value]
        if values and all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
            keys.append(dotted)
    return keys


NUMBER_KEYS = [*_number_keys(load_params().model_dump()), "policy.cooldown_seconds", "eviction.cooldown_seconds"]


@pytest.mark.parametrize("value", [True, False])
@pytest.mark.parametrize("key", NUMBER_KEYS)
def test_every_number_param_refuses_a_bool(key: str, value: bool) -> None:
    """YAML's true/false where a number belongs: pydantic's lax mode would read 1 or 0 (count_gain: true
    passed as 1.0)."""
    override: Any = value if "shed_levels" not in key else [value]
    for part in reversed(key.split(".")):
        override = {part: override}
    with pytest.raises(ParamsError) as caught:
        load_params(override)
    assert str(caught.value).startswith(
        f"parameter overrides: {key}: Input should be a number, not {str(value).lower()} (got "
    )


@pytest.mark.parametrize("value", ["0.5", "1", ".inf"])
@pytest.mark.parametrize("key", NUMBER_KEYS)
def test_every_number_param_refuses_text(key: str, value: str) -> None:
    """Trial of 2026-12-01: min_recipient_share: "0.8" and count_gain: "0.5" were parsed from text."""
    override: Any = value if "shed_levels" not in key else [value]
    for part in reversed(key.split(".")):
        override = {part: override}
    with pytest.raises(ParamsError) as caught:
        load_params(override)
    assert str(caught.value).startswith(f"parameter overrides: {key}: Input should be a number, not text (got ")


def test_numbers_and_durations_still_taken() -> None:
    assert len(NUMBER_KEYS) >= 20
    params = load_params(
        {"policy": {"count_gain": 1, "cooldown_seconds": 5, "steer_below_alert": True}, "eviction": {"after": "1m"}}
    )
    assert (params.policy.count_gain, params.policy.cooldown_seconds) == (1.0, 5.0)
    assert (params.policy.steer_below_alert, params.eviction.after) == (True, "1m")


# --- the shared pieces ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30s", 30), ("1m", 60), ("1h30m", 5400), ("500ms", 0.5), ("1d", 86400), ("2w", 1_209_600), ("0s", 0)],
)
def test_prometheus_durations(text: str, seconds: float) -> None:
    assert duration_seconds(text) == seconds


@pytest.mark.parametrize("text", ["", "30", "30 s", "1m1h", "1.5m", "-5m", "banana", "1s1s", "0"])
def test_not_prometheus_durations(text: str) -> None:
    with pytest.raises(ValueError, match="^not a Prometheus duration such as 30s, 1m or 1h30m$"):
        duration_seconds(text)


def test_yaml_loader_limits_and_empty_files(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("")
    assert load_yaml_mapping(path) == {}
    path.write_text("a: 1\n" + "#" * 100 + "\n")
    with pytest.raises(ConfigError) as caught:
        load_yaml_mapping(path, max_bytes=50)
    assert str(caught.value) == f"{path}: larger than 50 bytes"
    with pytest.raises(ConfigError) as caught:
        load_yaml_mapping(tmp_path)
    assert str(caught.value) == f"{tmp_path}: cannot read: Is a directory"
    path.write_text("base: &b {x: 1}\nmerged:\n  <<: *b\n  x: 2\n")  # YAML merge keys may be overridden
    assert load_yaml_mapping(path) == {"base": {"x": 1}, "merged": {"x": 2}}


def test_sources_blame_the_latest_layer_that_set_a_related_key() -> None:
    sources = Sources("defaults.yaml")
    sources.add("defaults.yaml", {"policy": {"min_weight": 10, "neutral_weight": 100}, "shed": [0.8]})
    sources.add("user.yaml", {"policy": {"min_weight": 500}})
    sources.add("environment variable X", {"shed": [1.5]})
    assert sources.blame(["policy.neutral_weight", "policy.min_weight"]) == ("policy.min_weight", "user.yaml")
    assert sources.blame(["shed.0"]) == ("shed.0", "environment variable X")
    assert sources.blame(["policy"]) == ("policy", "user.yaml")
    assert sources.blame(["never.set"]) == ("never.set", "defaults.yaml")
