"""Live: the mqttlb extension as HiveMQ loads a regular extension, from the folder the Maven build assembles
(brokers/hivemq/target/mqttlb-extension/mqttlb-extension/: hivemq-extension.xml, the jar, conf/) and the compose
image copies into /opt/hivemq/extensions/.

HiveMQ CE's own main class (``com.hivemq.HiveMQServer``, no launcher, no embedded extension) runs with a home
folder whose extensions/ holds that folder, its conf/config.properties being the compose stack's rendered
settings (stack/compose/hivemq/mqttlb-extension.properties) with the address, port and token file of this
test.  HiveMQ finds the extension through its jar's service file and starts it: /metrics, the availability
switch and the client listing answer, with the settings' ``shared_sessions``.  A settings file with an unknown
key keeps the extension from starting; HiveMQ runs on without it and logs why.

Marked ``hivemq`` (and ``live``): `make test-hivemq` runs it, `make test` leaves it out.
"""

from __future__ import annotations

import configparser
import contextlib
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from hivemqnode import JAR, REPO, TOKEN, ensure_built
from stackutil import free_port, process, wait_until

from mqttlb.brokers.hivemq import HivemqEvictionAdapter
from mqttlb.brokers.hivemq_node import JVM_OPTIONS
from mqttlb.stack import compose_render as cr

pytestmark = [pytest.mark.hivemq, pytest.mark.live]

FOLDER = REPO / "brokers" / "hivemq" / "target" / "mqttlb-extension" / cr.MQTTLB_EXTENSION_FOLDER
STARTED = 'Extension "mqttlb extension (metrics, availability, eviction)" version 0.1.0 started successfully'


@dataclass
class Server:
    http_port: int
    log: Path

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"


def settings(http_port: int, token_file: Path, **extra: str) -> str:
    """The compose stack's rendered extension settings with this test's address, port and token file."""
    parser = configparser.ConfigParser()
    parser.read_string("[x]\n" + (cr.COMPOSE_DIR / "hivemq" / "mqttlb-extension.properties").read_text())
    values = {**parser["x"], "ip": "127.0.0.1", "port": str(http_port), "token_file": str(token_file), **extra}
    return "".join(f"{key}={value}\n" for key, value in values.items())


@contextlib.contextmanager
def hivemq_server(home: Path, **extra: str) -> Iterator[Server]:
    """HiveMQ CE (its own main) with ``home``/extensions/mqttlb-extension copied from the build; ``extra``:
    more or other settings.  Yields once HiveMQ logged the extension system's start."""
    ensure_built()
    mqtt_port, http_port = free_port(), free_port()
    (home / "conf").mkdir(parents=True)
    (home / "conf" / "config.xml").write_text(
        "<hivemq><listeners><tcp-listener>"
        f"<port>{mqtt_port}</port><bind-address>127.0.0.1</bind-address>"
        "</tcp-listener></listeners><persistence><mode>in-memory</mode></persistence>"
        "<anonymous-usage-statistics><enabled>false</enabled></anonymous-usage-statistics></hivemq>\n"
    )
    extension = shutil.copytree(FOLDER, home / "extensions" / cr.MQTTLB_EXTENSION_FOLDER)
    token_file = home / "token"
    token_file.write_text(TOKEN + "\n")
    (extension / "conf" / "config.properties").write_text(settings(http_port, token_file, **extra))
    argv = ["java", *JVM_OPTIONS, f"-Dhivemq.home={home}", "-cp", str(JAR), "com.hivemq.HiveMQServer"]
    log = home / "hivemq.log"
    with process(argv, log) as proc:
        wait_until(lambda: proc.poll() is None and "Starting HiveMQ extension system" in log.read_text(), 120, "HiveMQ")
        yield Server(http_port, log)


def test_hivemq_loads_the_built_extension_folder_with_the_compose_settings(tmp_path: Path) -> None:
    assert {p.name for p in FOLDER.iterdir()} == {"hivemq-extension.xml", "mqttlb-extension-0.1.0.jar", "conf"}
    with hivemq_server(tmp_path / "home") as server:
        wait_until(lambda: STARTED in server.log.read_text(), 30, "the extension started")
        availability = f"{server.base}/mqttlb/v1/availability"
        assert requests.get(availability, timeout=5).status_code == 200
        metrics = requests.get(f"{server.base}/metrics", timeout=5).text
        assert "\ncom_hivemq_networking_connections_current " in metrics and "\nmqttlb_hivemq_draining 0.0" in metrics
        with HivemqEvictionAdapter(server.base, token=TOKEN, timeout=5) as adapter:
            listing = adapter.list_clients()
            assert listing.shared_sessions is True and listing.clients == ()  # shared_sessions=true in the settings
            assert adapter.set_available(False) is True
            assert requests.get(availability, timeout=5).status_code == 503
            assert adapter.set_available(True) is True
            assert requests.get(availability, timeout=5).status_code == 200
        assert requests.get(f"{server.base}/mqttlb/v1/clients", timeout=5).status_code == 401  # no token


def test_settings_with_an_unknown_key_keep_the_extension_out_and_hivemq_runs_on(tmp_path: Path) -> None:
    with hivemq_server(tmp_path / "home", metrics_port="9") as server:
        wait_until(lambda: "mqttlb extension: bad settings" in server.log.read_text(), 30, "the refusal logged")
        text = server.log.read_text()
        assert "unknown key(s) [metrics_port]" in text and STARTED not in text
        with pytest.raises(requests.ConnectionError):
            requests.get(f"{server.base}/metrics", timeout=2)
