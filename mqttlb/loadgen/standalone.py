"""A throw-away Mosquitto on a free loopback port, for tests and benchmarks of the load generator.

Not the stack's brokers (``stack/`` runs those under supervisord); this one lives in a temporary
directory and always dies with its context (the whole process group is killed).
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from mqttlb.procgroup import stop_group
from mqttlb.stack.ephemeral import free_port

LOOPBACK = "127.0.0.1"


def port_accepts(port: int, timeout: float = 0.2) -> bool:
    try:
        with socket.create_connection((LOOPBACK, port), timeout=timeout):
            return True
    except OSError:
        return False


def mosquitto_binary() -> str:
    found = shutil.which("mosquitto")
    if found is None and Path("/usr/sbin/mosquitto").exists():
        found = "/usr/sbin/mosquitto"
    if found is None:
        raise FileNotFoundError("mosquitto not found (apt-get install mosquitto)")
    return found


@dataclass(frozen=True)
class StandaloneBroker:
    port: int
    pid: int
    directory: Path


@contextlib.contextmanager
def standalone_mosquitto(start_timeout: float = 10.0, extra_config: Sequence[str] = ()) -> Iterator[StandaloneBroker]:
    """Start ``mosquitto`` (anonymous, no connection cap, no persistence, plus the ``extra_config`` lines,
    e.g. a plugin's) and yield its port and pid."""
    directory = Path(tempfile.mkdtemp(prefix="mqttlb-lg-broker-"))
    port = free_port()
    conf = directory / "mosquitto.conf"
    # "user root" is ignored unless started as root, where it stops Mosquitto dropping to a user that
    # cannot read a plugin under a 0700 directory (a checkout in `mktemp -d`), as the stack's nodes do.
    conf.write_text(
        f"listener {port} {LOOPBACK}\nallow_anonymous true\nmax_connections -1\npersistence false\nuser root\n"
        "log_dest stderr\nlog_type error\nlog_type warning\n" + "".join(f"{line}\n" for line in extra_config)
    )
    log = (directory / "mosquitto.log").open("wb")
    proc = subprocess.Popen(
        [mosquitto_binary(), "-c", str(conf)], stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        deadline = time.monotonic() + start_timeout
        while not port_accepts(port):
            if proc.poll() is not None or time.monotonic() > deadline:
                output = (directory / "mosquitto.log").read_text()
                raise RuntimeError(f"mosquitto did not start on {port}: {output}")
            time.sleep(0.05)
        yield StandaloneBroker(port=port, pid=proc.pid, directory=directory)
    finally:
        stop_group(proc, grace=5)
        log.close()
        shutil.rmtree(directory, ignore_errors=True)
