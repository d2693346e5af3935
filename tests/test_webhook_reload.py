"""SIGHUP reloads the webhook's config: refused in one log line when a start would refuse it, else a
restart in place (mqttlb.reload, mqttlb.webhook.reload); live against a real `mqttlb webhook`."""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
import time
from pathlib import Path

import pytest
import requests
import yaml
from stackutil import process, wait_until
from webhookhttp import AUTH, write_config

from mqttlb.reload import Accepted, Reloader
from mqttlb.stack.ephemeral import free_port
from mqttlb.webhook.cli import Rebalancer
from mqttlb.webhook.config import WebhookConfigError, load_config
from mqttlb.webhook.reload import CHECKED_CONFIG_ENV, check_reload, checked_copy, take_checked_copy
from mqttlb.webhook.state import StateError

ROOT = Path(__file__).resolve().parents[1]


def test_a_refused_config_logs_one_line_and_never_restarts(caplog: pytest.LogCaptureFixture) -> None:
    calls: list[str] = []

    def bad() -> str:
        raise WebhookConfigError("webhook.yaml: nodes: List should have at least 1 item")

    reloader = Reloader("mqttlb webhook", bad, lambda: calls.append("prepare"), lambda env: calls.append("restart"))
    with caplog.at_level(logging.INFO):
        assert reloader.handle_once() is False
    assert calls == [] and reloader.refused == 1
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "mqttlb webhook: SIGHUP: new config refused, still running the old one: "
        "webhook.yaml: nodes: List should have at least 1 item"
    ]


def test_an_accepted_config_prepares_then_restarts(caplog: pytest.LogCaptureFixture) -> None:
    calls: list[str] = []
    reloader = Reloader(
        "x",
        lambda: Accepted("changed: dry_run", {"A": "b"}),
        lambda: calls.append("prepare"),
        lambda env: calls.append(f"restart {dict(env)}"),
    )
    with caplog.at_level(logging.INFO):
        assert reloader.handle_once() is True
    assert calls == ["prepare", "restart {'A': 'b'}"]
    assert "new config accepted (changed: dry_run); restarting in place" in caplog.text


def test_the_checked_copy_is_what_loads_and_is_handed_over_once(tmp_path: Path) -> None:
    path = write_config(tmp_path)
    copy = checked_copy(path)
    assert copy.read_bytes() == path.read_bytes() and copy.stat().st_mode & 0o077 == 0
    path.write_text("nodes: [unclosed\n")  # edited after the check: the copy still loads, named by the file
    assert load_config(path, read_from=copy).node_names == load_config(copy).node_names
    env = {CHECKED_CONFIG_ENV: str(copy)}
    assert take_checked_copy(env) == copy and env == {} and take_checked_copy(env) is None


def _write(path: Path, data: object) -> Path:
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return path


@pytest.mark.parametrize(
    ("change", "error", "message"),
    [
        (lambda d, p: "nodes: [unclosed\n", WebhookConfigError, "webhook.yaml"),
        (lambda d, p: {**d, "bogus": 1}, WebhookConfigError, "bogus"),
        (lambda d, p: {**d, "nodes": []}, WebhookConfigError, "nodes"),
        (lambda d, p: {**d, "params_overrides": {"policy": {"min_weight": 900}}}, WebhookConfigError, "min_weight"),
        (lambda d, p: {**d, "token_file": str(p / "no-such-token")}, WebhookConfigError, "no-such-token"),
        (
            lambda d, p: {**d, "params_overrides": {"rate_window": "5s"}, "scrape_interval": "5s"},
            WebhookConfigError,
            "rate_window >= 2 x scrape_interval",
        ),
        (lambda d, p: {**d, "state_file": str(p / "bad-state.json")}, StateError, "bad-state.json"),
    ],
    ids=["yaml", "unknown-key", "no-nodes", "bad-param", "token", "rate-window", "state"],
)
def test_what_a_start_refuses_refuses_the_reload(tmp_path: Path, change, error, message: str) -> None:
    running_path = write_config(tmp_path)
    running = load_config(running_path)
    (tmp_path / "bad-state.json").write_text("{not json")
    new = _write(tmp_path / "webhook.yaml", change(yaml.safe_load(running_path.read_text()), tmp_path))
    with pytest.raises(error, match=message):
        check_reload(new, {}, running, Rebalancer.build)


def test_a_listen_address_in_use_refuses_the_reload(tmp_path: Path) -> None:
    running_path = write_config(tmp_path)
    running = load_config(running_path)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        data = {**yaml.safe_load(running_path.read_text()), "listen": f"127.0.0.1:{port}"}
        with pytest.raises(WebhookConfigError, match=f"cannot listen on 127.0.0.1:{port}"):
            check_reload(_write(tmp_path / "webhook.yaml", data), {}, running, Rebalancer.build)


