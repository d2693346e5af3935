"""Numeric flags of `mqttlb status`, `test-alert`, `stack up` and `dashboards render` are validated by argparse:
a bad value is a usage error (exit 2, one line naming the flag), never a traceback or a raw ValueError."""

from __future__ import annotations

import pytest

from mqttlb import status, testalert
from mqttlb.dashboards import cli as dashboards_cli
from mqttlb.loadgen.workload import WorkloadError, build_workload, parse_profile
from mqttlb.stack import cli as stack_cli


@pytest.mark.parametrize(
    ("main", "argv", "message"),
    [
        (status.main, ["--timeout", "0"], "argument --timeout: must be more than 0 and at most 300 seconds, got 0"),
        (status.main, ["--timeout", "-1"], "argument --timeout: must be more than 0"),
        (status.main, ["--timeout", "nan"], "argument --timeout: must be more than 0"),
        (status.main, ["--timeout", "inf"], "argument --timeout: must be more than 0"),
        (status.main, ["--timeout", "x"], "argument --timeout: could not convert string to float: 'x'"),
        (status.main, ["--last", "-1"], "argument --last: must be 0 or more, got -1"),
        (testalert.main, ["--duration", "-5"], "argument --duration: must be between 0 and 86400 seconds"),
        (testalert.main, ["--wait", "nan"], "argument --wait: must be between 0 and 86400 seconds"),
        # trial of 2026-12-01: `stack up --timeout nan` started the stack and left it running; -1 started it too
        (stack_cli.main, ["up", "--timeout", "nan"], "argument --timeout: must be more than 0 and at most 3600"),
        (stack_cli.main, ["up", "--timeout", "-1"], "argument --timeout: must be more than 0 and at most 3600"),
        # trial: `dashboards render --timeout -1` failed in the HTTP library instead
        (dashboards_cli.main, ["render", "--timeout", "-1"], "argument --timeout: must be more than 0 and at most 300"),
        # trial: `--state-dir ""` became the current folder, past the stack file's "must name a folder"
        (stack_cli.main, ["--state-dir", "", "check"], "argument --state-dir: must name a folder, not a blank"),
        (stack_cli.main, ["--state-dir", " ", "check"], "argument --state-dir: must name a folder, not a blank"),
        (status.main, ["--state-dir", ""], "argument --state-dir: must name a folder, not a blank"),
    ],
    ids=lambda v: " ".join(v) if isinstance(v, list) else None,
)
def test_a_bad_number_is_a_usage_error(main, argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and err.count("error:") == 1


def test_the_remote_host_refusal_names_the_command_line_flag() -> None:
    with pytest.raises(WorkloadError, match="pass --allow-remote"):
        build_workload([parse_profile("a:1:rate=1")], host="10.1.2.3", duration=1)
