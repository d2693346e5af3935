"""The `mqttlb` entry point: every subcommand answers --help; unknown commands are refused."""

from __future__ import annotations

import subprocess
import sys

import pytest

from mqttlb.cli import COMMANDS


def mqttlb(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mqttlb.cli", *args], capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_subcommand_documents_itself(command: str) -> None:
    result = mqttlb(command, "--help")
    assert result.returncode == 0, result.stderr
    assert "usage:" in result.stdout and len(result.stdout.splitlines()) > 5


def test_unknown_command_is_refused_with_the_list() -> None:
    result = mqttlb("rebalance-everything")
    assert result.returncode == 2
    assert "unknown command 'rebalance-everything'" in result.stderr
    assert all(name in result.stderr for name in COMMANDS)


def test_version() -> None:
    assert mqttlb("--version").stdout.startswith("mqttlb ")
