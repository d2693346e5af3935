"""The EMQX eviction adapter (mqttlb/brokers/emqx.py) against recorded EMQX 5 REST answers
(tests/fixtures/emqx/) served by a real HTTP server on a free loopback port.

The fake EMQX keeps the node's connected clients (the objects of the recorded listing) as state: ``GET
/api/v5/clients/{clientid}`` answers from it, ``DELETE`` removes from it (204) or answers 404
``CLIENTID_NOT_FOUND``, the listing serves the recorded pages.  A test can queue other answers for a request
(bad bodies, error statuses, a slow answer).  Every request is recorded with the time the adapter's fake clock
showed, so pacing is checked without the wall clock.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import pytest

from mqttlb.brokers.emqx import KICK_NOTE, LIST_FIELDS, EmqxEvictionAdapter, EmqxEvictionInterrupted
from mqttlb.brokers.eviction import REASON_SERVER_MOVED, EvictionAdapter, EvictionError

FIXTURES = Path(__file__).parent / "fixtures" / "emqx"
NODE = "emqx@node1.emqx.local"
OTHER_NODE = "emqx@node2.emqx.local"
KEY, SECRET = "4f33d24d7b8e448d", "gwtbmFJZrnzUu8mPK1BxUkBA66PygETiDEegkf1q8dD"
LISTED_AT = 1_796_050_800.0  # 2026-11-30T15:00:00Z, the wall-clock time of the recorded listing
CLIENTS = "/api/v5/clients"


def fixture(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text())


def raw(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


@dataclass
class Reply:
    status: int
    body: bytes = b""
    delay: float = 0.0
    content_type: str = "application/json"


def reply_json(status: int, data: Any) -> Reply:
    return Reply(status, json.dumps(data).encode())


@dataclass
class Seen:
    method: str
    raw_path: str
    path: str
    query: dict[str, list[str]]
    authorization: str | None
    at: float


class FakeClock:
    """The adapter's monotonic clock; ``sleep`` advances it and is recorded.  ``wall`` is the Unix time that
    goes with it: the recorded listing's time at the start."""

    def __init__(self, now: float = 100.0) -> None:
        self.start = self.now = now
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def wall(self) -> float:
        return LISTED_AT + self.now - self.start

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@dataclass
class FakeEmqx:
    clock: FakeClock
    pages: dict[int, Reply] = field(default_factory=dict)
    clients: dict[str, dict[str, Any]] = field(default_factory=dict)
    queued: dict[tuple[str, str], list[Reply | None]] = field(default_factory=dict)
    seen: list[Seen] = field(default_factory=list)
    url: str = ""
    lock: threading.Lock = field(default_factory=threading.Lock)

    def queue(self, method: str, path: str, *replies: Reply | None) -> None:
        """Answer the next requests to ``method path`` (the listing: ``GET /api/v5/clients?page=N``) with
        ``replies`` in order; None answers from the state."""
        self.queued.setdefault((method, path), []).extend(replies)

    def deletes(self) -> list[Seen]:
        return [s for s in self.seen if s.method == "DELETE"]

    def answer(self, method: str, raw_path: str, headers: Any) -> Reply:
        split = urlsplit(raw_path)
        path, query = unquote(split.path), parse_qs(split.query)
        with self.lock:
            self.seen.append(Seen(method, split.path, path, query, headers.get("Authorization"), self.clock.now))
            key = (method, f"{path}?page={query['page'][0]}" if path == CLIENTS and "page" in query else path)
            pending = self.queued.get(key)
            if pending:
                queued = pending.pop(0)
                if queued is not None:
                    return queued
            expected = "Basic " + base64.b64encode(f"{KEY}:{SECRET}".encode()).decode()
            if headers.get("Authorization") != expected:
                return Reply(401, raw("error_bad_api_key.json"))
            return self.from_state(method, path, query)

    def from_state(self, method: str, path: str, query: dict[str, list[str]]) -> Reply:
        if method == "GET" and path == CLIENTS:
            return self.pages.get(int(query["page"][0]), Reply(400, b'{"code":"INVALID_PARAMETER"}'))
        client_id = path.removeprefix(CLIENTS + "/")
        if not path.startswith(CLIENTS + "/") or client_id not in self.clients:
            return Reply(404, raw("error_clientid_not_found.json"))
        if method == "GET":
            return reply_json(200, self.clients[client_id])
        if method == "DELETE":
            del self.clients[client_id]
            return Reply(204)
        return Reply(405)


