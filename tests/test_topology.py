"""One topology, one set of builders: the native and compose stacks differ only in the named switches.

Both stacks are rendered from the same settings with `native_topology` and `compose_topology`, and
every difference between the two renders must be a row of SWITCHED, naming the switch(es) that
cause it; a new difference (or a row that no longer differs) fails the test.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
from pathlib import Path
from typing import Any

import pytest
import yaml

from mqttlb.stack import builders, compose_render, render
from mqttlb.stack.config import StackConfig, load_stack_config
from mqttlb.stack.topology import (
    COMPOSE_SWITCHES,
    Addressing,
    BrokerKind,
    Switches,
    TopologyError,
    broker_ips,
    compose_topology,
    native_switches,
    native_topology,
    topology,
)
from mqttlb.webhook.shedding import OVERLOAD_OFF, OVERLOAD_ON, OVERLOAD_THRESHOLD

MISSING = "<missing>"

# Every path (``/config/key/...``; ``*`` = any list index) where the native and the compose render
# differ, and the switches that make it differ.
SWITCHED: dict[str, tuple[str, ...]] = {
    "/envoy/admin/address/socket_address/address": ("addressing",),
    "/envoy/static_resources/listeners/0/address/socket_address/address": ("addressing",),
    "/envoy/overload_manager/resource_monitors/0/typed_config/filename": ("layout",),
    "/envoy/overload_manager/resource_monitors/1/typed_config/max_active_downstream_connections": (
        "envoy_open_files",
    ),
    "/envoy/static_resources/clusters/0/eds_cluster_config/eds_config/path_config_source": ("eds", "layout"),
    "/envoy/static_resources/clusters/0/eds_cluster_config/eds_config/ads": ("eds",),
    "/envoy/dynamic_resources": ("eds",),  # ADS to the webhook's xDS server, with its token
    "/envoy/static_resources/clusters/1": ("eds",),  # the webhook as xDS server
    "/envoy args/1": ("eds", "layout"),  # -c <config>: with ADS the copy holding the token
    "/envoy command": ("eds", "layout"),  # with ADS the start script that writes that copy, then Envoy
    "/eds/*/host": ("addressing",),
    "/eds/*/port": ("addressing",),
    "/prometheus/rule_files/0": ("layout",),
    "/prometheus/alerting/alertmanagers/0/static_configs/0/targets/0": ("addressing",),
    "/prometheus/scrape_configs/*/static_configs/0/targets/0": ("addressing",),
    "/prometheus/scrape_configs/6": ("brokers",),  # HiveMQ's own metrics
    "/prometheus/scrape_configs/*/authorization/credentials_file": ("layout",),  # the scraped part's token
    "/prometheus/scrape_configs/*/basic_auth/password_file": ("layout",),  # the stack's web login
    "/prometheus/alerting/alertmanagers/0/basic_auth/password_file": ("layout",),
    "/prometheus args/3": ("layout",),  # --web.config.file
    "/prometheus args/0": ("layout",),
    "/prometheus args/1": ("layout",),
    "/prometheus args/2": ("addressing",),
    "/alertmanager/receivers/*/webhook_configs/0/url": ("addressing",),
    "/alertmanager/receivers/*/webhook_configs/0/http_config/authorization/credentials_file": ("layout",),
    "/alertmanager args/0": ("layout",),
    "/alertmanager args/1": ("layout",),
    "/alertmanager args/2": ("addressing",),
    "/alertmanager args/3": ("layout",),  # --web.config.file
    "/broker exporter/listen": ("addressing",),
    "/broker exporter/nodes/*/kind": ("brokers",),
    "/broker exporter/nodes/*/address": ("addressing",),
    "/broker exporter/nodes/*/pid_file": ("brokers", "layout"),
    "/broker exporter/nodes/*/metrics_url": ("brokers",),
    "/broker exporter args/2": ("layout",),
    "/broker exporter args/4": ("layout",),  # --web-token-file
    "/envoy exporter args/2": ("addressing",),  # --listen
    "/envoy exporter args/4": ("addressing",),  # --envoy-admin
    "/envoy exporter args/8": ("layout",),  # --web-token-file
    "/webhook/listen": ("addressing",),
    "/webhook/envoy_admin": ("addressing",),
    "/webhook/prometheus_url": ("addressing",),
    "/webhook/alertmanager_urls/0": ("addressing",),
    "/webhook/eds_path": ("layout",),
    "/webhook/overload_file": ("layout",),
    "/webhook/token_file": ("layout",),
    "/webhook/xds_grpc_listen": ("eds",),
    "/webhook/xds_token_file": ("eds", "layout"),
    "/webhook/prometheus_auth/basic_auth/password_file": ("layout",),
    "/webhook/alertmanager_auth/basic_auth/password_file": ("layout",),
    "/webhook/state_file": ("layout",),
    "/webhook/audit_log": ("layout",),
    "/webhook/nodes/*/host": ("addressing",),
    "/webhook/nodes/*/port": ("addressing",),
    "/webhook/nodes/*/eviction": ("brokers",),  # the Mosquitto plugin; the compose image has no mqttlb extension
    "/webhook args/2": ("layout",),
}
SWITCH_NAMES = {field.name for field in dataclasses.fields(Switches)}


def rendered(topo: Any) -> dict[str, Any]:
    """Every config and command line the builders make for one topology."""
    return {
        "envoy": builders.envoy_bootstrap(topo),
        "envoy args": builders.envoy_args(topo),
        "envoy command": builders.envoy_command(topo),
        "eds": [dataclasses.asdict(e) for e in builders.initial_endpoints(topo)],
        "prometheus": builders.prometheus_config(topo),
        "prometheus args": builders.prometheus_args(topo),
        "alertmanager": builders.alertmanager_config(topo),
        "alertmanager args": builders.alertmanager_args(topo),
        "broker exporter": builders.broker_exporter_config(topo),
        "broker exporter args": builders.broker_exporter_args(topo),
        "envoy exporter args": builders.envoy_exporter_args(topo),
        "webhook": builders.webhook_config(topo),
        "webhook args": builders.webhook_args(topo),
    }


def differences(a: Any, b: Any, path: str = "") -> set[str]:
    """Paths of the leaves (or whole subtrees present on one side only) where ``a`` and ``b`` differ."""
    if isinstance(a, dict) and isinstance(b, dict):
        keys = [*a, *(k for k in b if k not in a)]
        return set().union(*(differences(a.get(k, MISSING), b.get(k, MISSING), f"{path}/{k}") for k in keys))
    if isinstance(a, list) and isinstance(b, list):
        pad = [MISSING] * abs(len(a) - len(b))
        pairs = zip(a + pad[: len(b) - len(a)], b + pad[: len(a) - len(b)], strict=True)
        return set().union(*(differences(x, y, f"{path}/{i}") for i, (x, y) in enumerate(pairs)))
    return set() if a == b else {path}


def row(path: str) -> str | None:
    """The SWITCHED pattern matching ``path`` or a subtree holding it (``*`` = one list index), if any."""
    parts = path.split("/")
    for pattern in SWITCHED:
        wanted = pattern.split("/")
        head = parts[: len(wanted)]
        matches = (w == p or (w == "*" and p.isdigit()) for w, p in zip(wanted, head, strict=True))
        if len(head) == len(wanted) and all(matches):
            return pattern
    return None


@pytest.fixture(scope="module")
def cfg() -> StackConfig:
    return load_stack_config(env={})


def test_native_and_compose_differ_exactly_in_the_switched_rows(cfg: StackConfig) -> None:
    native, compose = rendered(native_topology(cfg)), rendered(compose_topology(cfg))
    found = differences(native, compose)
    unexplained = sorted(path for path in found if row(path) is None)
    assert unexplained == [], "differences no switch accounts for"
    assert {row(path) for path in found} == set(SWITCHED), "rows in SWITCHED that no longer differ"
    # Envoy runs with one worker in both stacks (it once lacked --concurrency 1 in compose only).
    for topo in (native_topology(cfg), compose_topology(cfg)):
        args = builders.envoy_args(topo)
        assert args[args.index("--concurrency") + 1] == "1"


def test_every_switch_differs_between_the_stacks_and_accounts_for_a_row() -> None:
    native = native_switches()
    assert {f for f in SWITCH_NAMES if getattr(native, f) == getattr(COMPOSE_SWITCHES, f)} == set()
    assert {name for names in SWITCHED.values() for name in names} == SWITCH_NAMES


@pytest.mark.parametrize(
    "flipped",
    [("eds",), ("layout",), ("envoy_open_files",), ("addressing", "brokers")],
    ids=lambda f: "+".join(f),
)
def test_each_switch_alone_changes_only_its_rows(cfg: StackConfig, flipped: tuple[str, ...]) -> None:
    """Flipping switches one at a time (addressing and brokers only go together) attributes each row."""
    native = native_switches()
    switches = dataclasses.replace(native, **{name: getattr(COMPOSE_SWITCHES, name) for name in flipped})
    found = differences(rendered(topology(cfg, native)), rendered(topology(cfg, switches)))
    rows = {row(path) for path in found}
    assert None not in rows
    assert all(set(SWITCHED[r]) & set(flipped) for r in rows if r), rows
    only_these = {r for r, names in SWITCHED.items() if set(names) <= set(flipped)}
    assert only_these <= rows


def test_settings_differ_only_in_the_compose_overrides(cfg: StackConfig) -> None:
    native, compose = cfg.model_dump(), compose_render.compose_config().model_dump()
    assert {key for key in native if native[key] != compose[key]} == set(compose_render.COMPOSE_OVERRIDES)


@pytest.mark.parametrize(
    ("brokers", "addressing", "message"),
    [("mosquitto", "service-names", "brokers=mosquitto needs addressing=loopback")],
)
def test_switch_combinations_that_cannot_run_are_refused(
    cfg: StackConfig, brokers: BrokerKind, addressing: Addressing, message: str
) -> None:
    switches = dataclasses.replace(native_switches(), brokers=brokers, addressing=addressing)
    with pytest.raises(TopologyError, match=message):
        topology(cfg, switches)


def test_compose_broker_addresses_are_fixed_and_bounded() -> None:
    assert broker_ips(3) == ["172.30.213.11", "172.30.213.12", "172.30.213.13"]
    assert broker_ips(244)[-1] == "172.30.213.254"
    with pytest.raises(TopologyError, match="245 nodes do not fit"):
        broker_ips(245)


def test_the_hard_stop_pressure_crosses_the_bootstrap_threshold(cfg: StackConfig) -> None:
    (action,) = builders.envoy_bootstrap(native_topology(cfg))["overload_manager"]["actions"]
    (trigger,) = action["triggers"]
    assert trigger["threshold"]["value"] == OVERLOAD_THRESHOLD
    assert float(OVERLOAD_OFF) < OVERLOAD_THRESHOLD < float(OVERLOAD_ON)


def test_both_renderers_write_what_the_shared_builders_build(tmp_path: Path) -> None:
    cfg = load_stack_config(env={}, overrides={"state_dir": str(tmp_path / "state")})
    paths, _ = render.render_all(cfg, {name: name for name in ("mosquitto", "envoy", "prometheus",
                                                                "prometheus-alertmanager")})
    native = native_topology(cfg)
    assert yaml.safe_load(paths.envoy_yaml.read_text()) == builders.envoy_bootstrap(native)
    assert yaml.safe_load(paths.prometheus_yaml.read_text()) == builders.prometheus_config(native)
    assert yaml.safe_load(paths.webhook_yaml.read_text()) == builders.webhook_config(native)
    assert yaml.safe_load(paths.broker_exporter_yaml.read_text()) == builders.broker_exporter_config(native)
    assert yaml.safe_load(paths.alertmanager_yaml.read_text()) == builders.alertmanager_config(native)

    compose = compose_topology(compose_render.compose_config())
    committed = compose_render.COMPOSE_DIR
    assert yaml.safe_load((committed / "envoy.yaml").read_text()) == builders.envoy_bootstrap(compose)
    assert yaml.safe_load((committed / "prometheus.yml").read_text()) == builders.prometheus_config(compose)
    assert yaml.safe_load((committed / "webhook.yaml").read_text()) == builders.webhook_config(compose)
    services = yaml.safe_load(compose_render.COMPOSE_FILE.read_text())["services"]
    assert services["envoy"]["command"] == compose_render.compose_literal(builders.envoy_command(compose))
    assert services["envoy-exporter"]["command"] == builders.envoy_exporter_args(compose)


def test_no_renderer_builds_on_another_renderers_output() -> None:
    for module in (render, compose_render):
        tree = ast.parse(inspect.getsource(module))
        imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
        imported |= {node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
        assert "copy" not in imported, f"{module.__name__} deep-copies a config"
        assert not imported & {"mqttlb.stack.render", "mqttlb.stack.compose_render"}, module.__name__
