"""The README's layout table and the folders say the same thing."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
IGNORED = {".git", ".ci", ".venv", ".stack", ".pytest_cache", ".mypy_cache", ".ruff_cache", ".hypothesis",
           "reports", "build", "mqttlb.egg-info", "__pycache__"}


def _layout_rows() -> list[str]:
    text = (REPO / "README.md").read_text()
    section = text.split("## Layout", 1)[1].split("\n## ", 1)[0]
    return [row for row in section.splitlines() if row.startswith("| `")]


def _named_folders() -> set[str]:
    named: set[str] = set()
    for row in _layout_rows():
        first_cell = row.split("|")[1]
        named |= {name.rstrip("/") for name in re.findall(r"`([^`]+/)`", first_cell)}
    return named


def test_every_top_level_folder_is_in_the_layout_table() -> None:
    folders = {p.name for p in REPO.iterdir() if p.is_dir() and p.name not in IGNORED}
    named_top = {name for name in _named_folders() if "/" not in name}
    assert folders == named_top


def test_every_package_of_mqttlb_is_in_the_layout_table() -> None:
    packages = {f"mqttlb/{p.parent.name}" for p in (REPO / "mqttlb").glob("*/__init__.py")}
    named = {name for name in _named_folders() if name.startswith("mqttlb/")}
    assert packages == named


def test_every_named_folder_exists() -> None:
    for name in _named_folders():
        assert (REPO / name).is_dir(), name


def test_the_user_facing_folders_stay_at_the_top() -> None:
    for name in ("exporters", "dashboards", "rules", "webhook", "stack"):
        assert (REPO / name).is_dir() and any((REPO / name).iterdir()), name
        assert not (REPO / name / "__init__.py").exists(), f"{name}/ holds data; code lives in mqttlb/{name}/"
