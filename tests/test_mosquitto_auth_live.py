"""MQTT credentials and TLS for the Mosquitto adapters (issue 18), on a real Mosquitto whose only listener
speaks TLS and wants a username and password (``allow_anonymous false``):

- the eviction side (``mqttlb.brokers.control.open_adapter`` with ``username``, ``password_file``, ``tls``)
  gets its CONNACK; without the password, or without TLS, the connect is refused with an EvictionError;
- the broker exporter's Mosquitto adapter (``username``, ``password_file``, ``tls`` of a node) reads
  ``$SYS`` (the node is up); without the password the node is down with the broker's refusal as reason.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest
from stackutil import free_port, process, wait_until
from tlsutil import self_signed

from mqttlb.brokers.control import MosquittoControl, open_adapter
from mqttlb.brokers.eviction import EvictionError
from mqttlb.exporters.adapters import build_adapter
from mqttlb.exporters.broker_config import parse_config
from mqttlb.stack.config import find_binary
from mqttlb.stack.runner import port_accepts

pytestmark = pytest.mark.live
USER, PASSWORD = "mqttlb-ops", "mqtt-password-0123"


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory):
    """(port, CA file, password file) of a Mosquitto with one TLS listener that requires a login."""
    tmp = tmp_path_factory.mktemp("mosquitto-auth")
    cert, key = self_signed(tmp)
    passwords = tmp / "passwords"
    subprocess.run(["mosquitto_passwd", "-c", "-b", str(passwords), USER, PASSWORD], check=True, timeout=30)
    secret = tmp / "password"
    secret.write_text(PASSWORD + "\n")
    port = free_port()
    conf = tmp / "mosquitto.conf"
    conf.write_text(
        f"listener {port} 127.0.0.1\ncertfile {cert}\nkeyfile {key}\nallow_anonymous false\n"
        f"password_file {passwords}\nsys_interval 1\nlog_dest stdout\nuser root\n"  # root: only root reads tmp
    )
    mosquitto = find_binary("mosquitto")
    assert mosquitto is not None
    with process([mosquitto, "-c", str(conf)], tmp / "mosquitto.log"):
        wait_until(lambda: port_accepts(port), 10, "Mosquitto listening")
        yield port, cert, secret


def control(cert: Path, password: Path | None, tls: bool = True) -> MosquittoControl:
    return MosquittoControl.model_validate(
        {"kind": "mosquitto", "username": USER, "password_file": password, "tls": {"ca_file": cert} if tls else None}
    )


def test_the_eviction_side_logs_in_over_tls(broker, tmp_path):
    port, cert, secret = broker
    with open_adapter("127.0.0.1", port, control(cert, secret), timeout=5) as adapter:
        assert adapter is not None  # CONNACK accepted (connect() raises otherwise)
    wrong = tmp_path / "wrong"
    wrong.write_text("not-the-password\n")
    with pytest.raises(EvictionError, match="refused"):
        open_adapter("127.0.0.1", port, control(cert, wrong), timeout=5).connect()
    with pytest.raises(EvictionError):
        open_adapter("127.0.0.1", port, control(cert, secret, tls=False), timeout=3).connect()
    with pytest.raises(EvictionError, match="cannot load"):
        open_adapter("127.0.0.1", port, control(tmp_path / "missing.crt", secret), timeout=3)


def exporter_adapter(port: int, cert: Path, password: Path):
    config = parse_config({
        "listen": "127.0.0.1:9", "cluster": "auth",  # not served here
        "nodes": [{"name": "node1", "kind": "mosquitto", "address": f"127.0.0.1:{port}", "cpu_cores": 1,
                   "username": USER, "password_file": str(password), "tls": {"ca_file": str(cert)}}],
    })
    return build_adapter(config.nodes[0], config)


def test_the_exporter_reads_sys_over_tls_with_a_login(broker, tmp_path):
    port, cert, secret = broker
    adapter = exporter_adapter(port, cert, secret)
    adapter.start()
    try:
        sample = wait_until(lambda: (s := adapter.snapshot(2)).up and s or None, 15, "$SYS over TLS")
        assert sample.up
    finally:
        adapter.close()
    wrong = tmp_path / "wrong"
    wrong.write_text("not-the-password\n")
    refused = exporter_adapter(port, cert, wrong)
    refused.start()
    try:
        time.sleep(2)
        sample = refused.snapshot(2)
        assert not sample.up and "refused" in (sample.error or ""), sample
    finally:
        refused.close()