def recorded_clients() -> dict[str, dict[str, Any]]:
    return {c["clientid"]: c for name in ("clients_page1.json", "clients_page2.json") for c in fixture(name)["data"]}


@contextlib.contextmanager
def serving(fake: FakeEmqx) -> Iterator[FakeEmqx]:
    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            reply = fake.answer(self.command, self.path, self.headers)
            if reply.delay:
                time.sleep(reply.delay)
            self.send_response(reply.status)
            self.send_header("Content-Type", reply.content_type)
            self.send_header("Content-Length", str(len(reply.body)))
            self.end_headers()
            with contextlib.suppress(OSError):
                self.wfile.write(reply.body)

        do_GET = do_DELETE = _serve

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    fake.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def emqx(clock: FakeClock) -> Iterator[FakeEmqx]:
    fake = FakeEmqx(clock, pages={1: Reply(200, raw("clients_page1.json")), 2: Reply(200, raw("clients_page2.json"))})
    fake.clients = recorded_clients()
    with serving(fake):
        yield fake


Factory = Callable[..., EmqxEvictionAdapter]


@pytest.fixture
def make(emqx: FakeEmqx, clock: FakeClock) -> Iterator[Factory]:
    made: list[EmqxEvictionAdapter] = []

    def build(**overrides: Any) -> EmqxEvictionAdapter:
        settings: dict[str, Any] = {
            "api_key": KEY,
            "api_secret": SECRET,
            "timeout": 2.0,
            "page_limit": 3,
            "max_clients_per_command": 10,
            "max_rate": 100.0,
            "clock": clock,
            "wall_clock": clock.wall,
            "sleep": clock.sleep,
        }
        settings.update(overrides)
        adapter = EmqxEvictionAdapter(settings.pop("base_url", emqx.url), settings.pop("node", NODE), **settings)
        made.append(adapter)
        return adapter

    yield build
    for adapter in made:
        adapter.close()


def page_with(page: int, change: Callable[[dict[str, Any]], None]) -> Reply:
    """A recorded page after ``change`` (which edits the decoded JSON in place)."""
    data = copy.deepcopy(fixture(f"clients_page{page}.json"))
    change(data)
    return reply_json(200, data)


def advance_counters(seconds: float, rates: dict[str, float]) -> Callable[[dict[str, Any]], None]:
    """A page change: each named client published ``rate`` msg/s (100 bytes each) for ``seconds``."""

    def change(data: dict[str, Any]) -> None:
        for client in data["data"]:
            rate = rates.get(client["clientid"], 0.0)
            client["recv_msg"] += int(rate * seconds)
            client["recv_oct"] += int(rate * seconds * 100)

    return change


# --- listing -----------------------------------------------------------------------------------------
def test_the_adapter_is_an_eviction_adapter_whose_moves_lose_the_session(make: Factory) -> None:
    adapter: EvictionAdapter = make()
    assert adapter.shared_sessions is False


