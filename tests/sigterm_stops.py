"""A pytest plugin (registered by tests/conftest.py): SIGTERM ends the session the way Ctrl-C does.

The handler raises ``pytest.exit`` (exit status 143 = 128 + SIGTERM), which pytest treats like a
KeyboardInterrupt wherever it lands -- in a test, in a fixture's setup or between tests -- and then
tears every fixture down, so the ``finally`` blocks of fixtures that yield inside ``running_stack``
stop their stacks.  A SIGTERM that arrives while fixtures are being torn down (a stack stopping) waits
until that teardown is over, so no ``stack.down()`` is cut short; further SIGTERMs are ignored once the
session is stopping.  Without the plugin SIGTERM killed the session outright, and a module-scope stack
whose fixture was suspended at its ``yield`` kept running (mqttlb.stack.ephemeral leaves a handler the
program set in charge).
"""

from __future__ import annotations

import signal
from collections.abc import Iterator

import pytest

SIGTERM_EXIT_STATUS = 128 + signal.SIGTERM
REASON = "SIGTERM: stopping the session; fixtures tear down (stacks are stopped)"


class _State:
    tearing_down = False  # fixtures are being torn down: a SIGTERM waits until they are
    pending = False  # a SIGTERM arrived during a teardown


def _stop() -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # the session is stopping: a second SIGTERM changes nothing
    pytest.exit(REASON, SIGTERM_EXIT_STATUS)


def _on_sigterm(signum: int, frame: object) -> None:
    if _State.tearing_down:
        _State.pending = True
        return
    _stop()


def pytest_sessionstart(session: pytest.Session) -> None:
    signal.signal(signal.SIGTERM, _on_sigterm)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    """The fixtures that end with ``item`` (a module's, after its last test) are torn down undisturbed."""
    _State.tearing_down = True
    try:
        yield
    finally:
        _State.tearing_down = False
    if _State.pending:
        _stop()


@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Before pytest tears down what is left (the runner's sessionfinish): a SIGTERM now changes nothing."""
    _State.tearing_down = True


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
