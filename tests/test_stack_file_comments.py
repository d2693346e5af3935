"""The comments of the shipped stack file say what the code does (trial: `cluster` named a label that is
refused; the slow-start example disagreed with the README's measured 3/3/6)."""

from __future__ import annotations

import re
from pathlib import Path

from mqttlb import contract
from mqttlb.params import TAKEN_LABELS
from mqttlb.shipped import shipped

STACK_FILE = shipped("stack/stack.yaml")
README = Path(__file__).resolve().parents[1] / "README.md"


def _comment(key: str) -> str:
    """The comment of the top-level ``key`` of the stack file, with its continuation lines, as one line."""
    lines = STACK_FILE.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"{key}:"))
    parts = [lines[start].split("#", 1)[1]]
    for line in lines[start + 1 :]:
        if not re.match(r"^ +#", line):
            break
        parts.append(line.split("#", 1)[1])
    return " ".join(" ".join(parts).split())


def test_the_cluster_comment_names_the_label_the_series_carry() -> None:
    comment = _comment("cluster")
    assert f"`{contract.CLUSTER_LABEL}`" in comment, comment
    assert "cluster" in TAKEN_LABELS and "`cluster` is refused" in comment, comment


def test_the_slow_start_comment_agrees_with_the_readme() -> None:
    comment = _comment("slow_start_window")
    split = re.search(r"first (\d+) (?:connections )?went (\d+/\d+/\d+)", comment)
    assert split, comment
    readme = " ".join(README.read_text().split())
    assert f"the first {split[1]} connections {split[2]}" in readme, (split[1], split[2])
