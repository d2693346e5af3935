"""HTTP-side faults of issue 13's reliability attack, reproduced over real sockets.

- A too-large body is refused by waitress itself (before the app) in counted, logged JSON, by
  Content-Length and while a chunked body arrives; a request waitress cannot parse likewise.
- A hung Prometheus holds one reconcile pass, never the HTTP fast path: 20 notifications, a drain
  and every reader answer at once while the pass waits in its query.
- 150 idle TCP connections (no token needed) do not make ``mqttlb webhook`` unreachable, and the
  server closes them after its idle timeout; the command starts with Envoy and Prometheus down.

The server is always the real one: ``create_webhook_server`` (what the CLI runs) in a thread, or
the ``mqttlb webhook`` command itself.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests
from webhookhttp import (
    AUTH,
    NODES,
    TOKEN,
    HangingPrometheus,
    alert,
    build,
    make_config,
    metric_samples,
    notification,
    write_config,
)
from webhookhttp import serving as serving_app

from mqttlb import contract
from mqttlb.stack.ephemeral import free_port
from mqttlb.webhook.cli import Rebalancer
from mqttlb.webhook.server import CHANNEL_TIMEOUT_SECONDS, CLEANUP_INTERVAL_SECONDS

ROOT = Path(__file__).resolve().parents[1]
LIMIT = 64 * 1024
AUTHED: dict[str, Any] = {"headers": AUTH, "timeout": 5}


def raw_exchange(port: int, data: bytes, timeout: float = 5.0) -> tuple[int, dict[str, str], bytes]:
    """Send ``data`` on a new connection and read the answer until the server closes it."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(data)  # the server may answer and close before taking everything
        chunks = []
        while True:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            chunks.append(chunk)
    head, _, payload = b"".join(chunks).partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in header_lines)}
    return int(status_line.split()[1]), headers, payload


def rejected(base: str, route: str, reason: str) -> float:
    samples = metric_samples(requests.get(f"{base}/metrics", headers=AUTH, timeout=2).text)
    return samples[(contract.WEBHOOK_REJECTED, (("reason", reason), ("route", route)))]


# --------------------------------------------------------------------------- 413 through waitress