def test_a_good_config_names_what_changed(tmp_path: Path) -> None:
    running_path = write_config(tmp_path)
    running = load_config(running_path)
    assert check_reload(running_path, {}, running, Rebalancer.build).startswith("no setting changed")
    data = {**yaml.safe_load(running_path.read_text()), "dry_run": True, "scrape_interval": "10s"}
    changed = check_reload(_write(tmp_path / "webhook.yaml", data), {}, running, Rebalancer.build)
    assert changed == "changed: dry_run, scrape_interval"


@pytest.mark.live
def test_sighup_to_a_real_webhook_refuses_a_bad_config_then_takes_a_good_one(tmp_path: Path) -> None:
    port = free_port()
    path = write_config(tmp_path, node_names=["node1", "node2"], listen=f"127.0.0.1:{port}")
    good = path.read_text()
    base = f"http://127.0.0.1:{port}"
    log = tmp_path / "webhook.log"
    with process([sys.executable, "-m", "mqttlb.cli", "webhook", "--config", str(path)], log) as proc:
        wait_until(lambda: requests.get(f"{base}/readyz", timeout=1).status_code == 200, 20, "webhook ready")
        assert requests.get(f"{base}/status", headers=AUTH, timeout=2).json()["dry_run"] is False

        path.write_text(yaml.safe_dump({**yaml.safe_load(good), "nodes": []}))  # a config no start would take
        os.kill(proc.pid, signal.SIGHUP)
        refused = wait_until(
            lambda: [line for line in log.read_text().splitlines() if "new config refused" in line], 10, "refusal"
        )
        assert len(refused) == 1 and str(path) in refused[0], refused
        time.sleep(0.5)
        assert proc.poll() is None and log.read_text().count("serving on") == 1
        assert requests.get(f"{base}/status", headers=AUTH, timeout=2).json()["dry_run"] is False  # the old config runs

        path.write_text(yaml.safe_dump({**yaml.safe_load(good), "dry_run": True}))
        sent = time.monotonic()
        os.kill(proc.pid, signal.SIGHUP)
        status = wait_until(
            lambda: (s := requests.get(f"{base}/status", headers=AUTH, timeout=1).json())["dry_run"] and s,
            20,
            "reloaded",
        )
        gap = time.monotonic() - sent
        assert status["dry_run"] is True and proc.poll() is None  # the same process (PID), restarted in place
        text = log.read_text()
        assert "new config accepted (changed: dry_run); restarting in place" in text
        assert text.count("serving on") == 2, text[-2000:]
    print(f"reload: SIGHUP -> the new config serving in {gap:.2f} s")


@pytest.mark.live
def test_sighups_during_the_restart_are_queued_and_the_checked_text_is_what_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Trial: a second SIGHUP 0.7 s after the first killed the re-executing webhook, and a file edited
    again during the restart started unchecked."""
    port = free_port()
    path = write_config(tmp_path, node_names=["node1", "node2"], listen=f"127.0.0.1:{port}")
    good = yaml.safe_load(path.read_text())
    base = f"http://127.0.0.1:{port}"
    log = tmp_path / "webhook.log"
    (tmp_path / "tmp").mkdir()
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))  # where the checked copy is written
    with process([sys.executable, "-m", "mqttlb.cli", "webhook", "--config", str(path)], log) as proc:
        wait_until(lambda: requests.get(f"{base}/readyz", timeout=1).status_code == 200, 20, "webhook ready")

        path.write_text(yaml.safe_dump({**good, "dry_run": True}))
        os.kill(proc.pid, signal.SIGHUP)
        wait_until(lambda: "restarting in place" in log.read_text(), 10, "first restart")
        path.write_text(yaml.safe_dump({**good, "nodes": []}))  # edited during the restart: never checked
        time.sleep(0.2)
        os.kill(proc.pid, signal.SIGHUP)  # into the re-executing process
        refused = wait_until(
            lambda: [line for line in log.read_text().splitlines() if "new config refused" in line], 20, "queued"
        )
        assert proc.poll() is None, log.read_text()[-2000:]
        assert len(refused) == 1 and "nodes" in refused[0]
        assert requests.get(f"{base}/status", headers=AUTH, timeout=2).json()["dry_run"] is True
        assert log.read_text().count("serving on") == 2
        assert list((tmp_path / "tmp").iterdir()) == []  # the new process removed the copy it read
