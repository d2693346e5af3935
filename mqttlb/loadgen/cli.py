"""``mqttlb loadgen``: heterogeneous MQTT load with churn, delivery check and a final report.

Examples::

    mqttlb loadgen --duration 60 --seed 7 \\
        --profile heavy:4:rate=500,size=256,qos=0 \\
        --profile sensor:200:rate=0.2,qos=1,session=exp:30 --profile sub:2
    mqttlb loadgen --workload workload.yaml --duration 30 --json-out report.json
    mqttlb loadgen --port 18831 --duration 20 --profile hot:4:rate=1000   # one broker, no Envoy

Without ``--port`` (and no ``port:`` in the workload file) the clients connect to the stack's Envoy MQTT
listener: ``ports.envoy_listener`` of the stack file (``$MQTTLB_STACK_FILE`` over stack/stack.yaml, as
``mqttlb stack`` reads it; 1883 as shipped).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import math
import os
import signal
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

from mqttlb.commandline import argument_type, parse_args, refuse
from mqttlb.loadgen.engine import run
from mqttlb.loadgen.limits import raise_nofile_limit
from mqttlb.loadgen.shard import run_sharded
from mqttlb.loadgen.workload import Churn, WorkloadError, build_workload, load_workload_yaml, parse_profile
from mqttlb.logs import add_log_flags
from mqttlb.stack.config import StackConfigError, load_stack_config
from mqttlb.stack.topology import native_topology

log = logging.getLogger("loadgen")

EXIT_LOSS = 3  # bad input exits 2 (mqttlb.commandline.EXIT_BAD_INPUT)
EXIT_NO_CONNECTION = 4  # clients tried to connect and not one ever did


def _finite(text: str) -> float:
    """A float flag's value; ``nan`` and ``inf`` are refused (ValueError) rather than compared."""
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"not a finite number: {text!r}")
    return value


finite = argument_type(_finite)


def output_problem(path: Path) -> str | None:
    """Why the report cannot be written to ``path`` (checked before the run, so a long run does not end
    in a traceback), or None: ``path`` must not be a directory, and its directory must exist and take a
    new file (tried with a temporary file, removed at once)."""
    if path.is_dir():
        return f"--json-out {path}: is a directory"
    parent = path.parent
    if not parent.is_dir():
        return f"--json-out {path}: directory {parent} does not exist"
    try:
        with tempfile.NamedTemporaryFile(dir=parent, prefix=".mqttlb-loadgen-probe-"):
            pass
    except OSError as exc:
        return f"--json-out {path}: cannot write in {parent}: {exc.strerror or exc}"
    if path.exists() and not os.access(path, os.W_OK):
        return f"--json-out {path}: not writable"
    return None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mqttlb loadgen",
        description="MQTT load generator: client profiles, QoS 0/1, churn, connect ramp, delivery check.",
        epilog="Profile spec: NAME:COUNT[:key=value,...] with keys role (pub|sub; names starting with "
        "'sub' are subscribers, 'pub' publishers; a profile that states its role neither by name, nor by "
        "role=, nor by a publisher key is refused), rate (msg/s per client), size (payload bytes), qos (0|1), echo "
        "(true|false: publisher checks its own delivery; default qos==1), session (churn: exp:MEAN, "
        "uniform:LOW:HIGH or fixed:S), start (s after run start), pause (s before reconnect), topic. "
        f"Exit status: 0 done, 2 bad input (nothing run), {EXIT_LOSS} QoS 1 loss with --fail-on-loss, "
        f"{EXIT_NO_CONNECTION} no client ever connected (the report is printed first).",
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument(
        "--profile",
        action="append",
        metavar="SPEC",
        help="a client profile NAME:COUNT[:key=value,...] (repeatable); NAME is a free label, so the role "
        "must be stated: role=, a publisher key (rate, size, echo), or a name starting with pub or sub",
    )
    src.add_argument("--workload", type=Path, metavar="FILE", help="YAML workload file (see docs/loadgen.md)")
    p.add_argument("--duration", type=finite, help="run length in seconds (required here or in the workload file)")
    p.add_argument("--host", help="broker or Envoy listener address (default 127.0.0.1)")
    p.add_argument(
        "--port",
        type=int,
        help="port (default: the workload file's port, else the stack's Envoy MQTT listener: ports.envoy_listener "
        "of the stack file that `mqttlb stack` reads, $MQTTLB_STACK_FILE over stack/stack.yaml; 1883 as shipped)",
    )
    p.add_argument(
        "--allow-remote",
        action="store_true",
        default=None,
        help="allow a non-loopback host (default: loopback only)",
    )
    p.add_argument("--seed", type=int, help="random seed: the same seed repeats the same run (default 0)")
    p.add_argument("--connect-rate", type=finite, help="connects per second, all clients together (default 500)")
    p.add_argument("--connect-timeout", type=finite, help="seconds for TCP connect + CONNACK (default 5)")
    p.add_argument("--keepalive", type=int, help="MQTT keepalive seconds (default 60)")
    p.add_argument(
        "--max-pending-connects",
        type=int,
        help="connects in progress at once; further clients wait instead of timing out (default 256)",
    )
    p.add_argument(
        "--drain",
        type=finite,
        help="max seconds a delivery-checked client waits for its echoes before leaving (default 2)",
    )
    p.add_argument(
        "--churn",
        metavar="DIST",
        help="session length for profiles without session=: exp:MEAN, uniform:LOW:HIGH, fixed:S",
    )
    p.add_argument("--topic-prefix", help="topic prefix (default mqttlb/load)")
    p.add_argument("--client-prefix", help="client id prefix (default lg)")
    p.add_argument("--progress-interval", type=finite, help="seconds between progress lines (default 5)")
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        help="processes to spread the clients over (default 1; one process sustains about "
        "2,300 connects/s on an idle 2-core machine)",
    )
    p.add_argument(
        "--json-out",
        type=Path,
        metavar="PATH",
        help="write the final report as JSON here (its directory must exist; checked before the run)",
    )
    p.add_argument(
        "--fail-on-loss",
        action="store_true",
        help=f"exit {EXIT_LOSS} if any QoS 1 message was lost or duplicated",
    )
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    add_log_flags(p)
    return p


