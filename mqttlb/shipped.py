"""Where mqttlb finds the files it ships: rules, generated dashboards, runbooks, stack files.

In a source checkout (or an editable install) these live in the repository's top-level folders,
which stay the homes of their data: ``rules/``, ``dashboards/generated/``, ``docs/runbooks/`` and
``stack/``. The wheel carries the same files inside the package, under ``mqttlb/_shipped/<folder>``
(``[tool.setuptools.package-dir]`` in pyproject.toml), so an installed ``mqttlb`` works from any
directory. These paths are for reading only: commands that generate files write to a path the
user chooses, defaulting to the current directory, never into the installed package.
"""

from __future__ import annotations

from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
_IN_WHEEL = PACKAGE_DIR / "_shipped"


def checkout_root() -> Path | None:
    """The repository root when mqttlb runs from a source checkout, else ``None``."""
    root = PACKAGE_DIR.parent
    if (root / "pyproject.toml").is_file() and (root / "stack" / "stack.yaml").is_file():
        return root
    return None


def shipped(relative: str) -> Path:
    """Path of a shipped file or folder, e.g. ``shipped("rules")`` or ``shipped("stack/stack.yaml")``.

    Raises FileNotFoundError naming the path when neither the wheel nor a checkout has it.
    """
    candidates = [_IN_WHEEL / relative]
    root = checkout_root()
    if root is not None:
        candidates.insert(0, root / relative)
    for path in candidates:
        if path.exists():
            return path
    raise FileNotFoundError(f"mqttlb ships no {relative!r} (looked in {', '.join(map(str, candidates))})")


RULES = "rules"
DASHBOARDS = "dashboards/generated"
RUNBOOKS = "docs/runbooks"
STACK_FILE = "stack/stack.yaml"
COMPOSE_DIR = "stack/compose"
GRAFANA_PROVISIONING = "stack/grafana"
