"""The local stack with ``tls: true`` (issue 18): every HTTP part mqttlb configures serves HTTPS with the
server certificate of a CA generated into the state dir, and every client in the stack checks it.

One stack (3 nodes) on free ports: every printed address answers over https with the credential its line
names and the printed CA (401 without the credential), plain HTTP to those ports gets no page, Prometheus
scrapes every target over https (up), and a test alert goes Prometheus-free through Alertmanager to the
webhook over https (Alertmanager checks the webhook's certificate against the CA).
"""

from __future__ import annotations

import ssl
import subprocess
import sys

import pytest
import requests
from cryptography import x509
from stackutil import free_ports_config, running_stack, wait_until, web_auth
from test_stack_live import assert_every_printed_address_answers

from mqttlb import contract
from mqttlb.stack import builders
from mqttlb.stack.runner import Stack

pytestmark = pytest.mark.live


@pytest.fixture(scope="module")
def tls_stack(tmp_path_factory: pytest.TempPathFactory):
    cfg = free_ports_config(tmp_path_factory.mktemp("tls") / "state", nodes=3, tls=True, scrape_interval="2s")
    with running_stack(cfg) as stack:
        yield stack


def test_the_ca_signs_a_loopback_server_certificate(tls_stack: Stack) -> None:
    paths = tls_stack.paths
    cert = x509.load_pem_x509_certificate(paths.tls_cert.read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(ip) for ip in names.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    context = ssl.create_default_context(cafile=str(paths.tls_ca))
    assert context.get_ca_certs()  # the CA file loads as a trust anchor
    for key in (paths.tls_key, paths.tls_ca_key):
        assert key.stat().st_mode & 0o077 == 0, key


def test_every_printed_address_answers_over_https(tls_stack: Stack) -> None:
    lines: list[str] = []
    Stack(tls_stack.cfg, out=lines.append).print_addresses()
    text = "\n".join(lines)
    ca = builders.stack_ca(tls_stack.topology)
    assert ca is not None and f"--cacert {ca}" in text
    urls = assert_every_printed_address_answers(text, ca)
    https = [u for u in urls if u.startswith("https://")]
    assert len(https) >= 6, urls  # Prometheus (2), Alertmanager, both exporters, the webhook
    for url in https:
        try:  # plain HTTP to a TLS port: no page (Go's servers answer 400, Python's close the connection)
            plain: int | None = requests.get(url.replace("https://", "http://", 1), timeout=5).status_code
        except requests.ConnectionError:
            plain = None
        assert plain in (None, 400), (url, plain)
        with pytest.raises(requests.exceptions.SSLError):  # and the stack's CA is not the system's
            requests.get(url, timeout=5)


def test_prometheus_scrapes_every_target_over_https(tls_stack: Stack) -> None:
    topo = tls_stack.topology
    ca = builders.stack_ca(topo)

    def all_up() -> list[dict] | None:
        targets = requests.get(
            topo.prometheus.url("/api/v1/targets"), auth=web_auth(tls_stack), verify=ca, timeout=5
        ).json()["data"]["activeTargets"]
        return targets if targets and all(t["health"] == "up" for t in targets) else None

    targets = wait_until(all_up, 30, "every target up", interval=1)
    schemes = {t["labels"]["job"]: t["scrapeUrl"].split(":", 1)[0] for t in targets}
    assert schemes.pop(contract.JOB_ENVOY) == "http"  # Envoy's admin: not configured by mqttlb's TLS
    assert set(schemes.values()) == {"https"}, schemes


def test_a_test_alert_reaches_the_webhook_over_https(tls_stack: Stack) -> None:
    ran = subprocess.run(
        [sys.executable, "-m", "mqttlb.cli", "test-alert", "--state-dir", str(tls_stack.paths.root), "--wait", "60"],
        capture_output=True, text=True, timeout=120,
    )
    assert ran.returncode == 0 and "the webhook recorded it" in ran.stdout, ran.stdout + ran.stderr
    status = subprocess.run(
        [sys.executable, "-m", "mqttlb.cli", "status", "--state-dir", str(tls_stack.paths.root)],
        capture_output=True, text=True, timeout=60,
    )
    assert status.returncode == 0 and "node1" in status.stdout, status.stdout + status.stderr


def test_envoy_takes_its_endpoints_over_xds_with_tls(tmp_path) -> None:
    """eds: grpc with tls: true -- the webhook's xDS server presents the stack's certificate and Envoy's
    xDS cluster checks it against the CA (running_stack returns once Envoy lists every node)."""
    cfg = free_ports_config(tmp_path / "state", nodes=2, tls=True, eds="grpc")
    with running_stack(cfg) as stack:
        assert sorted(h.node for h in stack.envoy_hosts()) == ["node1", "node2"]
        bootstrap = stack.paths.envoy_yaml.read_text()
        assert "UpstreamTlsContext" in bootstrap and str(stack.paths.tls_ca) in bootstrap