_SETTINGS = {
    "duration": "duration",
    "host": "host",
    "port": "port",
    "allow_remote": "allow_remote",
    "seed": "seed",
    "connect_rate": "connect_rate",
    "connect_timeout": "connect_timeout",
    "keepalive": "keepalive",
    "drain": "drain",
    "max_pending_connects": "max_pending_connects",
    "topic_prefix": "topic_prefix",
    "client_prefix": "client_prefix",
    "progress_interval": "progress_interval",
}


def stack_listener_port() -> int:
    """The port of the stack's Envoy MQTT listener, as ``mqttlb stack`` lays the stack out
    (:func:`mqttlb.stack.topology.native_topology` of :func:`mqttlb.stack.config.load_stack_config`: the stack
    file, ``$MQTTLB_STACK_FILE``, ``MQTTLB_PORT_ENVOY_LISTENER``).  Raises WorkloadError, one line with the
    stack's own error naming the key and its source."""
    try:
        return native_topology(load_stack_config()).envoy_listener.port
    except StackConfigError as exc:
        raise WorkloadError(f"no --port given, and the stack's listener port is unknown: {exc}") from None


def workload_from_args(args: argparse.Namespace) -> Any:
    """The run's Workload from the flags (they win over a ``--workload`` file); a port set by neither is the
    stack's listener's (:func:`stack_listener_port`).  Raises WorkloadError."""
    settings = {key: getattr(args, attr) for key, attr in _SETTINGS.items() if getattr(args, attr) is not None}
    if args.workload is not None:
        try:
            text = args.workload.read_text()
        except OSError as exc:
            raise WorkloadError(f"cannot read workload file {args.workload}: {exc}") from None
        workload = load_workload_yaml(text, settings, source=str(args.workload))
    else:
        if "duration" not in settings:
            raise WorkloadError("--duration is required (every run is bounded)")
        workload = build_workload([parse_profile(s) for s in args.profile], **settings)
    if args.churn:
        churn = Churn.parse(args.churn)
        profiles = [p if p.session else p.model_copy(update={"session": churn}) for p in workload.profiles]
        workload = workload.model_copy(update={"profiles": profiles})
    if "port" not in workload.model_fields_set:
        workload = workload.model_copy(update={"port": stack_listener_port()})
    return workload


def _progress_line(snap: dict[str, Any]) -> None:
    log.info(
        "t=%5.1fs connected=%d connects=%.0f/s pub=%.0f/s recv=%.0f/s connect_failures=%d disconnects=%d",
        snap["t"],
        snap["connected"],
        snap["connect_rate"],
        snap["publish_rate"],
        snap["receive_rate"],
        snap["connect_failures"],
        snap["unexpected_disconnects"],
    )


async def _run_with_signals(workload: Any, quiet: bool) -> Any:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    return await run(workload, stop=stop, progress=None if quiet else _progress_line)


def _run_in_processes(workload: Any, workers: int, quiet: bool) -> Any:
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        return run_sharded(workload, workers, progress=None if quiet else _progress_line, stop=stop)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(build_parser(), argv)
    try:
        workload = workload_from_args(args)
    except WorkloadError as exc:
        return refuse(exc, "mqttlb loadgen")
    if not 1 <= args.workers <= 64:
        return refuse("--workers must be 1..64", "mqttlb loadgen")
    if args.json_out is not None and (problem := output_problem(args.json_out)) is not None:
        return refuse(problem, "mqttlb loadgen")
    raise_nofile_limit(workload.total_clients)
    if args.workers == 1:
        report = asyncio.run(_run_with_signals(workload, args.quiet))
    else:
        try:
            report = _run_in_processes(workload, args.workers, args.quiet)
        except RuntimeError as exc:
            log.error("%s", exc)
            return 1
    print(report.to_text())
    if args.json_out is not None:
        report.write_json(args.json_out)
        log.info("report written to %s", args.json_out)
    if report.connect_attempts > 0 and report.connects_ok == 0:
        failures = ", ".join(f"{k}={v}" for k, v in sorted(report.connect_failures.items())) or "no answer"
        print(
            f"mqttlb loadgen: no client ever connected to {workload.host}:{workload.port} "
            f"({report.connect_attempts} attempts failed: {failures}); is the listener up?",
            file=sys.stderr,
        )
        return EXIT_NO_CONNECTION
    if args.fail_on_loss and (report.qos1["lost"] or report.qos1["duplicates"]):
        return EXIT_LOSS
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