def test_clients_reads_every_page_with_basic_auth_and_reports_lifetime_rates(make: Factory, emqx: FakeEmqx) -> None:
    loads = {c.client_id: c for c in make().clients()}

    assert [s.query["page"] for s in emqx.seen] == [["1"], ["2"]]
    expected_auth = "Basic " + base64.b64encode(f"{KEY}:{SECRET}".encode()).decode()
    for seen in emqx.seen:
        assert (seen.method, seen.path, seen.authorization) == ("GET", CLIENTS, expected_auth)
        assert seen.query["node"] == [NODE]
        assert seen.query["conn_state"] == ["connected"]
        assert seen.query["limit"] == ["3"]
        assert seen.query["fields"] == [",".join(LIST_FIELDS)]
    assert sorted(loads) == ["gateway-7", "heavy-publisher", "mqtt5-persistent", "plant/line-2", "sensor-0001"]
    sensor = loads["sensor-0001"]
    assert (sensor.messages_in_per_s, sensor.bytes_in_per_s) == pytest.approx((10.0, 1000.0))
    assert (sensor.persistent, sensor.protocol, sensor.connected_seconds) == (False, 5, pytest.approx(3600.0))
    plant = loads["plant/line-2"]  # MQTT 3.1.1, clean session 0: EMQX gives it the zone's session expiry
    assert (plant.messages_in_per_s, plant.persistent, plant.protocol) == (pytest.approx(1.0), True, 4)
    assert plant.connected_seconds == pytest.approx(600.0)  # connected_at carries a +08:00 offset
    gateway = loads["gateway-7"]  # connected 0.5 s ago: its rate is taken over the 1 s minimum window
    assert (gateway.messages_in_per_s, gateway.bytes_in_per_s, gateway.protocol) == (2.0, 300.0, 3)
    assert loads["heavy-publisher"].messages_in_per_s == pytest.approx(100.0)
    assert loads["mqtt5-persistent"].persistent is True


def test_a_second_listing_gives_rates_over_the_interval_and_a_reconnect_starts_over(
    make: Factory, emqx: FakeEmqx, clock: FakeClock
) -> None:
    adapter = make()
    adapter.clients()
    clock.now += 10.0

    def reconnected(data: dict[str, Any]) -> None:
        advance_counters(10.0, {"sensor-0001": 3.0})(data)
        plant = data["data"][1]
        plant.update(connected_at="2026-11-30T15:00:05.000Z", recv_msg=25, recv_oct=2500)

    emqx.queue("GET", f"{CLIENTS}?page=1", page_with(1, reconnected))
    emqx.queue("GET", f"{CLIENTS}?page=2", page_with(2, advance_counters(10.0, {"heavy-publisher": 40.0})))
    loads = {c.client_id: c for c in make().clients()}
    assert loads["sensor-0001"].messages_in_per_s == pytest.approx(36030 / 3610)  # another adapter: no baseline
    emqx.queue("GET", f"{CLIENTS}?page=1", page_with(1, reconnected))
    emqx.queue("GET", f"{CLIENTS}?page=2", page_with(2, advance_counters(10.0, {"heavy-publisher": 40.0})))
    loads = {c.client_id: c for c in adapter.clients()}

    assert (loads["sensor-0001"].messages_in_per_s, loads["sensor-0001"].bytes_in_per_s) == pytest.approx((3.0, 300.0))
    assert loads["heavy-publisher"].messages_in_per_s == pytest.approx(40.0)
    assert loads["mqtt5-persistent"].messages_in_per_s == 0.0
    assert loads["plant/line-2"].messages_in_per_s == pytest.approx(25 / 5)  # new connection: lifetime rate


def test_a_baseline_younger_than_the_minimum_window_is_kept(make: Factory, emqx: FakeEmqx, clock: FakeClock) -> None:
    adapter = make()
    adapter.clients()
    clock.now += 0.5
    emqx.queue("GET", f"{CLIENTS}?page=1", page_with(1, advance_counters(0.5, {"sensor-0001": 100.0})))
    assert {c.client_id: c for c in adapter.clients()}["sensor-0001"].messages_in_per_s == pytest.approx(
        36050 / 3600.5
    )  # 0.5 s is too short a window: lifetime rate, and the first listing stays the baseline
    clock.now += 9.5
    emqx.queue("GET", f"{CLIENTS}?page=1", page_with(1, advance_counters(10.0, {"sensor-0001": 7.0})))
    assert {c.client_id: c for c in adapter.clients()}["sensor-0001"].messages_in_per_s == pytest.approx(7.0)


def test_clients_leaves_out_disconnected_sessions_and_counts_a_repeated_client_once(
    make: Factory, emqx: FakeEmqx
) -> None:
    def change(data: dict[str, Any]) -> None:
        data["data"][0]["connected"] = False
        data["data"].append(copy.deepcopy(fixture("clients_page1.json")["data"][2]))  # gateway-7 again

    emqx.queue("GET", f"{CLIENTS}?page=2", page_with(2, change))
    ids = sorted(c.client_id for c in make().clients())
    assert ids == ["gateway-7", "mqtt5-persistent", "plant/line-2", "sensor-0001"]


