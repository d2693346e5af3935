"""mqttlb.brokers.hivemq against stub HTTP servers: what it sends, how it reads answers, and that every
failure is a one-line EvictionError (the live suite, tests/test_hivemq_live.py, runs it on real nodes)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any, ClassVar

import pytest
from stackutil import StubHandler, serve_stub

from mqttlb.brokers.eviction import ClientLoad, EvictionError
from mqttlb.brokers.hivemq import HivemqEvictionAdapter

CLIENT = {
    "clientId": "c1",
    "messagesInPerSecond": 2.5,
    "bytesInPerSecond": 250.0,
    "persistent": False,
    "protocol": 5,
    "connectedSeconds": 3.0,
    "messagesIn": 10,
    "bytesIn": 1000,
}
CLIENTS: dict[str, Any] = {
    "sharedSessions": True,
    "limits": {"maxPerSecond": 100, "maxClients": 1000, "maxSeconds": 60, "loadWindowSeconds": 10},
    "clients": [CLIENT],
}


class Stub(StubHandler):
    """Answers every request with the class's (status, body); records (method, path, headers, body)."""

    status: ClassVar[int] = 200
    body: ClassVar[str] = ""
    delay: ClassVar[threading.Event | None] = None
    seen: ClassVar[list[tuple[str, str, dict[str, str], Any]]] = []

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        Stub.seen.append((self.command, self.path, dict(self.headers), json.loads(raw) if raw else None))
        if Stub.delay is not None:
            Stub.delay.wait(5)
        self.answer(Stub.status, Stub.body)

    do_GET = do_POST = _handle  # noqa: N815 (http.server's names)


@pytest.fixture
def stub() -> Iterator[str]:
    Stub.status, Stub.body, Stub.delay, Stub.seen = 200, "", None, []
    server = serve_stub(Stub)
    try:
        yield f"http://127.0.0.1:{server.server_port}/"
    finally:
        if Stub.delay is not None:
            Stub.delay.set()
        server.shutdown()
        server.server_close()


def answering(status: int, body: Any) -> None:
    Stub.status, Stub.body = status, body if isinstance(body, str) else json.dumps(body)


def test_clients_sends_the_token_and_reads_the_answer(stub: str) -> None:
    answering(200, CLIENTS)
    adapter = HivemqEvictionAdapter(stub, token="t0k", timeout=2)
    assert adapter.shared_sessions is False  # nothing asked yet: the safe assumption
    assert adapter.clients() == [ClientLoad("c1", 2.5, 250.0, False, 5, 3.0)]
    assert adapter.shared_sessions is True  # as the extension said
    method, path, headers, _ = Stub.seen[0]
    assert (method, path, headers["Authorization"]) == ("GET", "/mqttlb/v1/clients", "Bearer t0k")


def test_evict_sends_the_command_and_returns_the_answer(stub: str) -> None:
    answering(200, {"evicted": ["a"], "unknown": [], "refused": [], "reason": "2 disconnected"})
    adapter = HivemqEvictionAdapter(stub, token="t", timeout=2)
    result = adapter.evict(["a", "b"], max_per_second=4, reason_code=0x9D, server_reference="x:1883")
    assert (result.evicted, result.unknown, result.refused, result.reason) == (("a",), (), (), "2 disconnected")
    assert Stub.seen[0][:2] == ("POST", "/mqttlb/v1/evict")
    assert Stub.seen[0][3] == {
        "clients": ["a", "b"],
        "maxPerSecond": 4.0,
        "reasonCode": 0x9D,
        "allowPersistent": False,
        "serverReference": "x:1883",
    }
    assert adapter.evict([], max_per_second=4).evicted == () and len(Stub.seen) == 1  # nothing asked


@pytest.mark.parametrize(
    ("status", "body", "text"),
    [
        (401, {"error": "bearer token not accepted"}, "refused with 401: bearer token not accepted"),
        (409, {"error": "another eviction command is running"}, "refused with 409: another eviction"),
        (502, "<html>\n bad gateway\n</html>", "refused with 502: <html> bad gateway </html>"),
        (200, "not json", "not an mqttlb extension answer"),
        (200, {"sharedSessions": False, "limits": CLIENTS["limits"]}, "(clients: Field required"),
        (200, {**CLIENTS, "clients": [{**CLIENT, "protocol": "five"}]}, "clients.0.protocol"),
    ],
)
def test_bad_answers_are_one_line_errors(stub: str, status: int, body: Any, text: str) -> None:
    answering(status, body)
    with pytest.raises(EvictionError) as caught:
        HivemqEvictionAdapter(stub, token="t", timeout=2).clients()
    assert text in str(caught.value) and "\n" not in str(caught.value)
    assert str(caught.value).startswith(f"HiveMQ at {stub.rstrip('/')}: GET /mqttlb/v1/clients: ")


def test_an_evict_answer_without_its_lists_is_an_error(stub: str) -> None:
    answering(200, {"reason": "done"})
    with pytest.raises(EvictionError, match="evicted: Field required"):
        HivemqEvictionAdapter(stub, token="t", timeout=2).evict(["a"], max_per_second=1)


def test_no_answer_within_the_timeout(stub: str) -> None:
    Stub.delay = threading.Event()
    answering(200, CLIENTS)
    with pytest.raises(EvictionError, match=r"GET /mqttlb/v1/clients: no answer within 0.3 s$"):
        HivemqEvictionAdapter(stub, token="t", timeout=0.3).clients()


def test_set_available_posts_the_draining_flag_and_checks_the_answer(stub: str) -> None:
    adapter = HivemqEvictionAdapter(stub, token="t", timeout=2)
    answering(200, {"draining": True, "changed": True})
    assert adapter.set_available(False) is True
    answering(200, {"draining": False, "changed": False})
    assert adapter.set_available(True) is False
    assert [(m, p, h["Authorization"], b) for m, p, h, b in Stub.seen] == [
        ("POST", "/mqttlb/v1/availability", "Bearer t", {"draining": True}),
        ("POST", "/mqttlb/v1/availability", "Bearer t", {"draining": False}),
    ]
    with pytest.raises(EvictionError, match="asked draining=True, the extension answered draining=False$"):
        adapter.set_available(False)
    answering(401, {"error": "bearer token not accepted"})
    with pytest.raises(EvictionError, match="POST /mqttlb/v1/availability: refused with 401: bearer token"):
        adapter.set_available(False)
