"""``mqttlb loadgen`` without ``--port`` loads the stack's Envoy MQTT listener (``ports.envoy_listener`` of the
stack file, ``$MQTTLB_STACK_FILE`` included), not a fixed 1883 (trial: a stack moved to another port got
no load at all)."""

from __future__ import annotations

from pathlib import Path

import pytest
from stackutil import tcp_listener

from mqttlb.loadgen import cli


@pytest.fixture
def listener():
    """A TCP listener standing in for the stack's Envoy (it never answers CONNECT)."""
    with tcp_listener(5) as server:
        yield server


def _stack_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str) -> None:
    path = tmp_path / "stack.yaml"
    path.write_text(text)
    monkeypatch.setenv("MQTTLB_STACK_FILE", str(path))
    monkeypatch.setenv("MQTTLB_STATE_DIR", str(tmp_path / "state"))


def _workload(argv: list[str]):
    return cli.workload_from_args(cli.build_parser().parse_args(argv))


def test_without_port_loadgen_connects_to_the_stacks_listener(listener, tmp_path, monkeypatch, capsys):
    port = listener.getsockname()[1]
    _stack_file(tmp_path, monkeypatch, f"ports: {{envoy_listener: {port}}}\n")
    argv = ["--profile", "sub:1", "--duration", "1", "--connect-timeout", "1", "--quiet"]
    assert cli.main(argv) == cli.EXIT_NO_CONNECTION  # the stand-in never sends CONNACK
    listener.accept()[0].close()  # ... but the client did connect to it
    assert f"no client ever connected to 127.0.0.1:{port} (" in capsys.readouterr().err
    assert not (tmp_path / "state").exists()


def test_port_flag_and_workload_file_win_over_the_stack(tmp_path, monkeypatch):
    _stack_file(tmp_path, monkeypatch, "ports: {envoy_listener: 19883}\n")
    assert _workload(["--profile", "sub:1", "--duration", "1"]).port == 19883
    assert _workload(["--profile", "sub:1", "--duration", "1", "--port", "18831"]).port == 18831
    workload = tmp_path / "workload.yaml"
    workload.write_text("duration: 1\nport: 18832\nprofiles: ['sub:1']\n")
    assert _workload(["--workload", str(workload)]).port == 18832
    assert _workload(["--workload", str(workload), "--port", "18833"]).port == 18833
    workload.write_text("duration: 1\nprofiles: ['sub:1']\n")
    assert _workload(["--workload", str(workload)]).port == 19883


def test_an_unusable_stack_file_is_refused_only_when_its_port_is_needed(tmp_path, monkeypatch, capsys):
    _stack_file(tmp_path, monkeypatch, "ports: {envoy_listener: 0}\n")
    assert cli.main(["--profile", "sub:1", "--duration", "1", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err == (
        f"mqttlb loadgen: no --port given, and the stack's listener port is unknown: {tmp_path}/stack.yaml: "
        "ports.envoy_listener: Input should be greater than or equal to 1 (got 0)\n"
    )
    assert _workload(["--profile", "sub:1", "--duration", "1", "--port", "18831"]).port == 18831


def test_help_says_where_the_default_port_comes_from(capsys):
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "ports.envoy_listener" in help_text and "MQTTLB_STACK_FILE" in help_text
