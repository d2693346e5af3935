"""What a new-user trial (issue 18) fed the commands and they took or crashed on: each is now refused
with one clear line on stderr and exit status 2, and nothing is written.

Also here: counts read as English (``1 node``, not ``1 nodes``) and the shed hold's reason.  The other
trial fixes are tested where their part is: REST EDS refuses unknown fields (tests/test_webhook_app.py),
a resolve never seen firing is ``unknown`` (tests/test_webhook_firing.py), `mqttlb stack status` of
another state dir (tests/test_stack_live.py).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from mqttlb.commandline import plural
from mqttlb.webhook.shedding import ShedState, plan_for

AM = ["alertmanager-config", "--webhook-url", "http://127.0.0.1:9643/alerts", "--token-file", "/run/token"]


@dataclass(frozen=True)
class Case:
    id: str
    argv: list[str]  # after `mqttlb`; {tmp} is the test's directory
    expected: str  # the one stderr line contains this
    files: dict[str, str] = field(default_factory=dict)  # written under {tmp} first
    env: dict[str, str] = field(default_factory=dict)  # set for the command


STACK_CHECK = ["stack", "--stack-file", "{tmp}/s.yaml", "check"]


def bool_for_number(id: str, key: str, value: bool, *, argv: list[str] = STACK_CHECK, before: str = "") -> Case:
    """A stack file {tmp}/s.yaml that sets ``key`` (dotted: ``ports.webhook``) to a bool where a number
    belongs, checked with ``argv``; the line names the file, the key and the bool (after ``before``)."""
    doc: object = value
    for part in reversed(key.split(".")):
        doc = {part: doc}
    expected = f"{before}{{tmp}}/s.yaml: {key}: Input should be a number, not {str(value).lower()}"
    return Case(id, argv, expected, {"s.yaml": yaml.safe_dump(doc)})


CASES = [
    Case("page-receiver-unknown-integration", [*AM, "--page-receiver", "{tmp}/p.yml"],
         "--page-receiver {tmp}/p.yml: amtool check-config refuses it: yaml: unmarshal errors: line * "
         "field foo_configs not found in type config.plain", {"p.yml": "foo_configs: [{url: x}]\n"}),
    Case("page-receiver-unknown-field", [*AM, "--page-receiver", "{tmp}/p.yml"],
         "field bogus not found in type config.plain", {"p.yml": "email_configs: [{to: a@b.c, bogus: 1}]\n"}),
    Case("page-receiver-missing-key", [*AM, "--page-receiver", "{tmp}/p.yml"],
         "amtool check-config refuses it: missing service or routing key in PagerDuty config",
         {"p.yml": "pagerduty_configs: [{}]\n"}),
    Case("alertmanager-config-out-unwritable", [*AM, "--out", "/proc/mqttlb-x/alertmanager.yml"],
         "--out /proc/mqttlb-x/alertmanager.yml: cannot write: No such file or directory"),
    Case("rules-out-unwritable", ["rules", "generate", "--out", "/proc/mqttlb-x"],
         "--out /proc/mqttlb-x: cannot write: No such file or directory"),
    bool_for_number("stack-nodes-bool", "nodes", True),
    bool_for_number("stack-port-bool", "ports.webhook", False),
    bool_for_number("stack-cpu-bool", "node_cpu_cores", True),
    Case("stack-state-dir-unwritable", ["stack", "--state-dir", "/proc/mqttlb-x", "check"],
         "error: command line: state_dir: /proc/mqttlb-x: cannot create files in /proc"),
    Case("stack-state-dir-variable-unwritable", ["stack", "check"],
         "error: environment variable MQTTLB_STATE_DIR: state_dir: /proc/mqttlb-x: cannot create files in /proc",
         env={"MQTTLB_STATE_DIR": "/proc/mqttlb-x"}),
    bool_for_number("stack-options-after-the-command", "nodes", True,
                    argv=["stack", "check", "--stack-file", "{tmp}/s.yaml"], before="error: "),
    Case("stack-state-dir-under-a-file", ["stack", "--state-dir", "{tmp}/f/state", "check"],
         "state_dir: {tmp}/f/state: cannot create files in {tmp}/f: Not a directory", {"f": ""}),
    Case("stack-up-state-dir-unwritable", ["stack", "--state-dir", "/proc/mqttlb-x", "up"],
         "state_dir: /proc/mqttlb-x: cannot create files in /proc"),
]


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.id)
def test_refused_in_one_line_with_exit_2_and_nothing_written(case: Case, tmp_path: Path) -> None:
    for name, text in case.files.items():
        (tmp_path / name).write_text(text)
    before = sorted(p.name for p in tmp_path.iterdir())
    argv = [a.replace("{tmp}", str(tmp_path)) for a in case.argv]
    env = {**os.environ, **case.env}
    result = subprocess.run(
        [sys.executable, "-m", "mqttlb.cli", *argv], capture_output=True, text=True, timeout=60, cwd=tmp_path, env=env
    )
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stdout + result.stderr
    # "line *" stands for amtool's line number in the generated config, which moves as the config grows.
    pattern = re.escape(case.expected.replace("{tmp}", str(tmp_path))).replace(re.escape("line *"), r"line \d+:")
    assert re.search(pattern, lines[0]), lines[0]
    assert "Traceback" not in result.stderr and result.stdout == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_a_good_page_receiver_still_renders() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mqttlb.cli", *AM, "--page-receiver", "/dev/stdin"],
        input="pagerduty_configs: [{routing_key: abc}]\n",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0 and "routing_key: abc" in result.stdout, result.stderr


def test_counts_read_as_english(tmp_path: Path) -> None:
    assert [plural(n, "node") for n in (0, 1, 2)] == ["0 nodes", "1 node", "2 nodes"]
    assert plural(1, "process", "processes") == "1 process" and plural(3, "process", "processes") == "3 processes"
    checked = subprocess.run(
        [sys.executable, "-m", "mqttlb.cli", "stack", "--nodes", "1", "--state-dir", str(tmp_path), "check"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert checked.stdout.startswith("stack config OK: 1 mosquitto node, state in"), checked.stdout + checked.stderr


def test_the_shed_hold_says_what_it_caps() -> None:
    assert plan_for(ShedState(level=1, anchor=100), [0.6, 0.4]).reason == (
        "hold: cap at 100 connections (the basis when it began)"
    )
    assert plan_for(ShedState(level=2, anchor=1), [0.6, 0.4]).reason == "cap at 60% of 1: 1 connection"