def test_waitress_refuses_too_large_bodies_in_counted_json(tmp_path: Path, caplog: pytest.LogCaptureFixture):
    h = build(tmp_path, max_body_bytes=LIMIT)
    before = h.world()
    with serving_app(h.app, h.controller.metrics, LIMIT) as (base, port):
        # by Content-Length: refused before the body is read
        head = f"POST /alerts HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
        status, headers, payload = raw_exchange(port, (head + "Content-Length: 104857600\r\n\r\n").encode())
        assert status == 413 and headers["content-type"] == "application/json"
        assert json.loads(payload) == {"error": f"body larger than {LIMIT} bytes"}
        # chunked: refused once the received body reaches the limit
        chunk = b"x" * 8192
        chunks = (b"%x\r\n" % len(chunk) + chunk + b"\r\n") * (LIMIT // len(chunk) + 2) + b"0\r\n\r\n"
        status, headers, payload = raw_exchange(port, (head + "Transfer-Encoding: chunked\r\n\r\n").encode() + chunks)
        assert status == 413 and json.loads(payload) == {"error": f"body larger than {LIMIT} bytes"}
        # on the token-less REST EDS route too, and on any path
        status, _, payload = raw_exchange(
            port, b"POST /v3/discovery:endpoints HTTP/1.1\r\nHost: x\r\nContent-Length: 999999999\r\n\r\n"
        )
        assert status == 413 and "error" in json.loads(payload)
        status, _, _ = raw_exchange(port, b"POST /elsewhere HTTP/1.1\r\nHost: x\r\nContent-Length: 999999999\r\n\r\n")
        assert status == 413
        # one byte over the limit, through an ordinary client
        over = requests.post(f"{base}/drain", data=b" " * (LIMIT + 1), headers=AUTH, timeout=5)
        assert over.status_code == 413 and over.json() == {"error": f"body larger than {LIMIT} bytes"}
        # a request waitress cannot parse: JSON 400, counted
        status, headers, payload = raw_exchange(port, b"GET /healthz HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n")
        assert status == 400 and headers["content-type"] == "application/json"
        assert json.loads(payload) == {"error": "malformed HTTP request"}
        assert rejected(base, "alerts", "too_large") == 2
        assert rejected(base, "eds", "too_large") == 1
        assert rejected(base, "other", "too_large") == 1
        assert rejected(base, "drain", "too_large") == 1
        assert rejected(base, "other", "invalid_payload") == 1
        # exactly the limit is taken
        wish = json.dumps({"node": "node2", "draining": True}).encode()
        exact = wish[:-1] + b" " * (LIMIT - len(wish)) + b"}"
        taken = requests.post(f"{base}/drain", data=exact, headers=AUTH, timeout=5)
        assert taken.status_code == 202
    assert h.world().files == before.files and h.world().state == before.state
    warnings = [r.getMessage() for r in caplog.records if "rejected" in r.getMessage()]
    assert len(warnings) == 6 and all(len(w) < 300 for w in warnings)


def post_result(url: str, document: dict[str, Any]) -> str:
    response = requests.post(url, json=document, **AUTHED)
    assert response.status_code == 200
    return str(response.json()["result"])


def test_100_parallel_duplicates_over_http_change_the_firing_set_once(tmp_path: Path):
    h = build(tmp_path)
    document = notification()
    with (
        serving_app(h.app, h.controller.metrics, h.config.max_body_bytes) as (base, _),
        ThreadPoolExecutor(max_workers=20) as pool,
    ):
        results = list(pool.map(lambda _: post_result(f"{base}/alerts", document), range(100)))
    assert sorted(results) == ["changed"] + ["unchanged"] * 99
    assert h.controller.firing.snapshot().version == 1 and len(h.wakes) == 1


# --------------------------------------------------------------------------- hung Prometheus


def timed(call: Any) -> tuple[float, requests.Response]:
    started = time.perf_counter()
    response = call()
    return time.perf_counter() - started, response


def test_a_hung_prometheus_holds_the_pass_not_the_fast_path(tmp_path: Path):
    (tmp_path / "token").write_text(TOKEN)
    with HangingPrometheus(hold_seconds=30) as prometheus:
        config = make_config(
            tmp_path,
            prometheus_url=prometheus.url,
            envoy_admin=f"http://127.0.0.1:{free_port()}",  # nothing listens
            http_timeout_seconds=30,
        )
        rebalancer = Rebalancer.build(config, token=TOKEN)
        stop = threading.Event()
        rebalancer.start(stop)
        try:
            assert prometheus.queried.wait(10), "the reconcile loop never queried Prometheus"
            with serving_app(rebalancer.app, rebalancer.controller.metrics, config.max_body_bytes) as (base, _):

                def post(i: int) -> tuple[float, requests.Response]:
                    document = notification(alert(f"Alert{i}", node=NODES[i % 3], fingerprint=f"{i:016x}"))
                    return timed(lambda: requests.post(f"{base}/alerts", json=document, headers=AUTH, timeout=5))

                with ThreadPoolExecutor(max_workers=20) as pool:
                    answers = list(pool.map(post, range(20)))
                for seconds, response in answers:
                    assert response.status_code == 200 and response.json()["result"] == "changed"
                    assert seconds < 0.5, seconds
                for _ in range(5):
                    seconds, response = timed(lambda: requests.get(f"{base}/healthz", timeout=5))
                    assert response.status_code == 200 and seconds < 0.2, seconds
                readers = [
                    lambda: requests.get(f"{base}/readyz", timeout=5),
                    lambda: requests.get(f"{base}/status", headers=AUTH, timeout=5),
                    lambda: requests.get(f"{base}/metrics", headers=AUTH, timeout=5),
                    lambda: requests.get(f"{base}/", headers=AUTH, timeout=5),
                    lambda: requests.post(f"{base}/v3/discovery:endpoints", json={}, headers=AUTH, timeout=5),
                    lambda: requests.post(f"{base}/drain", json={"node": "node2", "draining": True}, **AUTHED),
                ]
                for call in readers:
                    seconds, response = timed(call)
                    assert response.status_code in (200, 202) and seconds < 0.5, (response.url, seconds)
                status = requests.get(f"{base}/status", headers=AUTH, timeout=5).json()
                assert len(status["firing"]["alerts"]) == 20
                # the pass is still waiting in its query: nothing finished, nothing failed
                samples = metric_samples(requests.get(f"{base}/metrics", headers=AUTH, timeout=5).text)
                assert samples[(contract.WEBHOOK_PASS_SECONDS + "_count", ())] == 0
                assert samples[(contract.WEBHOOK_FAILURES, (("kind", "observe"), ("reason", "prometheus")))] == 0
        finally:
            stop.set()


# --------------------------------------------------------------------------- idle connections, the CLI


@pytest.fixture()
def webhook_process(tmp_path: Path) -> Any:
    """``mqttlb webhook`` with Envoy and Prometheus down (closed ports); yields (base URL, port)."""
    port = free_port()
    path = write_config(tmp_path, listen=f"127.0.0.1:{port}", scrape_interval="1s", max_body_bytes=LIMIT)
    proc = subprocess.Popen(
        [sys.executable, "-m", "mqttlb.cli", "webhook", "--config", str(path)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            assert proc.poll() is None, proc.communicate()[0].decode()[-2000:]
            assert time.monotonic() < deadline, "mqttlb webhook did not become ready within 20 s"
            try:
                if requests.get(f"{base}/readyz", timeout=1).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            time.sleep(0.1)
        yield base, port
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()


@pytest.mark.live
def test_150_idle_connections_do_not_block_the_webhook(webhook_process: tuple[str, int]):
    base, port = webhook_process
    idle = []
    try:
        for i in range(150):
            sock = socket.create_connection(("127.0.0.1", port), timeout=2)
            if i % 2:  # half of them start a request and never finish it
                sock.sendall(b"POST /alerts HTTP/1.1\r\nHost: x\r\n")
            idle.append(sock)
        for _ in range(5):
            seconds, response = timed(lambda: requests.get(f"{base}/healthz", timeout=5))
            assert response.status_code == 200 and seconds < 1.0, seconds
        # the loop runs on although Envoy and Prometheus are down: failed passes are counted
        samples = metric_samples(requests.get(f"{base}/metrics", headers=AUTH, timeout=2).text)
        assert samples[(contract.WEBHOOK_FAILURES, (("kind", "observe"), ("reason", "prometheus")))] >= 1
        # a too-large body: the CLI's server answers a counted JSON 413
        status, headers, payload = raw_exchange(
            port, b"POST /alerts HTTP/1.1\r\nHost: x\r\nContent-Length: 104857600\r\n\r\n"
        )
        assert (status, headers["content-type"]) == (413, "application/json")
        assert json.loads(payload) == {"error": f"body larger than {LIMIT} bytes"}
        assert rejected(base, "alerts", "too_large") == 1
        # the server closes idle connections after its channel timeout
        deadline = time.monotonic() + CHANNEL_TIMEOUT_SECONDS + 2 * CLEANUP_INTERVAL_SECONDS + 5
        open_ = set(idle)
        while open_ and time.monotonic() < deadline:
            readable, _, _ = select.select(list(open_), [], [], 0.5)
            for sock in readable:
                try:
                    closed = sock.recv(1024) == b""
                except ConnectionResetError:
                    closed = True
                if closed:
                    open_.discard(sock)
        assert not open_, f"{len(open_)} idle connections still open"
    finally:
        for sock in idle:
            sock.close()
