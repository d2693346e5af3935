"""``mqttlb loadgen`` refuses bad input before it starts: one line naming the problem, exit 2, no
connection made and no report written (trial: ``--profile nonsense:1`` used to run one publisher)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from stackutil import tcp_listener

from mqttlb.loadgen import cli
from mqttlb.loadgen.workload import WorkloadError, load_workload_yaml, parse_profile, role_stated

ROLE = "does not say what its clients do"


@pytest.fixture
def listener():
    """A TCP listener standing in for the broker: a refused run never connects to it."""
    with tcp_listener(0.2) as server:
        yield server


def _no_connection(server: socket.socket) -> bool:
    try:
        server.accept()[0].close()
    except TimeoutError:
        return True
    return False


def _exit_code(argv: list[str]) -> int | str | None:
    """``mqttlb loadgen argv``'s exit code, whether main returns it or argparse exits."""
    try:
        return cli.main(argv)
    except SystemExit as exc:
        return exc.code


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--profile", "nonsense:1"], f"profile 'nonsense:1': {ROLE}"),
        (["--profile", "sbu:2"], f"profile 'sbu:2': {ROLE}"),
        (["--profile", "heavy:3:qos=1"], f"profile 'heavy:3:qos=1': {ROLE}"),
        (["--profile", "heavy:3:session=exp:5"], ROLE),
        (["--profile", "pub:1", "--profile", "nonsense:1"], "profile 'nonsense:1'"),
        (["--profile", "nonsense"], "expected NAME:COUNT"),
        (["--profile", "x:many:rate=1"], "COUNT must be an integer"),
        (["--profile", "x:0:rate=1"], "count"),
        (["--profile", "x:1:rate=1,colour=red"], "bad option 'colour=red'"),
        (["--profile", "x:1:rate=fast"], "rate"),
        (["--profile", "x:1:rate=1,qos=2"], "qos must be 0 or 1"),
        (["--profile", "x:1:rate=1,session=gauss:3"], "churn 'gauss:3'"),
        (["--profile", "sub:1:echo=true"], "echo applies to publishers only"),
        (["--profile", "pub:1", "--profile", "pub:1"], "profile names must be unique"),
        (["--profile", "pub:1", "--duration", "nan"], "not a finite number: 'nan'"),
        (["--profile", "pub:1", "--duration", "inf"], "not a finite number: 'inf'"),
        (["--profile", "pub:1", "--connect-rate", "nan"], "not a finite number"),
        (["--profile", "pub:1", "--drain=-inf"], "not a finite number"),
        (["--profile", "pub:1", "--progress-interval", "nan"], "not a finite number"),
        (["--profile", "pub:1", "--connect-timeout", "0"], "connect_timeout"),
        (["--profile", "pub:1", "--churn", "exp:0"], "churn 'exp:0'"),
        (["--profile", "pub:1", "--host", "192.0.2.1"], "not loopback"),
        (["--profile", "pub:1", "--workers", "0"], "--workers must be 1..64"),
        (["--profile", "pub:1", "--json-out", "/no-such-dir-mqttlb/r.json"], "directory /no-such-dir-mqttlb does not"),
        (["--profile", "pub:1", "--json-out", "{tmp}"], "is a directory"),
    ],
)
def test_bad_input_is_refused_before_anything_starts(args, message, listener, tmp_path, capsys):
    argv = [a.format(tmp=tmp_path) for a in args]
    argv += [] if "--duration" in argv else ["--duration", "1"]
    argv += [] if "--json-out" in argv else ["--json-out", str(tmp_path / "r.json")]
    assert _exit_code([*argv, "--port", str(listener.getsockname()[1]), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err, err
    assert _no_connection(listener), "a refused run connected to the broker"
    assert list(tmp_path.iterdir()) == [], "a refused run left files behind"
    assert not Path("/no-such-dir-mqttlb").exists()


@pytest.mark.parametrize(
    ("spec", "role"),
    [
        ("sub:2", "sub"),
        ("subscribers:2", "sub"),
        ("pub:1", "pub"),
        ("pub-fast:1", "pub"),
        ("x:1:rate=0", "pub"),
        ("x:1:size=10", "pub"),
        ("x:1:echo=false", "pub"),
        ("x:1:role=pub", "pub"),
        ("listeners:3:role=sub,qos=1", "sub"),
    ],
)
def test_a_role_stated_by_name_key_or_role_is_accepted(spec, role):
    assert parse_profile(spec).role == role


def test_the_workload_file_follows_the_same_rule():
    with pytest.raises(WorkloadError, match=rf"profiles\[1\] \(sensor\): {ROLE}"):
        load_workload_yaml("duration: 1\nprofiles:\n  - 'sub:1'\n  - {name: sensor, count: 5, qos: 1}\n")
    ok = load_workload_yaml("duration: 1\nprofiles:\n  - {name: sensor, count: 5, rate: 0.2}\n  - 'sub:1'\n")
    assert [p.role for p in ok.profiles] == ["pub", "sub"]
    assert not role_stated("sensor", frozenset({"qos", "session", "topic", "start", "pause"}))


def test_a_good_json_out_is_accepted(tmp_path):
    assert cli.output_problem(tmp_path / "r.json") is None
    assert list(tmp_path.iterdir()) == [], "the probe file is removed"


def test_a_run_where_no_client_ever_connects_exits_non_zero(tmp_path, capsys):
    """Trial: `mqttlb loadgen --port 1` exited 0 although every connect failed."""
    with socket.socket() as probe:  # a loopback port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    argv = ["--profile", "sensor:3:rate=1", "--duration", "1", "--port", str(port), "--quiet"]
    assert _exit_code([*argv, "--json-out", str(tmp_path / "r.json")]) == cli.EXIT_NO_CONNECTION == 4
    out, err = capsys.readouterr()
    assert "connections: 0 ok of" in out, "the report is still printed"
    assert f"no client ever connected to 127.0.0.1:{port} (" in err and "attempts failed: tcp connect refused=" in err
    assert (tmp_path / "r.json").exists()
