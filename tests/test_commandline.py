"""What the commands share: the parse/log frame, the bad-input exit, argparse types, process-group stop."""

from __future__ import annotations

import argparse
import logging
import subprocess
import sys
import time

import pytest

from mqttlb.commandline import EXIT_BAD_INPUT, argument_type, parse_args, refuse
from mqttlb.logs import add_log_flags
from mqttlb.procgroup import stop_group


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="demo")
    parser.add_argument("--seconds", type=argument_type(float))
    parser.add_argument("--even", type=argument_type(_even, ArithmeticError))
    add_log_flags(parser)
    return parser


def _even(text: str) -> int:
    value = int(text)
    if value % 2:
        raise ArithmeticError(f"{value} is odd")
    return value


def test_parse_args_sets_up_logging_from_the_flags() -> None:
    args = parse_args(_parser(), ["--seconds", "1.5", "--log-level", "WARNING"])
    assert args.seconds == 1.5
    assert logging.getLogger().level == logging.WARNING
    parse_args(_parser(), ["--log-level", "debug"])
    assert logging.getLogger().level == logging.DEBUG


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--seconds", "soon"], "argument --seconds: could not convert string to float: 'soon'"),
        (["--even", "3"], "argument --even: 3 is odd"),
    ],
)
def test_a_converter_error_is_a_usage_error_with_its_message(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        parse_args(_parser(), argv)
    assert exit_.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == f"demo: error: {message}"


def test_only_the_named_errors_are_converted() -> None:
    even = argument_type(_even, ArithmeticError)
    assert even("4") == 4
    with pytest.raises(ValueError):  # int("x") is not an ArithmeticError: a bug, not a usage error
        even("x")
    assert even.__name__ == "_even"


def test_refuse_prints_one_line_and_returns_the_bad_input_status(capsys: pytest.CaptureFixture[str]) -> None:
    assert refuse(ValueError("--out x is a directory")) == EXIT_BAD_INPUT == 2
    assert refuse("--workers must be 1..64", "mqttlb loadgen") == 2
    assert capsys.readouterr().err == "error: --out x is a directory\nmqttlb loadgen: --workers must be 1..64\n"


def _group(script: str) -> subprocess.Popen[bytes]:
    """A Python child in its own session running ``script``; returns once it has printed 'ready'."""
    proc = subprocess.Popen(
        [sys.executable, "-c", script + "\nprint('ready', flush=True)\nimport time\ntime.sleep(60)"],
        stdout=subprocess.PIPE,
        start_new_session=True,
    )
    assert proc.stdout is not None and proc.stdout.readline() == b"ready\n"
    return proc


def test_stop_group_ends_a_child_that_obeys_sigterm() -> None:
    proc = _group("")
    started = time.monotonic()
    stop_group(proc, grace=10)
    proc.stdout.close()  # type: ignore[union-attr]
    assert proc.returncode == -15 and time.monotonic() - started < 5


def test_stop_group_kills_a_child_that_ignores_sigterm_after_the_grace() -> None:
    proc = _group("import signal\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)")
    started = time.monotonic()
    stop_group(proc, grace=0.5)
    assert proc.returncode == -9 and 0.5 <= time.monotonic() - started < 5
    stop_group(proc, grace=0.5)  # the group is gone: not an error
    proc.stdout.close()  # type: ignore[union-attr]
