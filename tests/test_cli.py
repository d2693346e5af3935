"""The `mqttlb` entry point: every subcommand answers --help; unknown commands are refused."""

from __future__ import annotations

import json
import re
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


def _long_flags(help_text: str) -> set[str]:
    return set(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", help_text))


def test_flags_are_spelled_the_same_in_every_command() -> None:
    """Every command takes --log-level/--log-format; no flag is spelled two ways (e.g. --state_dir)."""
    flags: dict[str, set[str]] = {}
    for command in COMMANDS:
        text = mqttlb(command, "--help").stdout
        assert "--log-level" in text and "--log-format" in text, command
        for flag in _long_flags(text):
            flags.setdefault(flag.replace("_", "-"), set()).add(flag)
        assert "_" not in "".join(_long_flags(text)), f"{command}: flags use dashes, not underscores"
    assert all(len(spellings) == 1 for spellings in flags.values()), flags


@pytest.mark.parametrize("level", ["DEBUG", "debug", "Warning"])
def test_log_level_is_case_insensitive(level: str) -> None:
    result = mqttlb("rules", "--log-level", level, "check", "--dir", "/nonexistent")
    assert "invalid choice" not in result.stderr


def test_json_logs_are_one_object_per_line(tmp_path) -> None:
    result = mqttlb("rules", "--log-format", "json", "generate", "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stderr.splitlines()]
    assert records and all({"time", "level", "logger", "message"} <= set(r) for r in records)
    assert any(r["message"].startswith("wrote ") for r in records)
