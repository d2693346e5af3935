"""README's "First hour" names only real things: make targets of the Makefile, `mqttlb` commands and
flags their --help lists, and webhook routes the app serves.  (The commands themselves run live in
tests/test_stack_live.py: the printed addresses, `mqttlb test-alert`, the first 12 connections.)"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from webhookhttp import build

from mqttlb.cli import COMMANDS

ROOT = Path(__file__).resolve().parents[1]


def first_hour() -> str:
    text = (ROOT / "README.md").read_text()
    start = text.index("## First hour")
    return text[start : text.index("\n## ", start + 1)]


def test_make_targets_exist() -> None:
    targets = set(re.findall(r"^([a-z][a-z-]*):", (ROOT / "Makefile").read_text(), re.MULTILINE))
    used = set(re.findall(r"`make ([a-z-]+)", first_hour()))
    assert used and used <= targets, used - targets


def test_mqttlb_commands_and_their_flags_exist() -> None:
    calls = re.findall(r"(?:\.venv/bin/)?mqttlb ([a-z-]+)((?: --?[a-z][a-z-]*(?: [^ `-][^ `]*)?)*)", first_hour())
    assert {command for command, _ in calls} >= {"status", "test-alert", "loadgen"}
    flags: dict[str, set[str]] = {}
    for command, rest in calls:
        flags.setdefault(command, set()).update(re.findall(r"--[a-z][a-z-]*", rest))
    for command, used in flags.items():
        assert command in COMMANDS, command
        helped = subprocess.run(
            [sys.executable, "-m", "mqttlb.cli", command, "--help"], capture_output=True, text=True, timeout=60
        )
        assert helped.returncode == 0, helped.stderr
        assert all(flag in helped.stdout for flag in used), (command, used)


def test_webhook_routes_exist(tmp_path: Path) -> None:
    routes = {rule.rule for rule in build(tmp_path, start=False).app.url_map.iter_rules()}
    used = set(re.findall(r"http://127\.0\.0\.1:9643(/[a-z]*/?)", first_hour()))
    assert used and used <= routes, used - routes


def test_the_status_output_shown_is_the_commands_and_every_column_is_explained() -> None:
    """Issue 18's must-show: the status command's output, with its columns explained (trial: `cpu now`)."""
    from mqttlb.status import node_table

    columns = re.split(r" {2,}", node_table([])[0])
    text = first_hour()
    shown = [re.split(r" {2,}", line.strip()) for line in text.splitlines()]
    assert columns in shown, f"no `mqttlb status` output with the columns {columns} in the first hour"
    first_row = " ".join(shown[shown.index(columns) + 1])
    assert re.fullmatch(r"node1 \d\.\d\d \d\.\d\d \d+ \d+ \d+ \d+ up no", first_row), first_row
    unexplained = [column for column in columns[1:] if f"`{column}`" not in text]  # all but `node`
    assert not unexplained, unexplained
