"""mqttlb.drift: the one drift check behind `rules check`, `dashboards check` and compose `--check`."""

from __future__ import annotations

import io
from pathlib import Path

from mqttlb.drift import find_drift, report


def test_up_to_date_files_report_nothing(tmp_path: Path) -> None:
    (tmp_path / "a.yml").write_text("a: 1\n")
    expected = {tmp_path / "a.yml": "a: 1\n"}
    assert find_drift(expected, generated_dirs=[(tmp_path, "*.yml")]) == []
    lines = io.StringIO()
    assert report([], "gen", lines=lines) == 0 and lines.getvalue() == ""


def test_missing_changed_and_unexpected_files(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "changed.yml").write_text("a: 1\nb: 2\n")
    (out / "whitespace.yml").write_text("a: 1")  # only the final newline is missing
    (out / "stale.yml").write_text("old: true\n")
    (out / "README.txt").write_text("not matched by the glob\n")
    expected = {
        out / "missing.yml": "m: 1\n",
        out / "changed.yml": "a: 1\nb: 3\n",
        out / "whitespace.yml": "a: 1\n",
    }
    problems = find_drift(expected, generated_dirs=[(out, "*.yml")], root=tmp_path)
    assert [(p.name, p.kind) for p in problems] == [
        ("out/missing.yml", "missing"),
        ("out/changed.yml", "differs"),
        ("out/whitespace.yml", "differs"),
        ("out/stale.yml", "unexpected"),
    ]
    missing, changed, _, stale = problems
    assert "+m: 1" in missing.diff.splitlines()
    assert changed.diff.splitlines()[:2] == ["--- out/changed.yml (committed)", "+++ out/changed.yml (generated)"]
    assert "-b: 2" in changed.diff.splitlines() and "+b: 3" in changed.diff.splitlines()
    assert stale.diff == ""

    lines, diffs = io.StringIO(), io.StringIO()
    assert report(problems, "make gen", lines=lines, diffs=diffs) == 1
    assert lines.getvalue().splitlines() == [
        "out/missing.yml: missing (run `make gen`)",
        "out/changed.yml: differs from its source (run `make gen`)",
        "out/whitespace.yml: differs from its source (run `make gen`)",
        "out/stale.yml: no source generates this file (delete it; `make gen` writes the generated ones)",
    ]
    assert diffs.getvalue() == missing.diff + changed.diff + problems[2].diff


def test_paths_outside_the_root_and_absent_directories(tmp_path: Path) -> None:
    elsewhere = tmp_path / "x.json"
    (problem,) = find_drift({elsewhere: "{}\n"}, generated_dirs=[(tmp_path / "absent", "*.json")], root=tmp_path / "r")
    assert problem.name == str(elsewhere) and problem.kind == "missing"
