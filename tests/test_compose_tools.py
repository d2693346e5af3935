"""The compose stack's generated configs pass the real tools' own checks (promtool, amtool, Envoy's
validate mode), and the `init` service's script prepares the shared state volume."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import bcrypt
import pytest
import yaml

from mqttlb.stack import builders
from mqttlb.stack import compose_render as cr
from mqttlb.stack.config import find_binary
from mqttlb.stack.topology import CONTAINER_STATE


def binary(name: str) -> str:
    found = find_binary(name)
    assert found is not None, f"{name} is not installed (see stack/config.py REQUIRED_BINARIES)"
    return found


def test_promtool_accepts_the_compose_prometheus_config(tmp_path):
    # promtool opens every credentials_file: the tokens the init service creates in the state volume,
    # here under tmp_path in their places
    text = (cr.COMPOSE_DIR / "prometheus.yml").read_text()
    for token in ("webhook/token", "exporters/token", "secrets/web-password"):
        assert f"{CONTAINER_STATE}/{token}" in text
        (tmp_path / token).parent.mkdir(parents=True)
        (tmp_path / token).write_text("a-token-for-promtool-0123456789\n")
    config = tmp_path / "prometheus.yml"
    config.write_text(text.replace(f"{CONTAINER_STATE}/", f"{tmp_path}/"))
    result = subprocess.run([binary("promtool"), "check", "config", str(config)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout + result.stderr


def test_amtool_accepts_the_compose_alertmanager_config():
    amtool = shutil.which("amtool")
    assert amtool is not None, "amtool is not installed (apt-get install prometheus-alertmanager)"
    result = subprocess.run([amtool, "check-config", str(cr.COMPOSE_DIR / "alertmanager.yml")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 receivers" in result.stdout


def validate(path: Path) -> subprocess.CompletedProcess[str]:
    command = [binary("envoy"), "--mode", "validate", "-c", str(path), "--log-level", "warning"]
    return subprocess.run(command, capture_output=True, text=True, timeout=60)


@pytest.mark.live
def test_envoy_validates_the_compose_envoy_config(tmp_path):
    # The pressure file lives on the compose volume; point the monitor at a real file here.
    config = yaml.safe_load((cr.COMPOSE_DIR / "envoy.yaml").read_text())
    pressure = tmp_path / "pressure"
    pressure.write_text("0\n")
    config["overload_manager"]["resource_monitors"][0]["typed_config"]["filename"] = str(pressure)
    path = tmp_path / "envoy.yaml"
    path.write_text(yaml.safe_dump(config))
    result = validate(path)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "OK" in result.stdout + result.stderr

    # ... and it does reject a broken one (ADS naming a cluster that does not exist)
    (service,) = config["dynamic_resources"]["ads_config"]["grpc_services"]
    service["envoy_grpc"]["cluster_name"] = "no_such_cluster"
    path.write_text(yaml.safe_dump(config))
    result = validate(path)
    assert result.returncode != 0


def run_init(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", cr.INIT_MODULE, *args], capture_output=True, text=True,
                          timeout=60, cwd=cr.STACK_DIR.parent)


def test_init_state_creates_token_and_pressure_once(tmp_path):
    result = run_init("--state-dir", str(tmp_path), "--token-owner", str(os.getuid()))
    assert result.returncode == 0, result.stderr
    token = tmp_path / "webhook" / "token"
    pressure = tmp_path / "envoy" / "pressure"
    assert len(token.read_text().strip()) >= 32
    assert stat.S_IMODE(token.stat().st_mode) == 0o400
    assert token.stat().st_uid == os.getuid()
    assert pressure.read_text() == "0\n"
    assert (tmp_path / "eds").is_dir()
    hivemq = tmp_path / "hivemq" / "token"  # the mqttlb HiveMQ extension's API token, readable by group 0
    assert len(hivemq.read_text().strip()) >= 32 and hivemq.read_text() != token.read_text()
    assert stat.S_IMODE(hivemq.stat().st_mode) == 0o440
    exporters = tmp_path / "exporters" / "token"  # the exporters' /metrics token, read by Prometheus (nobody)
    assert len(exporters.read_text().strip()) >= 32 and exporters.read_text() != token.read_text()
    assert stat.S_IMODE(exporters.stat().st_mode) == 0o400 and exporters.stat().st_uid == os.getuid()
    xds = tmp_path / "xds" / "token"  # the xDS token: its own folder, a volume only Envoy and the webhook mount
    assert len(xds.read_text().strip()) >= 32 and xds.read_text() != token.read_text()
    assert stat.S_IMODE(xds.stat().st_mode) == 0o400
    password = (tmp_path / "secrets" / "web-password").read_text().strip()  # Prometheus's and Alertmanager's login
    secret = (tmp_path / "secrets" / "web-password").stat()  # Prometheus (owner) and Grafana (group 0) read it
    assert len(password) >= 32 and stat.S_IMODE(secret.st_mode) == 0o440 and secret.st_gid == 0
    for web in ("prometheus/web.yml", "alertmanager/web.yml"):
        hashed = yaml.safe_load((tmp_path / web).read_text())["basic_auth_users"][builders.WEB_USER]
        assert bcrypt.checkpw(password.encode(), hashed.encode()), web
        checked = subprocess.run([binary("promtool"), "check", "web-config", str(tmp_path / web)],
                                 capture_output=True, text=True, timeout=60)
        assert checked.returncode == 0, checked.stdout + checked.stderr
    assert (tmp_path / "prometheus" / "rules").is_dir()  # the mount point of ../rules in the read-only volume

    first, first_hivemq, first_xds = token.read_text(), hivemq.read_text(), xds.read_text()
    pressure.write_text("0.95\n")  # the webhook's state survives a restart of the stack
    again = run_init("--state-dir", str(tmp_path))
    assert again.returncode == 0, again.stderr
    assert token.read_text() == first and hivemq.read_text() == first_hivemq and xds.read_text() == first_xds
    assert pressure.read_text() == "0.95\n"
    assert "nothing, all present" in again.stderr


def test_init_state_rejects_bad_arguments(tmp_path):
    missing = run_init("--state-dir", str(tmp_path / "missing"))
    assert missing.returncode == 2 and "is not a directory" in missing.stderr
    assert not (tmp_path / "missing").exists()
    negative = run_init("--state-dir", str(tmp_path), "--token-owner", "-5")
    assert negative.returncode == 2 and "uid" in negative.stderr
    assert list(tmp_path.iterdir()) == []