def test_a_listing_longer_than_max_pages_is_refused(make: Factory, emqx: FakeEmqx) -> None:
    emqx.queue("GET", f"{CLIENTS}?page=2", page_with(2, lambda d: d["meta"].update(hasnext=True)))
    with pytest.raises(EvictionError, match=r"more than 2 pages of 3 clients") as caught:
        make(max_pages=2).clients()
    assert "\n" not in str(caught.value)
    assert len(emqx.seen) == 2


def _drop(key: str) -> Callable[[dict[str, Any]], None]:
    return lambda d: d["data"][0].pop(key)


def _set(key: str, value: Any) -> Callable[[dict[str, Any]], None]:
    return lambda d: d["data"][0].update({key: value})


BAD_PAGES: dict[str, tuple[Reply, str]] = {
    "malformed JSON": (Reply(200, b'{"data": [{"clientid": "heavy-pub'), r"page 2: bad answer: .*Invalid JSON"),
    "HTML from a proxy": (Reply(200, b"<html>502 Bad Gateway</html>", content_type="text/html"), "Invalid JSON"),
    "missing recv_msg": (page_with(2, _drop("recv_msg")), r"data\.0\.recv_msg: Field required"),
    "missing node": (page_with(2, _drop("node")), r"data\.0\.node: Field required"),
    "recv_oct as a string": (page_with(2, _set("recv_oct", "72000000")), r"data\.0\.recv_oct: Input should be"),
    "recv_msg as a float": (page_with(2, _set("recv_msg", 1.5)), r"data\.0\.recv_msg: Input should be"),
    "negative counter": (page_with(2, _set("recv_msg", -1)), r"data\.0\.recv_msg: Input should be greater"),
    "proto_ver 6": (page_with(2, _set("proto_ver", 6)), r"data\.0\.proto_ver: Input should be 3, 4 or 5"),
    "connected as a string": (page_with(2, _set("connected", "true")), r"data\.0\.connected"),
    "connected_at without offset": (
        page_with(2, _set("connected_at", "2026-11-30T13:00:00.000")),
        r"data\.0\.connected_at: Input should have timezone info",
    ),
    "connected_at in ms": (page_with(2, _set("connected_at", 1796043600000)), r"data\.0\.connected_at"),
    "empty client id": (page_with(2, _set("clientid", "")), r"data\.0\.clientid"),
    "data not a list": (page_with(2, lambda d: d.update(data={"clientid": "x"})), r"data: Input should be"),
    "meta without hasnext": (page_with(2, lambda d: d["meta"].pop("hasnext")), r"meta\.hasnext: Field required"),
    "meta of another page": (page_with(2, lambda d: d["meta"].update(page=1)), r"asked for page 2, got page 1"),
    "client on another node": (
        page_with(2, _set("node", OTHER_NODE)),
        rf"client 'heavy-publisher' is on node '{OTHER_NODE}', not '{NODE}'",
    ),
    "401 bad key": (
        Reply(401, raw("error_bad_api_key.json")),
        r"HTTP 401 BAD_API_KEY_OR_SECRET: Check api_key/api_secret \(check api_key / api_secret\)",
    ),
    "403 role": (Reply(403, raw("error_unauthorized_role.json")), r"HTTP 403 UNAUTHORIZED_ROLE: .*role may not"),
    "500 rpc": (Reply(500, raw("error_internal.json")), r"HTTP 500 INTERNAL_ERROR: \{badrpc"),
    "503 plain text": (Reply(503, b"upstream\nconnect error", content_type="text/plain"), "HTTP 503 upstream connect"),
    "redirect to a login page": (Reply(302, b""), r"HTTP 302 empty body"),
    "timeout": (Reply(200, raw("clients_page2.json"), delay=1.0), r"no answer within 0\.3 s"),
}


