"""Config files and their errors: one YAML loader and one way to report a bad setting.

Every config loader of mqttlb (parameters, stack file, webhook and broker exporter configs, rule
overrides, workload files) reads YAML with :func:`load_yaml_mapping` (or :func:`parse_yaml_mapping`
for text already read) and turns pydantic's errors into one line with :func:`one_line`, so every
refusal has the same shape::

    <source>: <dotted.key>: <problem> (got <value>)

``<source>`` is a file path, ``environment variable NAME`` or whatever the caller calls a layer of
overrides.  When a config is merged from several layers, :class:`Sources` remembers which layer set
each key, so the message blames the file or variable the bad value came from.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError
from pydantic_core import PydanticCustomError

MAX_BYTES = 1_000_000
_MERGE_TAG = "tag:yaml.org,2002:merge"


class ConfigError(ValueError):
    """A config file, environment variable or override is unusable.

    ``str(error)`` is one line that starts with the source (a path or ``environment variable X``).
    Each config has its own subclass (``StackConfigError``, ``WebhookConfigError``, ...)."""


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, except that a key written twice in one mapping is an error.

    (PyYAML keeps the last value silently, so a second ``nodes:`` line would hide the first.)"""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == _MERGE_TAG:
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                duplicate = key in seen
                seen.add(key)
            except TypeError:  # unhashable key: the base class reports it
                continue
            if duplicate:
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping", node.start_mark, f"duplicate key {key!r}", key_node.start_mark
                )
        return super().construct_mapping(node, deep=deep)


def kind_of(value: object) -> str:
    """``"a list"``, ``"a string"``, ... for saying what a config holds instead of a mapping."""
    kinds = {list: "a list", str: "a string", int: "a number", float: "a number", bool: "true/false"}
    return kinds.get(type(value), f"a {type(value).__name__}")


