"""Make one broker hot: heavy publishers connecting straight to its port (no Envoy in between).

``drive_node_hot`` is the async form; ``HotNodeDriver`` runs it on a background thread for
synchronous tests (``with HotNodeDriver(port, duration=30) as hot: ...``; leaving the block stops
the publishers and ``hot.report`` holds the result).
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import threading
from collections.abc import Iterator
from types import TracebackType

from mqttlb.loadgen.engine import run
from mqttlb.loadgen.report import Report
from mqttlb.loadgen.workload import Profile, Workload, build_workload


def hot_workload(
    port: int,
    *,
    host: str = "127.0.0.1",
    publishers: int = 4,
    rate: float = 1000.0,
    size: int = 256,
    qos: int = 0,
    duration: float = 30.0,
    seed: int = 0,
    client_prefix: str = "hot",
) -> Workload:
    profile = Profile.model_validate(
        {"name": "hot", "count": publishers, "rate": rate, "size": size, "qos": qos}
    )
    return build_workload(
        [profile],
        host=host,
        port=port,
        duration=duration,
        seed=seed,
        client_prefix=client_prefix,
        topic_prefix=f"mqttlb/hot/{port}",
    )


async def drive_node_hot(port: int, *, stop: asyncio.Event | None = None, **options: object) -> Report:
    """Publish ``publishers`` x ``rate`` msg/s to the broker on ``port`` for ``duration`` seconds."""
    return await run(hot_workload(port, **options), stop=stop)  # type: ignore[arg-type]


class HotNodeDriver:
    """Background-thread wrapper around ``drive_node_hot``; stops when the block ends or at ``duration``."""

    def __init__(self, port: int, **options: object) -> None:
        self._workload = hot_workload(port, **options)  # type: ignore[arg-type]
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._main, name=f"hot-{port}", daemon=True)
        self.report: Report | None = None
        self.error: BaseException | None = None

    def _main(self) -> None:
        async def body() -> None:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            self._ready.set()
            self.report = await run(self._workload, stop=self._stop)

        try:
            asyncio.run(body())
        except BaseException as exc:  # surfaced to the caller by stop()
            self.error = exc
        finally:
            self._ready.set()

    def start(self) -> HotNodeDriver:
        self._thread.start()
        self._ready.wait(timeout=10)
        return self

    def stop(self, timeout: float = 30.0) -> Report | None:
        if self._loop is not None and self._stop is not None and not self._loop.is_closed():
            with contextlib.suppress(RuntimeError):  # loop already finished
                self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout)
        if self.error is not None:
            raise RuntimeError("hot node driver failed") from self.error
        return self.report

    def __enter__(self) -> HotNodeDriver:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


@contextlib.contextmanager
def fan_out_subscribers(port: int, count: int, host: str = "127.0.0.1") -> Iterator[None]:
    """``count`` mosquitto_sub clients on the hot topics of the broker on ``port``.

    Each hot message is then delivered ``count`` times more, which multiplies the broker's CPU
    per message without loading the (Python) publishers: how a small box makes one broker hot.
    """
    procs = [
        subprocess.Popen(
            ["mosquitto_sub", "-h", host, "-p", str(port), "-t", f"mqttlb/hot/{port}/#"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(count)
    ]
    try:
        yield
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