@pytest.mark.parametrize("case", sorted(BAD_PAGES))
def test_a_bad_listing_raises_one_line_and_keeps_the_baseline(
    case: str, make: Factory, emqx: FakeEmqx, clock: FakeClock
) -> None:
    reply, message = BAD_PAGES[case]
    adapter = make(timeout=0.3)
    adapter.clients()
    clock.now += 10.0
    emqx.queue("GET", f"{CLIENTS}?page=1", page_with(1, advance_counters(10.0, {"sensor-0001": 4.0})))
    emqx.queue("GET", f"{CLIENTS}?page=2", reply)

    with pytest.raises(EvictionError, match=message) as caught:
        adapter.clients()
    assert "\n" not in str(caught.value)
    assert str(caught.value).startswith(f"EMQX at {emqx.url}: GET /api/v5/clients")

    clock.now += 10.0  # the failed listing did not become the baseline: the rate is over the 20 s since the first
    emqx.queue("GET", f"{CLIENTS}?page=1", page_with(1, advance_counters(20.0, {"sensor-0001": 4.0})))
    assert {c.client_id: c for c in adapter.clients()}["sensor-0001"].messages_in_per_s == pytest.approx(4.0)


def test_no_broker_at_the_address_is_one_line(make: Factory) -> None:
    with contextlib.closing(__import__("socket").socket()) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(EvictionError, match=rf"EMQX at http://127\.0\.0\.1:{port}: GET /api/v5/clients: ") as caught:
        make(base_url=f"http://127.0.0.1:{port}").clients()
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("base_url", "emqx:18083"),
        ("node", ""),
        ("timeout", 0),
        ("page_limit", 10_001),
        ("page_limit", 0),
        ("max_pages", 0),
        ("max_clients_per_command", 0),
        ("max_rate", float("inf")),
        ("max_rate", 0.0),
    ],
)
def test_a_wrong_setting_is_refused_at_construction(make: Factory, setting: str, value: Any) -> None:
    with pytest.raises(ValueError, match="EmqxEvictionAdapter: "):
        make(**{setting: value})


# --- eviction ------------------------------------------------------------------------------------------
LIGHT = ["sensor-0001", "gateway-7", "heavy-publisher"]


def test_evict_paces_the_kicks_and_says_what_emqx_sends(make: Factory, emqx: FakeEmqx, clock: FakeClock) -> None:
    start = clock.now
    result = make().evict(LIGHT, max_per_second=4.0, server_reference="node3.example:1883")

    assert result.evicted == tuple(LIGHT)
    assert (result.unknown, result.refused) == ((), ())
    assert result.reason.startswith("3 evicted. " + KICK_NOTE)
    assert "0x98" in result.reason and "asked for 0x9c with server reference node3.example:1883" in result.reason
    assert [d.path for d in emqx.deletes()] == [f"{CLIENTS}/{c}" for c in LIGHT]
    assert [d.at - start for d in emqx.deletes()] == pytest.approx([0.0, 0.25, 0.5])
    assert sum(clock.sleeps) == pytest.approx(0.5)
    assert set(emqx.clients) == {"plant/line-2", "mqtt5-persistent"}


def test_pacing_never_exceeds_the_rate_even_when_requests_take_time(
    make: Factory, emqx: FakeEmqx, clock: FakeClock
) -> None:
    """Each kick here costs 0.3 s of (fake) time: a rate of 10/s cannot be kept, and the kicks go back to back."""
    real_answer = emqx.answer

    def slow_answer(method: str, raw_path: str, headers: Any) -> Reply:
        if method == "DELETE":
            clock.now += 0.3
        return real_answer(method, raw_path, headers)

    emqx.answer = slow_answer  # type: ignore[method-assign]
    make().evict(LIGHT, max_per_second=10.0)
    times = [d.at for d in emqx.deletes()]
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    assert gaps == pytest.approx([0.3, 0.3])
    assert clock.sleeps == []


