"""One drift check for every generated file mqttlb commits (rules, dashboards, compose configs).

Given ``{path: expected text}``, :func:`find_drift` reports each file that is missing, differs
from the text its source generates, or (optionally) lies in a generated directory although no
source generates it.  :func:`report` prints one line per problem, naming the command that
regenerates the files, and optionally unified diffs; it returns the exit code the ``check``
commands use: 0 up to date, 1 drift.
"""

from __future__ import annotations

import difflib
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, TextIO

DriftKind = Literal["missing", "differs", "unexpected"]


@dataclass(frozen=True)
class Drift:
    path: Path
    kind: DriftKind
    name: str  # the path as shown to the user (relative to the caller's root, if given)
    diff: str  # unified diff, committed -> generated ("" for an unexpected file)

    def line(self, regenerate: str) -> str:
        """One line naming the file, what is wrong, and the fix."""
        if self.kind == "missing":
            return f"{self.name}: missing (run `{regenerate}`)"
        if self.kind == "differs":
            return f"{self.name}: differs from its source (run `{regenerate}`)"
        return f"{self.name}: no source generates this file (delete it; `{regenerate}` writes the generated ones)"


def _shown(path: Path, root: Path | None) -> str:
    if root is not None:
        try:
            return str(path.relative_to(root))
        except ValueError:
            pass
    return str(path)


def _diff(name: str, committed: str, generated: str) -> str:
    return "".join(
        difflib.unified_diff(
            committed.splitlines(keepends=True),
            generated.splitlines(keepends=True),
            f"{name} (committed)",
            f"{name} (generated)",
        )
    )


def find_drift(
    expected: Mapping[Path, str],
    *,
    generated_dirs: Iterable[tuple[Path, str]] = (),
    root: Path | None = None,
) -> list[Drift]:
    """Problems with the files in ``expected`` (path -> text), in its order, then files matching
    ``glob`` in each ``(directory, glob)`` of ``generated_dirs`` that ``expected`` does not name,
    sorted.  Files are read as UTF-8; an unreadable file raises OSError."""
    problems = []
    for path, text in expected.items():
        name = _shown(path, root)
        if not path.is_file():
            problems.append(Drift(path, "missing", name, _diff(name, "", text)))
            continue
        current = path.read_text(encoding="utf-8")
        if current != text:
            problems.append(Drift(path, "differs", name, _diff(name, current, text)))
    known = {p.resolve() for p in expected}
    for directory, glob in generated_dirs:
        if directory.is_dir():
            for path in sorted(directory.glob(glob)):
                if path.is_file() and path.resolve() not in known:
                    problems.append(Drift(path, "unexpected", _shown(path, root), ""))
    return problems


def report(
    problems: Iterable[Drift],
    regenerate: str,
    *,
    lines: TextIO | None = None,
    diffs: TextIO | None = None,
) -> int:
    """Print each problem's line to ``lines`` (default stderr) and, if ``diffs`` is given, its
    unified diff there; return 1 if there was any problem, else 0."""
    lines = lines if lines is not None else sys.stderr
    found = 0
    for problem in problems:
        found += 1
        if diffs is not None and problem.diff:
            diffs.write(problem.diff)
        print(problem.line(regenerate), file=lines)
    return 1 if found else 0
