"""Stop a child process started in its own session (``subprocess.Popen(..., start_new_session=True)``).

Its process group is signalled as a whole, so whatever the child started goes with it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from typing import Any

KILL_WAIT_S = 5.0


def stop_group(proc: subprocess.Popen[Any], grace: float) -> None:
    """SIGTERM ``proc``'s process group and wait up to ``grace`` seconds for ``proc`` to exit; then
    SIGKILL the group and wait up to ``KILL_WAIT_S`` more.

    A group that is already gone is not an error.  Raises ``subprocess.TimeoutExpired`` only if
    ``proc`` outlives SIGKILL by ``KILL_WAIT_S`` seconds.
    """
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=KILL_WAIT_S)