def test_a_kick_percent_encodes_the_client_id(make: Factory, emqx: FakeEmqx) -> None:
    result = make().evict(["plant/line-2"], max_per_second=1.0, allow_persistent=True)
    assert result.evicted == ("plant/line-2",)
    assert [(d.raw_path, d.path) for d in emqx.deletes()] == [(f"{CLIENTS}/plant%2Fline-2", f"{CLIENTS}/plant/line-2")]


def test_evict_nothing_asks_nothing(make: Factory, emqx: FakeEmqx) -> None:
    assert make().evict([], max_per_second=1.0).reason == "nothing to evict"
    assert emqx.seen == []


REFUSED_COMMANDS: dict[str, tuple[dict[str, Any], str]] = {
    "more clients than the bound": (
        {"client_ids": [f"c{i}" for i in range(11)]},
        "11 clients is more than the bound of 10 per command",
    ),
    "rate 0": ({"max_per_second": 0}, r"max_per_second 0 is not in \(0, 100\]"),
    "negative rate": ({"max_per_second": -5.0}, r"max_per_second -5\.0 is not in"),
    "rate above the bound": ({"max_per_second": 100.5}, r"max_per_second 100\.5 is not in"),
    "rate NaN": ({"max_per_second": float("nan")}, r"max_per_second nan is not in"),
    "rate infinite": ({"max_per_second": float("inf")}, r"max_per_second inf is not in"),
    "rate as a string": ({"max_per_second": "10"}, r"max_per_second '10' is not in"),
    "not an eviction reason code": ({"reason_code": 0x00}, r"reason code 0 is not one of 0x98, 0x9c, 0x9d"),
    "repeated id": ({"client_ids": ["sensor-0001", "gateway-7", "sensor-0001"]}, "client ids repeat"),
    "empty id": ({"client_ids": ["sensor-0001", ""]}, "client ids must be non-empty strings"),
    "id not a string": ({"client_ids": ["sensor-0001", 7]}, "client ids must be non-empty strings"),
    "one string instead of a list": ({"client_ids": "sensor-0001"}, "not one string"),
}


@pytest.mark.parametrize("case", sorted(REFUSED_COMMANDS))
def test_a_command_over_a_bound_or_malformed_is_refused_whole_without_a_request(
    case: str, make: Factory, emqx: FakeEmqx
) -> None:
    changes, message = REFUSED_COMMANDS[case]
    command: dict[str, Any] = {"client_ids": LIGHT, "max_per_second": 10.0, **changes}
    with pytest.raises(EvictionError, match=message) as caught:
        make().evict(command.pop("client_ids"), **command)
    assert "\n" not in str(caught.value)
    assert emqx.seen == []
    assert set(emqx.clients) == set(recorded_clients())


def test_an_unknown_client_or_one_on_another_node_means_nobody_is_kicked(make: Factory, emqx: FakeEmqx) -> None:
    emqx.clients["heavy-publisher"]["node"] = OTHER_NODE
    result = make().evict([*LIGHT, "never-connected"], max_per_second=10.0)

    assert result.evicted == ()
    assert result.unknown == ("heavy-publisher", "never-connected")
    assert result.reason == f"nothing evicted: 2 not connected on {NODE}"
    assert emqx.deletes() == []
    assert set(emqx.clients) == set(recorded_clients())


def test_a_disconnected_session_counts_as_not_connected(make: Factory, emqx: FakeEmqx) -> None:
    emqx.clients["gateway-7"]["connected"] = False
    assert make().evict(LIGHT, max_per_second=10.0).unknown == ("gateway-7",)
    assert emqx.deletes() == []


def test_persistent_clients_are_refused_without_the_opt_in_and_moved_with_it(make: Factory, emqx: FakeEmqx) -> None:
    ids = ["sensor-0001", "plant/line-2", "mqtt5-persistent"]
    refused = make().evict(ids, max_per_second=10.0)
    assert (refused.evicted, refused.refused) == ((), ("plant/line-2", "mqtt5-persistent"))
    assert "2 with a persistent session (allow_persistent not set)" in refused.reason
    assert emqx.deletes() == []

    moved = make().evict(ids, max_per_second=10.0, allow_persistent=True, reason_code=REASON_SERVER_MOVED)
    assert moved.evicted == tuple(ids)
    assert "asked for 0x9d" in moved.reason


