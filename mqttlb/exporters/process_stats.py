"""CPU seconds and resident memory of a broker process, found by pid file or listening port."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psutil


@dataclass(frozen=True)
class ProcessSample:
    pid: int
    cpu_seconds: float  # user + system, cumulative since the process started
    resident_memory_bytes: float


class ProcessNotFound(Exception):
    pass


def read_pid_file(path: Path) -> int:
    try:
        text = Path(path).read_text(encoding="ascii", errors="replace").strip()
    except OSError as exc:
        raise ProcessNotFound(f"cannot read pid file {path}: {exc.strerror or exc}") from None
    if not text.isdigit() or int(text) <= 0:
        raise ProcessNotFound(f"pid file {path} does not hold a pid: {text[:40]!r}")
    return int(text)


def pid_listening_on(port: int) -> int:
    for conn in psutil.net_connections(kind="tcp"):
        if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port and conn.pid:
            return conn.pid
    raise ProcessNotFound(f"no process found listening on port {port}")


# A port lookup walks every socket and every process's fds (heavy on a host with 20,000
# connections), so after a miss the next lookup waits this long instead of running every scrape.
PORT_LOOKUP_RETRY_S = 15.0


class ProcessLocator:
    """Keeps the psutil handle between scrapes; re-resolves when the process is gone or the
    pid file names another pid (psutil checks the create time, so a reused pid is detected)."""

    def __init__(
        self, pid_file: Path | None, port: int | None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if pid_file is None and port is None:
            raise ValueError("need a pid file or a port to find the process")
        self._pid_file = pid_file
        self._port = port
        self._process: psutil.Process | None = None
        self._clock = clock
        self._port_miss_at: float | None = None
        self._port_miss = ""

    def _pid_by_port(self, port: int) -> int:
        now = self._clock()
        if self._port_miss_at is not None and now - self._port_miss_at < PORT_LOOKUP_RETRY_S:
            raise ProcessNotFound(f"{self._port_miss} (next lookup in {PORT_LOOKUP_RETRY_S:g} s)")
        try:
            pid = pid_listening_on(port)
        except ProcessNotFound as exc:
            self._port_miss_at, self._port_miss = now, str(exc)
            raise
        self._port_miss_at = None
        return pid

    def _resolve_pid(self) -> int:
        if self._pid_file is not None:
            try:
                return read_pid_file(self._pid_file)
            except ProcessNotFound:
                if self._port is None:
                    raise
        assert self._port is not None
        return self._pid_by_port(self._port)

    def sample(self) -> ProcessSample:
        process = self._process
        if self._pid_file is not None or process is None or not process.is_running():
            pid = self._resolve_pid()
            if process is None or process.pid != pid or not process.is_running():
                try:
                    process = psutil.Process(pid)
                except psutil.Error as exc:
                    self._process = None
                    raise ProcessNotFound(f"process {pid} not available: {exc}") from None
        try:
            with process.oneshot():
                times = process.cpu_times()
                rss = process.memory_info().rss
        except psutil.Error as exc:
            self._process = None
            raise ProcessNotFound(f"process {process.pid} vanished: {exc}") from None
        self._process = process
        return ProcessSample(process.pid, times.user + times.system, float(rss))
