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


def long_branching_functions() -> list[str]:
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            branches = any(
                isinstance(n, BRANCHES) or isinstance(n, ast.comprehension) and n.ifs for n in _own_nodes(node)
            )
            lines = _own_lines(node)
            if branches and lines > MAX_LINES:
                offenders.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno} {node.name} ({lines} lines)")
    return offenders


def test_no_function_with_branching_exceeds_60_lines() -> None:
    assert long_branching_functions() == []


def test_no_two_public_classes_share_a_name() -> None:
    homes: dict[str, list[str]] = defaultdict(list)
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
                homes[node.name].append(str(path.relative_to(PACKAGE.parent)))
    assert {name: where for name, where in homes.items() if len(where) > 1} == {}
