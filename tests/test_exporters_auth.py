"""The exporters' /metrics behind credentials and TLS (issue 18): the real ``mqttlb envoy-exporter`` and
``mqttlb broker-exporter`` processes refuse a request without a credential (401 with
``WWW-Authenticate``) and serve one with it; over HTTPS the client checks the certificate."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests
import yaml
from tlsutil import self_signed

from mqttlb.stack.ephemeral import free_port

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "exporter-token-0123456789abcdef"
pytestmark = pytest.mark.live


@contextmanager
def exporter(args: list[str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "mqttlb.cli", *args], cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield proc
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=10)


def wait_answer(url: str, **kwargs: object) -> requests.Response:
    deadline = time.monotonic() + 20
    while True:
        try:
            return requests.get(url, timeout=2, **kwargs)  # type: ignore[arg-type]
        except requests.ConnectionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def test_envoy_exporter_over_https_with_a_bearer_token(tmp_path):
    cert, key = self_signed(tmp_path)
    token = tmp_path / "token"
    token.write_text(TOKEN + "\n")
    port = free_port()
    args = ["envoy-exporter", "--listen", f"127.0.0.1:{port}", "--envoy-admin", "http://127.0.0.1:9",
            "--web-token-file", str(token), "--web-tls-cert-file", str(cert), "--web-tls-key-file", str(key)]
    url = f"https://127.0.0.1:{port}/metrics"
    with exporter(args, tmp_path / "envoy-exporter.log"):
        refused = wait_answer(url, verify=str(cert))
        assert (refused.status_code, refused.headers["WWW-Authenticate"]) == (401, "Bearer")
        served = requests.get(url, headers={"Authorization": f"Bearer {TOKEN}"}, verify=str(cert), timeout=5)
        assert served.status_code == 200 and "mqttlb_envoy_up" in served.text
        wrong = requests.get(url, headers={"Authorization": "Bearer wrong"}, verify=str(cert), timeout=5)
        assert wrong.status_code == 401
        with pytest.raises(requests.exceptions.SSLError):
            requests.get(url, timeout=5)  # the self-signed CA is not the system's


def test_broker_exporter_with_basic_auth(tmp_path):
    password = tmp_path / "password"
    password.write_text("metrics-password-0123\n")
    port = free_port()
    config = tmp_path / "broker.yaml"
    config.write_text(yaml.safe_dump({
        "listen": f"127.0.0.1:{port}", "cluster": "auth",
        "nodes": [{"name": "node1", "kind": "mosquitto", "address": "127.0.0.1:9", "cpu_cores": 1}],
    }))
    args = ["broker-exporter", "--config", str(config),
            "--web-basic-auth-user", "prometheus", "--web-basic-auth-password-file", str(password)]
    url = f"http://127.0.0.1:{port}/metrics"
    with exporter(args, tmp_path / "broker-exporter.log"):
        refused = wait_answer(url)
        assert (refused.status_code, refused.headers["WWW-Authenticate"]) == (401, "Basic")
        assert requests.get(url, auth=("prometheus", "nope"), timeout=5).status_code == 401
        served = requests.get(url, auth=("prometheus", "metrics-password-0123"), timeout=5)
        assert served.status_code == 200 and "mqtt_broker_up" in served.text


def test_a_half_given_pair_or_a_short_token_is_refused(tmp_path):
    short = tmp_path / "short"
    short.write_text("short\n")
    base = [sys.executable, "-m", "mqttlb.cli", "envoy-exporter", "--listen", f"127.0.0.1:{free_port()}",
            "--envoy-admin", "http://127.0.0.1:9"]
    for extra, message in (
        (["--web-basic-auth-user", "u"], "go together"),
        (["--web-tls-cert-file", str(short)], "go together"),
        (["--web-token-file", str(short)], "shorter than 16"),
        (["--web-token-file", str(tmp_path / "missing")], "cannot read"),
    ):
        done = subprocess.run([*base, *extra], cwd=ROOT, capture_output=True, text=True, timeout=30)
        assert done.returncode == 2 and message in done.stderr, (extra, done.stderr)
