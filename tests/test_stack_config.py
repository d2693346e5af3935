"""The stack file and the rendered configs, checked without starting the stack."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from stackutil import free_ports_config

from mqttlb.brokers.hivemq_node import JAR_ENV, launcher_args
from mqttlb.brokers.mosquitto_plugin import PLUGIN_ENV
from mqttlb.stack.builders import envoy_bootstrap, envoy_connection_limit
from mqttlb.stack.config import (
    HIVEMQ_JAR,
    StackConfigError,
    check_binaries,
    find_binary,
    load_stack_config,
    unknown_env_vars,
)
from mqttlb.stack.render import render_all
from mqttlb.stack.topology import native_topology


def run_stack_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mqttlb.cli", "stack", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


def test_defaults_match_the_documented_ports() -> None:
    cfg = load_stack_config(env={})
    assert cfg.nodes == 3
    assert cfg.broker_ports == [18831, 18832, 18833]
    assert (cfg.ports.envoy_listener, cfg.ports.envoy_admin, cfg.ports.prometheus) == (1883, 9901, 9090)
    assert (cfg.ports.broker_exporter, cfg.ports.envoy_exporter, cfg.ports.webhook) == (9641, 9642, 9643)
    assert cfg.envoy_cluster == "mqtt_brokers"


def test_environment_overrides_nodes_and_ports() -> None:
    cfg = load_stack_config(
        env={"NODES": "5", "MQTTLB_PORT_ENVOY_LISTENER": "11883", "MQTTLB_LB_POLICY": "LEAST_REQUEST"}
    )
    assert cfg.nodes == 5 and cfg.ports.envoy_listener == 11883 and cfg.lb_policy == "LEAST_REQUEST"
    assert cfg.node_names == ["node1", "node2", "node3", "node4", "node5"]


def test_bad_settings_are_refused_at_load() -> None:
    # The full table of invalid inputs, exact messages and the CLI's refusal: tests/test_params_invalid.py.
    with pytest.raises(StackConfigError) as caught:
        load_stack_config(env={"NODES": "0"})
    assert str(caught.value) == (
        "environment variable NODES: nodes: Input should be greater than or equal to 1 (got '0')"
    )


def test_slow_start_window_is_kept_in_seconds_for_envoy() -> None:
    for written, kept in [("1m", "60s"), ("500ms", "0.5s"), ("0s", "0s"), ("1h2m3s", "3723s")]:
        assert load_stack_config(env={}, overrides={"slow_start_window": written}).slow_start_window == kept


def test_slow_start_is_off_by_default_and_rendered_only_when_a_window_is_set(tmp_path: Path) -> None:
    def lb_config(**settings: str) -> dict:
        cfg = load_stack_config(env={}, overrides={"state_dir": str(tmp_path), **settings})
        cluster = envoy_bootstrap(native_topology(cfg))["static_resources"]["clusters"]
        found = next(c for c in cluster if c["name"] == cfg.envoy_cluster)
        return found.get("round_robin_lb_config" if cfg.lb_policy == "ROUND_ROBIN" else "least_request_lb_config", {})

    # the shipped stack.yaml: least request, no slow start, so every node takes connections from the first one
    assert "slow_start_config" not in lb_config()
    for policy in ("LEAST_REQUEST", "ROUND_ROBIN"):
        window = lb_config(lb_policy=policy, slow_start_window="20s")["slow_start_config"]["slow_start_window"]
        assert window == "20s"


def test_later_layers_merge_into_params_key_by_key(tmp_path: Path) -> None:
    stack_file = tmp_path / "stack.yaml"
    stack_file.write_text("params: {policy: {min_weight: 20}}\n")
    cfg = load_stack_config(stack_file, env={}, overrides={"params": {"policy": {"cooldown_seconds": 5}}})
    assert (cfg.params.policy.min_weight, cfg.params.policy.cooldown_seconds) == (20, 5)
    assert cfg.params.policy.max_weight == 400  # from mqttlb/params.yaml


def test_missing_binary_is_named(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr("mqttlb.stack.config.find_binary", lambda name: None if name == "prometheus" else "/bin/true")
    with pytest.raises(StackConfigError, match="missing binary 'prometheus'.*apt-get install prometheus"):
        check_binaries()


def test_missing_binary_via_cli_starts_nothing(tmp_path: Path) -> None:
    empty_path = tmp_path / "empty-bin"
    empty_path.mkdir()
    env = {"PATH": str(empty_path), "MQTTLB_STATE_DIR": str(tmp_path / "s")}
    result = run_stack_cli("up", env=env)
    assert result.returncode == 2
    assert "missing binary 'prometheus'" in result.stderr or "missing binary 'envoy'" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "s").exists()


def test_rendered_configs_are_valid_for_the_real_binaries(tmp_path: Path) -> None:
    binaries = check_binaries()
    cfg = free_ports_config(tmp_path / "state", nodes=4)
    paths, progs = render_all(cfg, binaries)
    envoy = subprocess.run(
        [binaries["envoy"], "--mode", "validate", "-c", str(paths.envoy_yaml)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert envoy.returncode == 0, envoy.stdout + envoy.stderr
    prom = subprocess.run(
        [binaries["promtool"], "check", "config", str(paths.prometheus_yaml)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert prom.returncode == 0, prom.stdout + prom.stderr
    amtool = find_binary("amtool")
    assert amtool is not None
    am = subprocess.run(
        [amtool, "check-config", str(paths.alertmanager_yaml)], capture_output=True, text=True, timeout=60
    )
    assert am.returncode == 0, am.stdout + am.stderr
    eds = yaml.safe_load(paths.eds_file.read_text())
    hosts = eds["resources"][0]["endpoints"][0]["lb_endpoints"]
    assert [h["endpoint"]["hostname"] for h in hosts] == ["node1", "node2", "node3", "node4"]
    names = [p.name for p in progs]
    assert names[:4] == ["mosquitto-node1", "mosquitto-node2", "mosquitto-node3", "mosquitto-node4"]
    assert {"envoy", "prometheus", "alertmanager", "broker-exporter", "envoy-exporter", "webhook"} <= set(names)
    supervisord = paths.supervisord_conf.read_text()
    assert all(f"[program:{name}]" in supervisord for name in names)
    for node in cfg.node_names:
        assert f"sys_interval {cfg.sys_interval}" in paths.mosquitto_conf(node).read_text()


def test_stale_pid_file_reused_by_another_process_is_not_a_running_stack(tmp_path: Path) -> None:
    import os

    from mqttlb.stack.runner import Stack

    cfg = free_ports_config(tmp_path / "state", nodes=1)
    stack = Stack(cfg, out=lambda line: None)
    stack.paths.supervisord_pid.parent.mkdir(parents=True)
    stack.paths.supervisord_pid.write_text(f"{os.getpid()}\n")  # alive, but not our supervisord
    assert stack.supervisord_pid() is None and not stack.is_running()


def _envoy_cap(envoy: dict) -> int:
    (monitor,) = [
        m
        for m in envoy["overload_manager"]["resource_monitors"]
        if m["name"] == "envoy.resource_monitors.global_downstream_max_connections"
    ]
    return int(monitor["typed_config"]["max_active_downstream_connections"])


def test_envoy_connection_cap_follows_the_open_files_limit_or_the_stack_file(tmp_path: Path) -> None:
    cfg = free_ports_config(tmp_path / "state", nodes=3)
    # Two descriptors per proxied connection, a reserve for Envoy itself (a quarter of small limits).
    assert envoy_connection_limit(native_topology(cfg, open_files=20_000)) == (20_000 - 256) // 2
    assert envoy_connection_limit(native_topology(cfg, open_files=400)) == (400 - 100) // 2
    assert _envoy_cap(envoy_bootstrap(native_topology(cfg, open_files=20_000))) == 9_872
    here = native_topology(cfg)  # this process's limit
    assert _envoy_cap(envoy_bootstrap(here)) == envoy_connection_limit(here)
    fixed = free_ports_config(tmp_path / "fixed", nodes=3, envoy_max_connections=500)
    assert _envoy_cap(envoy_bootstrap(native_topology(fixed, open_files=20_000))) == 500


def test_envoy_connection_cap_must_be_positive(tmp_path: Path) -> None:
    with pytest.raises(StackConfigError, match="envoy_max_connections"):
        free_ports_config(tmp_path / "state", nodes=3, envoy_max_connections=0)


# --- broker: hivemq -------------------------------------------------------------------------------
def test_broker_comes_from_the_stack_file_or_broker_variables() -> None:
    assert load_stack_config(env={}).broker == "mosquitto"
    assert load_stack_config(env={"MQTTLB_BROKER": "hivemq"}).broker == "hivemq"
    assert load_stack_config(env={"MQTTLB_BROKER": "mosquitto", "BROKER": "hivemq"}).broker == "hivemq"
    with pytest.raises(StackConfigError) as caught:
        load_stack_config(env={"BROKER": "emqx"})
    assert str(caught.value) == (
        "environment variable BROKER: broker: Input should be 'mosquitto' or 'hivemq' (got 'emqx')"
    )


def test_hivemq_http_ports_are_checked_only_for_hivemq_nodes() -> None:
    clash = {"nodes": 3, "ports": {"broker_http_base": 9089}}  # node2's HTTP port would be Prometheus's 9090
    assert load_stack_config(env={}, overrides=clash).broker_http_ports == []
    with pytest.raises(StackConfigError, match=r"port clash: node2's HTTP port \(9090\) and prometheus"):
        load_stack_config(env={}, overrides={**clash, "broker": "hivemq"})
    with pytest.raises(StackConfigError, match=r"node1's HTTP port \(18831\) and node1 both use"):
        load_stack_config(env={}, overrides={"broker": "hivemq", "ports": {"broker_http_base": 18831}})
    cfg = load_stack_config(env={}, overrides={"broker": "hivemq"})
    assert cfg.broker_http_ports == [19831, 19832, 19833]
    assert {k: v for k, v in cfg.listening_ports().items() if k.startswith("node")} == {
        "node1": 18831,
        "node2": 18832,
        "node3": 18833,
        "node1-http": 19831,
        "node2-http": 19832,
        "node3-http": 19833,
    }


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"nodes": 3, "ports": {"broker_base": 65534}}, "node3 would be on port 65536: broker_base + nodes exceeds"),
        (
            {"broker": "hivemq", "nodes": 2, "ports": {"broker_http_base": 65535}},
            "node2's HTTP port would be on port 65536: broker_http_base + nodes exceeds",
        ),
    ],
)
def test_node_ports_above_65535_are_refused(overrides: dict, message: str) -> None:
    with pytest.raises(StackConfigError, match=re.escape(message)):
        load_stack_config(env={}, overrides=overrides)


def test_hivemq_nodes_are_rendered_with_the_launcher_the_exporter_and_eviction(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    jar = tmp_path / "mqttlb-hivemq.jar"
    jar.write_bytes(b"")
    monkeypatch.setenv(JAR_ENV, str(jar))
    binaries = check_binaries("hivemq")
    assert (binaries[HIVEMQ_JAR], "mosquitto" in binaries) == (str(jar), False)
    cfg = free_ports_config(tmp_path / "state", nodes=2, broker="hivemq")
    paths, progs = render_all(cfg, binaries)
    http = cfg.broker_http_ports
    node1 = progs[0]
    assert (node1.name, node1.ready_url) == ("hivemq-node1", f"http://127.0.0.1:{http[0]}/metrics")
    assert node1.command == [
        binaries["java"],
        *launcher_args(jar, cfg.broker_ports[0], http[0], paths.hivemq_dir("node1"), paths.hivemq_token),
    ]
    assert len(paths.hivemq_token.read_text().strip()) >= 32 and paths.hivemq_token.stat().st_mode & 0o077 == 0
    exporter = yaml.safe_load(paths.broker_exporter_yaml.read_text())["nodes"]
    assert [(n["kind"], n["metrics_url"], "pid_file" in n) for n in exporter] == [
        ("hivemq", f"http://127.0.0.1:{port}/metrics", False) for port in http
    ]
    webhook = yaml.safe_load(paths.webhook_yaml.read_text())["nodes"]
    assert [n["eviction"] for n in webhook] == [
        {"kind": "hivemq", "url": f"http://127.0.0.1:{port}", "token_file": str(paths.hivemq_token)} for port in http
    ]
    jobs = {j["job_name"]: j for j in yaml.safe_load(paths.prometheus_yaml.read_text())["scrape_configs"]}
    assert jobs["hivemq"]["static_configs"][0]["targets"] == [f"127.0.0.1:{port}" for port in http]
    prom = subprocess.run(
        [binaries["promtool"], "check", "config", str(paths.prometheus_yaml)], capture_output=True, timeout=60
    )
    assert prom.returncode == 0, prom.stdout + prom.stderr
    assert not (paths.root / "mosquitto").exists()


def test_hivemq_without_the_built_jar_is_refused_in_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(JAR_ENV, str(tmp_path / "nope.jar"))
    with pytest.raises(StackConfigError) as caught:
        check_binaries("hivemq")
    assert str(caught.value) == (
        f"the HiveMQ launcher is not built: {tmp_path / 'nope.jar'} is missing; run `make stack-up BROKER=hivemq` "
        f"(stack/install.sh builds it with brokers/hivemq/build.sh) or set {JAR_ENV}"
    )


def test_mosquitto_without_the_built_plugin_is_refused_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """From a checkout: `make install`; the installed wheel's case is in tests/test_wheel_install.py."""
    monkeypatch.delenv(PLUGIN_ENV, raising=False)
    monkeypatch.setattr(sys, "prefix", str(tmp_path / "venv"))
    with pytest.raises(StackConfigError) as caught:
        check_binaries("mosquitto")
    assert str(caught.value) == (
        f"the Mosquitto eviction plugin is not built: {tmp_path}/venv/lib/mqttlb/mqttlb_evict.so is missing; "
        f"run `make install` (stack/install.sh builds it from brokers/mosquitto-plugin) "
        f"or set {PLUGIN_ENV}=/path/to/mqttlb_evict.so"
    )
    monkeypatch.setenv(PLUGIN_ENV, str(tmp_path / "absent.so"))
    with pytest.raises(StackConfigError, match=f"absent.so \\(environment variable {PLUGIN_ENV}\\) is not a file"):
        check_binaries("mosquitto")


def test_unknown_mqttlb_variables_are_named() -> None:
    env = {"MQTTLB_NODE": "5", "MQTTLB_NODES": "3", "NODES": "2", "MQTTLB_PORT_WEBHOOK": "1", "MQTTLB_HIVEMQ_JAR": "x"}
    assert unknown_env_vars({**env, "MQTTLB_TLSS": "1", "OTHER": "1"}) == ["MQTTLB_NODE", "MQTTLB_TLSS"]
    assert unknown_env_vars(env) == ["MQTTLB_NODE"]


def test_stack_check_warns_about_a_mistyped_variable(tmp_path: Path) -> None:
    env = {**os.environ, "MQTTLB_NODE": "5", "MQTTLB_STATE_DIR": str(tmp_path / "state")}
    checked = run_stack_cli("check", env=env)
    assert checked.returncode == 0, checked.stderr
    assert "mqttlb stack: warning: environment variable MQTTLB_NODE is not an mqttlb setting; ignored" in checked.stderr
    assert "MQTTLB_NODES" in checked.stderr
