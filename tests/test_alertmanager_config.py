"""The generated alertmanager.yml: valid for this Alertmanager (amtool), routes on `action`."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from mqttlb import alertmanager_config as amc
from mqttlb.params import load_params

WEBHOOK_URL = "http://127.0.0.1:9643/alerts"
TOKEN_FILE = "/var/lib/mqttlb/webhook/token"
ARGS = ["--webhook-url", WEBHOOK_URL, "--token-file", TOKEN_FILE]
PAGER = {"pagerduty_configs": [{"routing_key_file": "/etc/mqttlb/pagerduty-key"}]}
AMTOOL = shutil.which("amtool")


def _amtool(*args: str) -> subprocess.CompletedProcess[str]:
    assert AMTOOL is not None, "amtool is not installed (Debian package prometheus-alertmanager)"
    return subprocess.run([AMTOOL, *args], capture_output=True, text=True, timeout=60)


@pytest.fixture()
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "alertmanager.yml"
    path.write_text(amc.render(amc.build(load_params(), WEBHOOK_URL, TOKEN_FILE)))
    return path


def test_amtool_check_config_accepts_it(config_file: Path) -> None:
    result = _amtool("check-config", str(config_file))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout
    assert "2 inhibit rules" in result.stdout
    assert "3 receivers" in result.stdout


def test_amtool_rejects_a_mistyped_field(config_file: Path, tmp_path: Path) -> None:
    # amtool parses strictly, so the check above really vouches for credentials_file and matchers.
    broken = tmp_path / "broken.yml"
    broken.write_text(config_file.read_text().replace("credentials_file:", "credential_file:"))
    assert _amtool("check-config", str(broken)).returncode != 0
    broken.write_text(config_file.read_text().replace('action="page"', 'action=="page"'))
    assert _amtool("check-config", str(broken)).returncode != 0


@pytest.mark.parametrize(
    ("labels", "receiver"),
    [
        (["alertname=MqttBrokerCpuHigh", "action=rebalance", "mqtt_cluster=local"], "mqttlb-webhook"),
        (["alertname=MqttClusterImbalanced", "action=rebalance"], "mqttlb-webhook"),
        (["alertname=MqttBrokerCpuCritical", "action=shed"], "mqttlb-webhook"),
        (["alertname=MqttBrokerDown", "action=page"], "page"),
        (["alertname=Watchdog"], "default"),
        (["alertname=Other", "action=rebalancex"], "default"),
    ],
)
def test_amtool_routes_on_action(config_file: Path, labels: list[str], receiver: str) -> None:
    result = _amtool("config", "routes", "test", f"--config.file={config_file}", *labels)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == receiver


def test_structure_and_timing_from_params() -> None:
    timing = {"group_wait": "1s", "group_interval": "3s", "repeat_interval": "7m"}
    params = load_params({"alertmanager": timing})
    config = yaml.safe_load(amc.render(amc.build(params, WEBHOOK_URL, TOKEN_FILE)))
    route = config["route"]
    assert route["group_by"] == ["alertname", "namespace", "mqtt_cluster", "action"]
    assert (route["group_wait"], route["group_interval"], route["repeat_interval"]) == ("1s", "3s", "7m")
    receivers = {r["name"]: r for r in config["receivers"]}
    webhook = receivers["mqttlb-webhook"]["webhook_configs"][0]
    assert webhook["url"] == WEBHOOK_URL
    assert webhook["send_resolved"] is True
    assert webhook["http_config"]["authorization"]["credentials_file"] == TOKEN_FILE
    # pages never depend on the webhook: a placeholder receiver without integrations by default
    assert receivers["page"] == {"name": "page"}
    assert "webhook_configs" not in receivers["default"]
    inhibit = {
        (rule["source_matchers"][0], rule["target_matchers"][0]): rule["equal"]
        for rule in config["inhibit_rules"]
    }
    assert inhibit == {
        ('alertname="MqttBrokerCpuCritical"', 'alertname="MqttBrokerCpuHigh"'): ["namespace", "mqtt_cluster"],
        ('alertname="MqttBrokerDown"', 'alertname="MqttClusterImbalanced"'): ["namespace", "mqtt_cluster"],
    }


def test_page_route_repeats_hourly_not_at_the_webhooks_pace() -> None:
    # The top route re-sends every 30 s for the webhook; a pager inheriting that would ring every 30 s.
    config = yaml.safe_load(amc.render(amc.build(load_params(), WEBHOOK_URL, TOKEN_FILE)))
    assert config["route"]["repeat_interval"] == "30s"
    children = {child["receiver"]: child for child in config["route"]["routes"]}
    assert children["page"]["repeat_interval"] == amc.PAGE_REPEAT_INTERVAL == "4h"
    assert "repeat_interval" not in children["mqttlb-webhook"]  # the webhook keeps params' pace


def test_page_receiver_is_the_operators_and_never_the_webhook() -> None:
    params = load_params()
    placeholder = amc.render(amc.build(params, WEBHOOK_URL, TOKEN_FILE))
    assert "--page-receiver" in placeholder  # the header says how to give the pager
    with_pager = yaml.safe_load(amc.render(amc.build(params, WEBHOOK_URL, TOKEN_FILE, PAGER)))
    page = {r["name"]: r for r in with_pager["receivers"]}["page"]
    assert page == {"name": "page", **PAGER}
    assert WEBHOOK_URL not in yaml.safe_dump(page)


@pytest.mark.parametrize(
    ("receiver", "message"),
    [
        ({"name": "x"}, "leave out 'name'"),
        ({"url": "http://x"}, "'url' is not an integration"),
        ({"email_configs": []}, "non-empty list of mappings"),
        ({"email_configs": ["to: a@b"]}, "non-empty list of mappings"),
    ],
)
def test_bad_page_receivers_are_refused(receiver: dict, message: str) -> None:
    with pytest.raises(amc.AlertmanagerConfigError, match=message):
        amc.build(load_params(), WEBHOOK_URL, TOKEN_FILE, receiver)


def test_render_is_deterministic() -> None:
    params = load_params()
    first = amc.render(amc.build(params, WEBHOOK_URL, TOKEN_FILE, PAGER))
    assert first == amc.render(amc.build(params, WEBHOOK_URL, TOKEN_FILE, PAGER))


@pytest.mark.parametrize(
    ("webhook_url", "token_file", "message"),
    [
        ("127.0.0.1:9643/alerts", TOKEN_FILE, "webhook_url"),
        ("ftp://host/alerts", TOKEN_FILE, "webhook_url"),
        (WEBHOOK_URL, "  ", "token_file"),
        (WEBHOOK_URL, "a\nb", "token_file"),
    ],
)
def test_bad_arguments_are_refused(webhook_url: str, token_file: str, message: str) -> None:
    with pytest.raises(amc.AlertmanagerConfigError, match=message):
        amc.build(load_params(), webhook_url, token_file)


def test_cli_writes_the_config(tmp_path: Path) -> None:
    out = tmp_path / "am" / "alertmanager.yml"
    argv = [*ARGS, "--out", str(out)]
    assert amc.main(argv) == 0
    assert out.read_text() == amc.render(amc.build(load_params(), WEBHOOK_URL, TOKEN_FILE))
    assert _amtool("check-config", str(out)).returncode == 0


def test_cli_page_receiver_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pager = tmp_path / "pager.yml"
    pager.write_text(yaml.safe_dump(PAGER))
    assert amc.main([*ARGS, "--page-receiver", str(pager)]) == 0
    out = capsys.readouterr().out
    assert {r["name"]: r for r in yaml.safe_load(out)["receivers"]}["page"] == {"name": "page", **PAGER}
    checked = tmp_path / "am.yml"
    checked.write_text(out)
    assert _amtool("check-config", str(checked)).returncode == 0
    pager.write_text("webhook_configs: nope\n")
    assert amc.main([*ARGS, "--page-receiver", str(pager)]) == 2
    assert "webhook_configs must be a non-empty list" in capsys.readouterr().err


def test_cli_bad_input_writes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "alertmanager.yml"
    argv = ["--webhook-url", "not a url", *ARGS[2:], "--out", str(out)]
    assert amc.main(argv) == 2
    assert "webhook_url" in capsys.readouterr().err
    assert not out.exists()
    overrides = tmp_path / "o.yaml"
    overrides.write_text("alertmanager: {group_wait: 1s}\n")  # incomplete timing block is fine (merged)
    ok = ARGS
    assert amc.main([*ok, "--overrides", str(overrides), "--out", str(out)]) == 0
    assert "group_wait: 1s" in out.read_text()
    overrides.write_text("alertmanager: {group_wiat: 1s}\n")
    before = out.read_text()
    assert amc.main([*ok, "--overrides", str(overrides), "--out", str(out)]) == 2
    assert f"{overrides}: alertmanager.group_wiat: unknown key" in capsys.readouterr().err
    assert out.read_text() == before
