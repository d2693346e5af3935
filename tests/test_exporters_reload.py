"""SIGHUP to the exporters (live processes): the broker exporter reads --config again (a bad file is
refused in one log line and the old config keeps serving; a good one restarts it in place, same PID);
the Envoy exporter, whose settings are all flags, logs it and keeps serving instead of dying."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import pytest
import requests
import yaml
from stackutil import process, wait_until

from mqttlb.exporters.broker_cli import check_reload
from mqttlb.exporters.broker_config import BrokerExporterConfigError, load_config
from mqttlb.stack.ephemeral import free_port

CONFIG = {
    "cluster": "before",
    "scrape_timeout_seconds": 1,
    "nodes": [{"name": "node1", "kind": "mosquitto", "address": "127.0.0.1:9", "cpu_cores": 1}],
}


def write(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


def test_check_reload_refuses_what_a_start_refuses_and_names_what_changed(tmp_path: Path) -> None:
    path = write(tmp_path / "broker.yaml", CONFIG)
    running = load_config(path)
    assert check_reload(path, None, running) == "no setting changed"
    write(path, {**CONFIG, "cluster": "after"})
    assert check_reload(path, None, running) == "changed: cluster"
    write(path, {**CONFIG, "nodes": []})
    with pytest.raises(BrokerExporterConfigError):
        check_reload(path, None, running)
    write(path, {**CONFIG, "listen": "127.0.0.1:99999"})
    with pytest.raises(ValueError, match="port must be 1..65535"):
        check_reload(path, None, running)


def cluster_label(url: str) -> str | None:
    for line in requests.get(url, timeout=2).text.splitlines():
        if line.startswith("mqtt_broker_up{"):
            return line.split('mqtt_cluster="', 1)[1].split('"', 1)[0]
    return None


@pytest.mark.live
def test_sighup_to_the_broker_exporter_refuses_a_bad_config_then_takes_a_good_one(tmp_path: Path) -> None:
    port = free_port()
    path = write(tmp_path / "broker.yaml", CONFIG)
    url = f"http://127.0.0.1:{port}/metrics"
    log = tmp_path / "exporter.log"
    argv = [sys.executable, "-m", "mqttlb.cli", "broker-exporter", "--config", str(path), f"--listen=127.0.0.1:{port}"]
    with process(argv, log) as proc:
        wait_until(lambda: cluster_label(url) == "before", 20, "exporter serving")

        write(path, {**CONFIG, "nodes": [{"name": "node1", "kind": "mosquitto"}]})
        os.kill(proc.pid, signal.SIGHUP)
        refused = wait_until(
            lambda: [line for line in log.read_text().splitlines() if "new config refused" in line], 10, "refusal"
        )
        assert len(refused) == 1 and str(path) in refused[0], refused
        time.sleep(0.5)
        assert proc.poll() is None and cluster_label(url) == "before"

        write(path, {**CONFIG, "cluster": "after"})
        os.kill(proc.pid, signal.SIGHUP)
        wait_until(lambda: cluster_label(url) == "after", 20, "the new config serving")
        assert proc.poll() is None  # the same process, restarted in place
        assert "new config accepted (changed: cluster); restarting in place" in log.read_text()


@pytest.mark.live
def test_sighup_to_the_envoy_exporter_is_logged_and_it_keeps_serving(tmp_path: Path) -> None:
    port = free_port()
    log = tmp_path / "exporter.log"
    argv = [sys.executable, "-m", "mqttlb.cli", "envoy-exporter", "--listen", f"127.0.0.1:{port}",
            "--envoy-admin", "http://127.0.0.1:9"]
    url = f"http://127.0.0.1:{port}/metrics"
    with process(argv, log) as proc:
        wait_until(lambda: requests.get(url, timeout=2).status_code == 200, 20, "exporter serving")
        os.kill(proc.pid, signal.SIGHUP)
        wait_until(lambda: "SIGHUP: nothing to reload" in log.read_text(), 10, "SIGHUP logged")
        assert proc.poll() is None and requests.get(url, timeout=2).status_code == 200