def parse_yaml_mapping(
    text: str | bytes, source: str, error: type[ValueError] = ConfigError
) -> dict[str, Any]:
    """Parse ``text`` as one YAML mapping; an empty document is ``{}``.

    Raises ``error`` (a :class:`ConfigError` subclass, or another ValueError) with one line naming
    ``source``:
    ``"<source>: not valid YAML at line 3, column 7: <problem>"`` (line and column are 1-based) or
    ``"<source>: must be a mapping of keys to values, got a list"``.
    """
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 -- a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = exc.problem or exc.context or "syntax error"
        raise error(f"{source}: not valid YAML{where}: {problem}") from None
    except yaml.reader.ReaderError as exc:  # bytes that do not decode, or a control character
        problem = (
            f"not {exc.encoding.upper()} text (byte {exc.position + 1})"
            if exc.encoding and exc.encoding != "unicode"
            else f"character {chr(exc.character)!r} at offset {exc.position} is not allowed"
        )
        raise error(f"{source}: not valid YAML: {problem}") from None
    except RecursionError:
        raise error(f"{source}: not valid YAML: nested too deeply") from None
    except yaml.YAMLError as exc:
        raise error(f"{source}: not valid YAML: {str(exc).splitlines()[0]}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise error(f"{source}: must be a mapping of keys to values, got {kind_of(data)}")
    return data


def load_yaml_mapping(
    path: Path | str, error: type[ValueError] = ConfigError, max_bytes: int = MAX_BYTES
) -> dict[str, Any]:
    """Read the YAML file at ``path`` (at most ``max_bytes``) as one mapping; an empty file is ``{}``.

    Raises ``error`` with one line starting with the path: ``"<path>: cannot read: No such file or
    directory"``, ``"<path>: larger than 1000000 bytes"`` or a message of :func:`parse_yaml_mapping`.
    """
    try:
        with open(path, "rb") as handle:
            raw = handle.read(max_bytes + 1)
    except OSError as exc:
        raise error(f"{path}: cannot read: {exc.strerror or exc}") from None
    if len(raw) > max_bytes:
        raise error(f"{path}: larger than {max_bytes} bytes")
    return parse_yaml_mapping(raw, str(path), error)


def deep_merge(base: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``overrides`` applied: mappings merge key by key, any other value replaces.

    Neither argument is changed; the result shares no mutable value with them."""
    merged = copy.deepcopy(dict(base))
    for key, value in overrides.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def not_a_bool(value: Any) -> Any:
    """``value`` unchanged, unless it is a YAML ``true``/``false`` given for a number (pydantic's lax mode
    would read it as 1 or 0): ValueError ``"Input should be a number, not true"`` then."""
    if isinstance(value, bool):
        raise ValueError(f"Input should be a number, not {str(value).lower()}")
    return value


def invalid(message: str, *fields: str) -> PydanticCustomError:
    """The error a cross-field validator raises: ``message`` plus the (dotted, relative) ``fields`` it
    involves, so that :func:`one_line` names the field whose source set the offending value."""
    return PydanticCustomError("mqttlb_invalid", "{message}", {"fields": fields, "message": message})


class Sources:
    """Which layer of a merged config set each key, to blame the right one in an error message.

    Layers are added lowest precedence first.  Keys are dotted paths (``params.policy.min_weight``);
    a mapping records each of its leaves (an empty one records nothing), any other value (scalar,
    list) the key itself.  ``fallback`` is blamed for a key no layer set.
    """

    def __init__(self, fallback: str) -> None:
        self.fallback = fallback
        self._keys: dict[str, tuple[int, str]] = {}
        self._layers = 0

    def add(self, source: str, data: Mapping[str, Any], prefix: str = "") -> None:
        """Record that ``source`` set every key of ``data`` (placed under ``prefix``, if given)."""
        self._layers += 1
        self._record(self._layers, source, data, prefix)

    def _record(self, rank: int, source: str, data: Mapping[str, Any], prefix: str) -> None:
        for key, value in data.items():
            dotted = f"{prefix}.{key}" if prefix else str(key)
            if isinstance(value, Mapping):
                if value:
                    self._record(rank, source, value, dotted)
            else:
                self._keys[dotted] = (rank, source)

    def blame(self, keys: Iterable[str]) -> tuple[str, str]:
        """``(key, source)``: of ``keys``, the one set by the latest layer, and that layer.

        A key matches what was recorded for it, for a part of it (a list holding the bad item) or
        inside it (a mapping whose cross-field rule failed).  Ties go to the first key."""
        keys = list(keys)
        best = (0, keys[0] if keys else "", self.fallback)
        for key in keys:
            for known, (rank, source) in self._keys.items():
                related = not key or known == key or known.startswith(key + ".") or key.startswith(known + ".")
                if related and rank > best[0]:
                    best = (rank, key, source)
        return best[1], best[2]


def _dotted(loc: Iterable[int | str]) -> str:
    return ".".join(str(part) for part in loc)


def _shown(value: object) -> str | None:
    scalar = (str, int, float, bool, type(None))
    if isinstance(value, scalar) or (
        isinstance(value, list) and len(value) <= 10 and all(isinstance(v, scalar) for v in value)
    ):
        text = repr(value)
        return text if len(text) <= 80 else text[:77] + "..."
    return None


def _problem(error: Mapping[str, Any]) -> str:
    kind = error["type"]
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "missing":
        return "required key is missing"
    ctx = error.get("ctx") or {}
    text = str(ctx["error"]) if kind == "value_error" and "error" in ctx else str(error["msg"])
    shown = _shown(error.get("input"))
    if shown is None or f"got {shown}" in text:  # a message may quote the value itself
        return text
    return f"{text} (got {shown})"


def one_line(exc: ValidationError, sources: Sources | str, prefix: Iterable[str] = ()) -> str:
    """pydantic's errors as one line: ``"<source>: <key>: <problem>; <source>: <key>: ..."``.

    ``sources`` is one source name for a config read from one place, or a :class:`Sources` for a
    merged one.  ``prefix`` is prepended to every key (the model's place in a larger config)."""
    blamer = Sources(sources) if isinstance(sources, str) else sources
    problems = []
    for error in exc.errors():
        loc = _dotted([*prefix, *error["loc"]])
        fields = (error.get("ctx") or {}).get("fields") or ()
        candidates = [_dotted(p for p in (loc, field) if p) for field in fields] or [loc]
        key, source = blamer.blame(candidates)
        problems.append(f"{source}: {key or '(top level)'}: {_problem(error)}")
    return "; ".join(problems)
