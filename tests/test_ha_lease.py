"""Leader leases and the replica loop (mqttlb.webhook.lease, mqttlb.webhook.ha) without a rebalancer:
the file lease (also across a SIGKILLed holder), the Kubernetes Lease against a stub API server that keeps
``resourceVersion`` as the real one does, and a replica that follows, takes over, and steps down."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from stackutil import wait_until

from mqttlb.webhook.ha import Replica
from mqttlb.webhook.lease import FileLease, KubernetesLease, KubernetesLeaseConfig

LEASES = "/apis/coordination.k8s.io/v1/namespaces/mqtt/leases"


def test_file_lease_is_exclusive_and_released(tmp_path: Path) -> None:
    path = tmp_path / "leader.lock"
    a, b = FileLease(path, "a"), FileLease(path, "b")
    assert a.acquire() and a.acquire()  # renewing a held lease
    assert not b.acquire() and b.holder() == "a"
    a.release()
    assert b.acquire() and a.holder() == "b"
    b.release()


def test_file_lease_of_a_killed_holder_is_free_at_once(tmp_path: Path) -> None:
    path = tmp_path / "leader.lock"
    holder = subprocess.Popen(
        [sys.executable, "-c", f"from mqttlb.webhook.lease import FileLease; l = FileLease({str(path)!r}, 'dead'); "
         "assert l.acquire(); print('held', flush=True); import time; time.sleep(60)"],
        stdout=subprocess.PIPE,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == b"held"
        standby = FileLease(path, "standby")
        assert not standby.acquire() and standby.holder() == "dead"
        holder.kill()
        holder.wait(5)
        assert standby.acquire()  # the kernel dropped the dead process's lock
        standby.release()
    finally:
        holder.kill()


class _ApiServer:
    """The Lease part of the Kubernetes API: GET, POST (409 if it exists), PUT (409 on a stale
    resourceVersion); ``down`` makes every request fail with 503."""

    def __init__(self) -> None:
        self.lease: dict[str, Any] | None = None
        self.version = 0
        self.down = False
        api = self

        class Handler(BaseHTTPRequestHandler):
            def _send(self, status: int, body: Any) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _body(self) -> Any:
                return json.loads(self.rfile.read(int(self.headers["Content-Length"])))

            def do_GET(self) -> None:  # noqa: N802
                if api.down:
                    return self._send(503, {})
                if self.path != f"{LEASES}/leader" or api.lease is None:
                    return self._send(404, {"kind": "Status", "code": 404})
                self._send(200, api.lease)

            def do_POST(self) -> None:  # noqa: N802
                body = self._body()
                if api.down or api.lease is not None:
                    return self._send(503 if api.down else 409, {})
                self._send(201, api.store(body))

            def do_PUT(self) -> None:  # noqa: N802
                body = self._body()
                if api.down:
                    return self._send(503, {})
                if api.lease is None or body["metadata"].get("resourceVersion") != str(api.version):
                    return self._send(409, {"kind": "Status", "code": 409})
                self._send(200, api.store(body))

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_port}"

    def store(self, body: dict[str, Any]) -> dict[str, Any]:
        self.version += 1
        body["metadata"]["resourceVersion"] = str(self.version)
        self.lease = body
        return body


@pytest.fixture
def api() -> Any:
    server = _ApiServer()
    yield server
    server.server.shutdown()
    server.server.server_close()


def test_kubernetes_lease_takeover_after_expiry(api: _ApiServer) -> None:
    now = [1000.0]

    def lease(identity: str) -> KubernetesLease:
        return KubernetesLease(api.url, "mqtt", "leader", duration_seconds=10, identity=identity, verify=False,
                               clock=lambda: now[0])

    a, b = lease("a"), lease("b")
    assert a.acquire() and not b.acquire() and b.holder() == "a"
    now[0] += 8
    assert a.acquire() and not b.acquire()  # renewed: b still waits
    now[0] += 11  # a died without renewing: the lease expired
    assert b.acquire()
    assert api.lease is not None and api.lease["spec"]["leaseTransitions"] == 1
    assert not a.acquire() and a.holder() == "b"  # the old holder does not act again
    b.release()
    assert a.acquire()  # released: taken at once, no expiry to wait for


def test_kubernetes_lease_holder_stops_before_another_can_take_over(api: _ApiServer) -> None:
    now = [1000.0]
    a = KubernetesLease(api.url, "mqtt", "leader", duration_seconds=9, identity="a", verify=False,
                        clock=lambda: now[0])
    assert a.acquire()
    api.down = True
    now[0] += 5
    assert a.acquire()  # within the renew deadline (6 s of 9)
    now[0] += 2
    assert not a.acquire()  # past it: stop acting, 2 s before the lease can expire for the others


def test_kubernetes_lease_config_keeps_renewals_within_the_deadline() -> None:
    KubernetesLeaseConfig(kind="kubernetes", name="mqttlb", duration_seconds=15, renew_seconds=2)
    with pytest.raises(ValueError, match="renew_seconds"):
        KubernetesLeaseConfig(kind="kubernetes", name="mqttlb", duration_seconds=6, renew_seconds=3)


def test_replicas_exactly_one_leads_and_the_standby_takes_over(tmp_path: Path) -> None:
    path = tmp_path / "leader.lock"
    events: list[str] = []
    stops = {"a": threading.Event(), "b": threading.Event()}

    def replica(name: str) -> Replica:
        return Replica(
            FileLease(path, name),
            lead=lambda leadership: events.append(f"lead {name}"),
            follow=lambda: events.append(f"follow {name}"),
            renew_seconds=0.05,
            on_lost=lambda: events.append(f"lost {name}"),
        )

    a, b = replica("a"), replica("b")
    threads = {n: threading.Thread(target=r.run, args=(stops[n],), daemon=True) for n, r in (("a", a), ("b", b))}
    threads["a"].start()
    wait_until(lambda: "lead a" in events, 5, "a leads")
    threads["b"].start()
    wait_until(lambda: "follow b" in events, 5, "b follows")
    assert a.leading_since is not None and b.leading_since is None and "follow a" not in events
    stopped = time.monotonic()
    stops["a"].set()  # a stops: its lease is released
    threads["a"].join(5)
    wait_until(lambda: "lead b" in events, 5, "b takes over")
    assert time.monotonic() - stopped < 1.0
    assert events.count("lead a") == events.count("lead b") == 1
    stops["b"].set()
    threads["b"].join(5)


def test_a_replica_that_cannot_start_gives_the_lease_back(tmp_path: Path) -> None:
    path = tmp_path / "leader.lock"
    stop = threading.Event()

    def broken(leadership: threading.Event) -> None:
        raise RuntimeError("state file unusable")

    replica = Replica(FileLease(path, "broken"), lead=broken, follow=lambda: None, renew_seconds=0.05,
                      on_lost=lambda: None)
    thread = threading.Thread(target=replica.run, args=(stop,), daemon=True)
    thread.start()
    other = FileLease(path, "other")
    wait_until(other.acquire, 5, "the lease given back")
    stop.set()
    thread.join(5)
    other.release()


class _Flaky:
    """A lease held for ``held`` tries, then lost (a Kubernetes Lease that could not be renewed)."""

    identity = "flaky"

    def __init__(self, held: int) -> None:
        self.left = held
        self.released = False

    def acquire(self) -> bool:
        self.left -= 1
        return self.left >= 0

    def release(self) -> None:
        self.released = True

    def holder(self) -> str | None:
        return None


def test_a_leader_that_loses_its_lease_stops_acting_and_says_so() -> None:
    lease, events = _Flaky(held=3), []
    leaderships: list[threading.Event] = []

    def lead(leadership: threading.Event) -> None:
        leaderships.append(leadership)

    replica = Replica(lease, lead=lead, follow=lambda: events.append("follow"), renew_seconds=0.01,
                      on_lost=lambda: events.append("lost"))
    replica.run(threading.Event())  # returns once the lease is lost
    assert events == ["lost"] and len(leaderships) == 1 and leaderships[0].is_set()
    assert lease.released and replica.leading_since is None
