"""`mqttlb stack up|down|status|render`: the local stack's command line."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mqttlb.commandline import folder, parse_args, plural, refuse, seconds_up_to
from mqttlb.logs import add_log_flags
from mqttlb.stack.config import (
    ENV_SCALARS,
    PORT_ENV_PREFIX,
    StackConfigError,
    check_binaries,
    load_stack_config,
    recorded_config,
    unknown_env_vars,
)
from mqttlb.stack.runner import Stack, StackError

DESCRIPTION = """\
Run the whole mqttlb stack on 127.0.0.1 under supervisord: Envoy (MQTT listener and EDS
cluster), N Mosquitto nodes, the broker and Envoy exporters, Prometheus, Alertmanager and the
rebalancing webhook.  Settings come from stack/stack.yaml, a file named with --stack-file or
MQTTLB_STACK_FILE, and environment variables (MQTTLB_NODES or NODES, MQTTLB_STATE_DIR,
MQTTLB_LB_POLICY, MQTTLB_NODE_CPU_CORES, MQTTLB_DRY_RUN, MQTTLB_EDS, MQTTLB_PORT_<NAME>)."""


def _add_stack_options(parser: argparse.ArgumentParser) -> None:
    """The options every subcommand takes: ``--stack-file``, ``--nodes``, ``--state-dir`` and the log flags."""
    parser.add_argument("--stack-file", type=Path, help="stack file with settings that override stack/stack.yaml")
    parser.add_argument("--nodes", type=int, help="number of Mosquitto nodes (overrides the stack file)")
    parser.add_argument("--state-dir", type=folder, help="where configs, logs, data and PIDs live (default .stack)")
    add_log_flags(parser)


def build_parser() -> argparse.ArgumentParser:
    """``mqttlb stack [options] COMMAND [options]``: the stack's options go before or after the command
    (``stack check --stack-file X`` as ``stack --stack-file X check``); given in both places, the later wins."""
    parser = argparse.ArgumentParser(
        prog="mqttlb stack", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    _add_stack_options(parser)
    # The same options after the command: without defaults, so that leaving them out there keeps the values
    # given (or defaulted) before it.
    after = argparse.ArgumentParser(add_help=False)
    _add_stack_options(after)
    for action in after._actions:
        action.default = argparse.SUPPRESS
    sub = parser.add_subparsers(dest="command", required=True)

    def add(name: str, help: str) -> argparse.ArgumentParser:  # noqa: A002 -- argparse's keyword
        return sub.add_parser(name, help=help, parents=[after], description=help)

    up = add(
        "up",
        "render configs, start everything, wait until each part answers; on a running stack, start "
        "only the parts that are not running",
    )
    up.add_argument("--timeout", type=seconds_up_to(3600), default=90.0,
                    help="seconds to wait for readiness, more than 0 and at most 3600 (default 90)")
    add("down", "stop every process the stack started (by PID) and check no listener is left")
    add("status", "one line per component; exit status 1 if any is down")
    add("check", "validate the stack file, the state dir and the binaries without starting anything")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = parse_args(build_parser(), argv)
    overrides: dict[str, object] = {}
    if args.nodes is not None:
        overrides["nodes"] = args.nodes
    if args.state_dir is not None:
        overrides["state_dir"] = str(args.state_dir.resolve())
    try:
        cfg = load_stack_config(
            args.stack_file,
            overrides=overrides,
            overrides_source="command line",
            writable_state_dir=args.command in ("up", "check"),
        )
        if args.command in ("down", "status"):
            # A running stack is described by what it was started with, whatever the files say now.
            cfg = recorded_config(cfg.state_dir) or cfg
        stack = Stack(cfg)
        if args.command in ("up", "check"):
            for var in unknown_env_vars():
                print(
                    f"mqttlb stack: warning: environment variable {var} is not an mqttlb setting; ignored "
                    f"(stack settings: {', '.join(sorted(v for v in ENV_SCALARS if v.startswith('MQTTLB_')))}, "
                    f"{PORT_ENV_PREFIX}<NAME>)",
                    file=sys.stderr,
                )
        if args.command == "up":
            stack.up(timeout=args.timeout)
        elif args.command == "down":
            stack.down()
        elif args.command == "check":
            check_binaries(cfg.broker)
            print(f"stack config OK: {plural(cfg.nodes, cfg.broker + ' node')}, state in {cfg.state_dir}")
        else:
            statuses = stack.status()
            if not stack.is_running():
                print(f"stack in {cfg.state_dir} is not running")
            for status in statuses:
                print(status.line())
            for line in stack.held_drain_lines() if stack.is_running() else []:
                print(line)
            return 0 if stack.is_running() and all(s.up for s in statuses) else 1
    except (StackConfigError, StackError) as exc:
        return refuse(exc, "mqttlb stack: error")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
