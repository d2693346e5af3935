"""mqttlb.http_call: a request's transport failures come back as the caller's error, in one line."""

from __future__ import annotations

import socket

import pytest
import requests

from mqttlb.http_call import one_line, send


class CallError(Exception):
    pass


def test_one_line_folds_white_space_and_cuts_long_text() -> None:
    assert one_line("a\n  b\tc ") == "a b c"
    assert one_line("x" * 300) == "x" * 199 + "…"
    assert one_line("abcdef", limit=4) == "abc…"


def test_a_silent_server_is_a_timeout_in_the_callers_error() -> None:
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)  # completes the handshake, never answers
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/x"
        with pytest.raises(CallError, match=r"^GET x: no answer within 0\.2 s$"), requests.Session() as session:
            send(session, "GET", url, what="GET x", error=CallError, timeout=(1.0, 0.2))


def test_an_unreachable_server_names_what_could_not_be_reached() -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]  # bound, not listening: the connection is refused
        with pytest.raises(CallError) as caught, requests.Session() as session:
            send(session, "POST", f"http://127.0.0.1:{port}/", what="POST y", error=CallError, timeout=2,
                 unreachable="cannot reach the thing: ")
    message = str(caught.value)
    assert message.startswith("POST y: cannot reach the thing: ") and "\n" not in message
