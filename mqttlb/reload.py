"""SIGHUP reloads a long-running command's config: a bad new config is refused, a good one restarts in place.

A serving mqttlb command (``mqttlb webhook``, the exporters) calls :func:`reload_on_sighup` once it
serves.  SIGHUP then wakes a thread (the signal handler itself only sets an event), which calls
``check()``: it reads and validates the config exactly as a fresh start would and raises for
anything a start would refuse.  Then:

- **refused** (``check()`` raised): one ERROR line, ``SIGHUP: new config refused, still running the
  old one: <why>``; nothing else happens;
- **accepted**: one WARNING line naming what changed, ``prepare()`` (stop the command's loops at a
  clean point), then the process re-executes itself with the command line it was started with
  (``os.execv``: the same PID, so supervisord and systemd keep tracking it; sshd reloads the same
  way).  Every setting is then read the way a start reads it, so nothing is ever half-applied; what
  the command keeps across restarts (the webhook's state file, EDS file and audit log) carries over.
  The listening sockets (opened close-on-exec) are closed during the exec: new connections are
  refused until the new process listens again.  ``check()`` may hand the new process what it checked
  (:class:`Accepted`: environment variables, e.g. the webhook's checked copy of its config file), so
  a file edited again during the restart is not what the new process runs.

SIGHUPs during the restart are queued, never fatal: the exec happens with SIGHUP blocked (a blocked
signal stays pending across exec), and the new process calls :func:`catch_sighup_early` first thing
(``mqttlb.cli`` does, before importing the command), which installs the queueing handler and unblocks
it; :func:`reload_on_sighup` then serves what was queued.  A SIGHUP that came while the old process
checked and prepared is passed on the same way.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

# Set by the SIGHUP handler of catch_sighup_early; the process's Reloader waits on it.
_REQUESTED = threading.Event()


@dataclass(frozen=True)
class Accepted:
    """What a ``check()`` that passed hands over: ``changed`` (for the log line) and ``env``, variables
    added to the new process's environment (names to values)."""

    changed: str
    env: Mapping[str, str] = field(default_factory=dict)


def catch_sighup_early() -> None:
    """Queue SIGHUPs from now on (the handler only sets an event that :func:`reload_on_sighup` serves) and
    unblock SIGHUP, which a restart in place leaves blocked and maybe pending.  Call it first thing in a
    serving command; does nothing outside the main thread."""
    if threading.current_thread() is not threading.main_thread():
        return
    signal.signal(signal.SIGHUP, lambda signum, frame: _REQUESTED.set())
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGHUP})


def restart_in_place(env: Mapping[str, str] | None = None) -> None:
    """Replace this process with a fresh run of the same command line (``sys.orig_argv``, the same
    interpreter, working directory and environment plus ``env``), SIGHUP blocked across the exec (see the
    module docstring).  Does not return; raises OSError if exec fails (SIGHUP is unblocked again)."""
    logging.shutdown()  # flush every handler: the exec discards buffers
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGHUP})
    if _REQUESTED.is_set():  # a SIGHUP came during check/prepare: keep it pending for the new process
        signal.pthread_kill(threading.get_ident(), signal.SIGHUP)
    try:
        os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], {**os.environ, **(env or {})})
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGHUP})


class Reloader:
    """The SIGHUP thread of one command; see the module docstring.

    ``what``: the command's name for the log lines; ``check()``: validates the new config, returns a
    short description of what changed (for the log) or an :class:`Accepted`, or raises with a one-line
    message; ``prepare()``: stops the command's own threads before the restart; ``restart(env)``: what
    restarts the process (:func:`restart_in_place`; tests pass their own); ``requested``: the event a
    SIGHUP sets (default: a new one).
    """

    def __init__(
        self,
        what: str,
        check: Callable[[], str | Accepted],
        prepare: Callable[[], None] = lambda: None,
        restart: Callable[[Mapping[str, str]], None] = restart_in_place,
        requested: threading.Event | None = None,
    ) -> None:
        self.what = what
        self.check = check
        self.prepare = prepare
        self.restart = restart
        self.requested = requested if requested is not None else threading.Event()
        self.refused = 0  # SIGHUPs whose config was refused (for tests and logs)

    def handle_once(self) -> bool:
        """Check the new config; refused: log and return False; accepted: prepare and restart (True
        when ``restart`` returns, as a test's does)."""
        try:
            result = self.check()
        except Exception as exc:  # noqa: BLE001 (whatever a start would refuse, the running config stays)
            self.refused += 1
            log.error("%s: SIGHUP: new config refused, still running the old one: %s", self.what, _one_line(exc))
            return False
        accepted = result if isinstance(result, Accepted) else Accepted(result)
        log.warning("%s: SIGHUP: new config accepted (%s); restarting in place", self.what, accepted.changed)
        self.prepare()
        self.restart(accepted.env)
        return True

    def run(self) -> None:
        """Serve SIGHUPs until the process ends (a daemon thread runs this)."""
        while True:
            self.requested.wait()
            self.requested.clear()
            self.handle_once()


def reload_on_sighup(
    what: str, check: Callable[[], str | Accepted], prepare: Callable[[], None] = lambda: None
) -> Reloader | None:
    """Install the SIGHUP handler (:func:`catch_sighup_early`, if not yet) and start the reload thread,
    which first serves a SIGHUP queued since then; None (nothing installed) when not called from the
    main thread, where Python cannot set signal handlers."""
    if threading.current_thread() is not threading.main_thread():
        return None
    reloader = Reloader(what, check, prepare, requested=_REQUESTED)
    catch_sighup_early()
    threading.Thread(target=reloader.run, daemon=True, name="sighup-reload").start()
    return reloader


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:500]
