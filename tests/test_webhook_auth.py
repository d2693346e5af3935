"""The webhook's credentials on every route and its TLS (issue 18): an unauthenticated request is refused.

Unit: the Flask app with the bearer token and a basic-auth user -- every read route answers 401 (with
``WWW-Authenticate``) without a credential, 200 with either, the probes stay open, ``open_routes``
opens exactly the routes it names.  Live: the real ``mqttlb webhook`` process over HTTPS (cheroot)
with basic auth -- refused without credentials, served with them, the certificate checked by the client.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from tlsutil import self_signed
from webhookhttp import AUTH, TOKEN, build, write_config

from mqttlb.stack.ephemeral import free_port
from mqttlb.webhook.app import create_app

ROOT = Path(__file__).resolve().parents[1]
BASIC = ("operator", "a-basic-password-0123")
READS = ["/", "/status", "/metrics"]


def _app(tmp_path: Path, **kwargs):
    harness = build(tmp_path)
    return create_app(harness.controller, TOKEN, harness.config.max_body_bytes, basic=BASIC, **kwargs).test_client()


@pytest.mark.parametrize("path", READS)
def test_every_read_route_refuses_without_a_credential(tmp_path, path):
    client = _app(tmp_path)
    refused = client.get(path)
    assert refused.status_code == 401
    assert refused.headers["WWW-Authenticate"] == "Bearer, Basic"
    assert client.get(path, headers=AUTH).status_code == 200
    assert client.get(path, auth=BASIC).status_code == 200
    assert client.get(path, auth=(BASIC[0], "wrong-password")).status_code == 401
    assert client.get(path, headers={"Authorization": "Bearer not-the-token-0123456789"}).status_code == 401


def test_rest_eds_and_posts_refuse_without_a_credential(tmp_path):
    client = _app(tmp_path)
    assert client.post("/v3/discovery:endpoints", json={}).status_code == 401
    assert client.post("/v3/discovery:endpoints", json={}, auth=BASIC).status_code == 200
    assert client.post("/drain", json={"node": "node1", "draining": True}).status_code == 401
    assert client.post("/drain", json={"node": "node1", "draining": True}, auth=BASIC).status_code == 202


def test_probes_stay_open_and_unknown_paths_are_404(tmp_path):
    client = _app(tmp_path)
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").status_code == 200
    assert client.get("/nope").status_code == 404


def test_open_routes_opens_only_what_it_names(tmp_path):
    client = _app(tmp_path, open_routes=["eds", "metrics"])
    assert client.post("/v3/discovery:endpoints", json={}).status_code == 200
    assert client.get("/metrics").status_code == 200
    assert client.get("/status").status_code == 401
    with pytest.raises(ValueError, match="unknown route names"):
        _app(tmp_path / "b", open_routes=["alerts"])


@pytest.mark.live
def test_the_real_webhook_over_https_with_basic_auth(tmp_path):
    cert, key = self_signed(tmp_path)
    password = tmp_path / "password"
    password.write_text(BASIC[1] + "\n")
    port = free_port()
    path = write_config(
        tmp_path,
        node_names=["node1"],
        listen=f"127.0.0.1:{port}",
        basic_auth={"username": BASIC[0], "password_file": str(password)},
        tls={"cert_file": str(cert), "key_file": str(key)},
    )
    cmd = [sys.executable, "-m", "mqttlb.webhook.cli", "--config", str(path)]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"https://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                if requests.get(f"{base}/readyz", verify=str(cert), timeout=1).status_code == 200:
                    break
            except requests.ConnectionError:
                time.sleep(0.1)
        assert requests.get(f"{base}/healthz", verify=str(cert), timeout=2).status_code == 200, proc.poll()
        for route in READS:
            assert requests.get(f"{base}{route}", verify=str(cert), timeout=2).status_code == 401
            assert requests.get(f"{base}{route}", auth=BASIC, verify=str(cert), timeout=2).status_code == 200
        assert requests.get(f"{base}/status", headers=AUTH, verify=str(cert), timeout=2).status_code == 200
        with pytest.raises(requests.exceptions.SSLError):  # an unknown CA is refused by the client
            requests.get(f"{base}/healthz", timeout=2)
        with pytest.raises(requests.ConnectionError):  # plain HTTP on the TLS port gets no answer
            requests.get(f"http://127.0.0.1:{port}/healthz", timeout=2)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        out, _ = proc.communicate(timeout=10)
    assert b"over https" in out, out[-2000:]
