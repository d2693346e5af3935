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
  refused until the new process listens again.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)


def restart_in_place() -> None:
    """Replace this process with a fresh run of the same command line (``sys.orig_argv``, the same
    interpreter, working directory and environment).  Does not return; raises OSError if exec fails."""
    logging.shutdown()  # flush every handler: the exec discards buffers
    os.execv(sys.executable, [sys.executable, *sys.orig_argv[1:]])


class Reloader:
    """The SIGHUP thread of one command; see the module docstring.

    ``what``: the command's name for the log lines; ``check()``: validates the new config, returns a
    short description of what changed (for the log) or raises with a one-line message;
    ``prepare()``: stops the command's own threads before the restart; ``restart``: what restarts
    the process (:func:`restart_in_place`; tests pass their own).
    """

    def __init__(
        self,
        what: str,
        check: Callable[[], str],
        prepare: Callable[[], None] = lambda: None,
        restart: Callable[[], None] = restart_in_place,
    ) -> None:
        self.what = what
        self.check = check
        self.prepare = prepare
        self.restart = restart
        self.requested = threading.Event()
        self.refused = 0  # SIGHUPs whose config was refused (for tests and logs)

    def handle_once(self) -> bool:
        """Check the new config; refused: log and return False; accepted: prepare and restart (True
        when ``restart`` returns, as a test's does)."""
        try:
            changed = self.check()
        except Exception as exc:  # noqa: BLE001 (whatever a start would refuse, the running config stays)
            self.refused += 1
            log.error("%s: SIGHUP: new config refused, still running the old one: %s", self.what, _one_line(exc))
            return False
        log.warning("%s: SIGHUP: new config accepted (%s); restarting in place", self.what, changed)
        self.prepare()
        self.restart()
        return True

    def run(self) -> None:
        """Serve SIGHUPs until the process ends (a daemon thread runs this)."""
        while True:
            self.requested.wait()
            self.requested.clear()
            self.handle_once()


def reload_on_sighup(
    what: str, check: Callable[[], str], prepare: Callable[[], None] = lambda: None
) -> Reloader | None:
    """Install the SIGHUP handler and start the reload thread; None (nothing installed) when not
    called from the main thread, where Python cannot set signal handlers."""
    if threading.current_thread() is not threading.main_thread():
        return None
    reloader = Reloader(what, check, prepare)
    signal.signal(signal.SIGHUP, lambda signum, frame: reloader.requested.set())
    threading.Thread(target=reloader.run, daemon=True, name="sighup-reload").start()
    return reloader


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:500]