BAD_LOOKUPS: dict[str, tuple[Reply, str]] = {
    "401 bad key": (Reply(401, raw("error_bad_api_key.json")), "HTTP 401 BAD_API_KEY_OR_SECRET"),
    "403 role": (Reply(403, raw("error_unauthorized_role.json")), "HTTP 403 UNAUTHORIZED_ROLE"),
    "500 rpc": (Reply(500, raw("error_internal.json")), "HTTP 500 INTERNAL_ERROR"),
    "404 of a wrong path": (Reply(404, b"Not Found", content_type="text/plain"), "HTTP 404 Not Found"),
    "malformed JSON": (Reply(200, b'{"clientid": '), "bad answer: .*Invalid JSON"),
    "missing expiry_interval": (
        reply_json(200, {k: v for k, v in recorded_clients()["gateway-7"].items() if k != "expiry_interval"}),
        "bad answer: expiry_interval: Field required",
    ),
    "expiry as a string": (
        reply_json(200, {**recorded_clients()["gateway-7"], "expiry_interval": "0"}),
        "bad answer: expiry_interval: Input should be a valid integer",
    ),
    "another client's answer": (
        reply_json(200, recorded_clients()["sensor-0001"]),
        "answered for client 'sensor-0001'",
    ),
    "timeout": (Reply(200, b"{}", delay=1.0), r"no answer within 0\.3 s"),
}


@pytest.mark.parametrize("case", sorted(BAD_LOOKUPS))
def test_a_bad_answer_before_the_first_kick_changes_nothing(case: str, make: Factory, emqx: FakeEmqx) -> None:
    reply, message = BAD_LOOKUPS[case]
    emqx.queue("GET", f"{CLIENTS}/gateway-7", reply)
    with pytest.raises(EvictionError, match=message) as caught:
        make(timeout=0.3).evict(LIGHT, max_per_second=10.0)
    assert not isinstance(caught.value, EmqxEvictionInterrupted)
    assert "\n" not in str(caught.value)
    assert str(caught.value).startswith(f"EMQX at {emqx.url}: GET /api/v5/clients/gateway-7: ")
    assert emqx.deletes() == []
    assert set(emqx.clients) == set(recorded_clients())


def test_a_failure_part_way_stops_the_batch_and_names_who_was_kicked(
    make: Factory, emqx: FakeEmqx, clock: FakeClock
) -> None:
    emqx.queue("DELETE", f"{CLIENTS}/gateway-7", Reply(503, b"", delay=0.0))
    with pytest.raises(EmqxEvictionInterrupted, match="HTTP 503 empty body; batch stopped after evicting 1 of 3") as c:
        make().evict(LIGHT, max_per_second=10.0)
    assert (c.value.evicted, c.value.remaining) == (("sensor-0001",), ("gateway-7", "heavy-publisher"))
    assert "\n" not in str(c.value)
    assert [d.path for d in emqx.deletes()] == [f"{CLIENTS}/sensor-0001", f"{CLIENTS}/gateway-7"]
    assert "heavy-publisher" in emqx.clients


def test_clients_that_leave_or_move_during_the_batch_are_unknown_not_kicked_elsewhere(
    make: Factory, emqx: FakeEmqx
) -> None:
    moved = reply_json(200, {**recorded_clients()["gateway-7"], "node": OTHER_NODE})
    emqx.queue("GET", f"{CLIENTS}/gateway-7", None, moved)  # on this node at the check, elsewhere at its kick
    emqx.queue("DELETE", f"{CLIENTS}/heavy-publisher", Reply(404, raw("error_clientid_not_found.json")))
    result = make().evict(LIGHT, max_per_second=10.0)

    assert result.evicted == ("sensor-0001",)
    assert result.unknown == ("gateway-7", "heavy-publisher")
    assert result.reason.startswith("1 evicted; 2 left by themselves. ")
    assert [d.path for d in emqx.deletes()] == [f"{CLIENTS}/sensor-0001", f"{CLIENTS}/heavy-publisher"]
    assert "gateway-7" in emqx.clients
