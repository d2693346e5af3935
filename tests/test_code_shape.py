"""Code shape rules the project keeps: small functions, and one public class per name.

- No function with branching (if/for/while/try/match/with, or a conditional expression) is longer
  than 60 lines.  Nested functions are judged on their own: a factory's body does not count the
  routes it defines.
- No two public classes in the ``mqttlb`` package share a name.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "mqttlb"
MAX_LINES = 60
BRANCHES = (ast.If, ast.For, ast.AsyncFor, ast.While, ast.Try, ast.With, ast.AsyncWith, ast.Match, ast.IfExp)
FUNCTIONS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)


def _own_nodes(function: ast.AST) -> list[ast.AST]:
    """Every node of ``function``'s body, not descending into nested functions or classes."""
    found: list[ast.AST] = []
    stack = list(ast.iter_child_nodes(function))
    while stack:
        node = stack.pop()
        found.append(node)
        if not isinstance(node, (*FUNCTIONS, ast.ClassDef)):
            stack.extend(ast.iter_child_nodes(node))
    return found


def _own_lines(function: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    assert function.end_lineno is not None
    total = function.end_lineno - function.lineno + 1
    for node in _own_nodes(function):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.end_lineno:
            total -= node.end_lineno - node.lineno + 1 + len(node.decorator_list)
    return total


def sources(root: Path = PACKAGE) -> list[Path]:
    """Every Python source under ``root`` (the whole package: every part, every module)."""
    return sorted(root.rglob("*.py"))


def long_branching_functions(root: Path = PACKAGE) -> list[str]:
    """``path:line name (N lines)`` of each function under ``root`` with branching and more than MAX_LINES
    lines of its own."""
    offenders = []
    for path in sources(root):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            branches = any(
                isinstance(n, BRANCHES) or isinstance(n, ast.comprehension) and n.ifs for n in _own_nodes(node)
            )
            lines = _own_lines(node)
            if branches and lines > MAX_LINES:
                offenders.append(f"{path.relative_to(root.parent)}:{node.lineno} {node.name} ({lines} lines)")
    return offenders


def test_no_function_with_branching_exceeds_60_lines() -> None:
    assert long_branching_functions() == []


def test_the_length_rule_reads_every_part_of_the_package() -> None:
    parts = {path.relative_to(PACKAGE).parts[0] for path in sources() if len(path.relative_to(PACKAGE).parts) > 1}
    assert parts >= {"brokers", "dashboards", "deploy", "exporters", "loadgen", "stack", "webhook"}
    assert PACKAGE / "cli.py" in sources() and PACKAGE / "loadgen" / "scenarios" / "runner.py" in sources()


def test_the_length_rule_flags_a_long_branching_function_only(tmp_path: Path) -> None:
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    straight = "\n".join(f"    x{i} = {i}" for i in range(MAX_LINES))
    (package / "sub" / "a.py").write_text(
        f"def long_branching(flag):\n    if flag:\n        pass\n{straight}\n\n"  # 63 lines, branches
        f"def long_straight():\n{straight}\n\n"  # 61 lines, no branch
        f"def factory(flag):\n    if flag:\n        pass\n    def route():\n{straight.replace('    ', '        ')}\n"
        "    return route\n"  # the factory's own lines: 5
    )
    assert long_branching_functions(package) == ["pkg/sub/a.py:1 long_branching (63 lines)"]


def test_no_two_public_classes_share_a_name() -> None:
    homes: dict[str, list[str]] = defaultdict(list)
    for path in sources():
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
                homes[node.name].append(str(path.relative_to(PACKAGE.parent)))
    assert {name: where for name, where in homes.items() if len(where) > 1} == {}
