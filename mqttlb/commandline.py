"""What every ``mqttlb`` command does around its own work, written once.

- ``parse_args``: parse a command line and set up logging from the ``--log-level`` and
  ``--log-format`` flags every command's parser carries (``mqttlb.logs.add_log_flags``);
- ``refuse``: the one line on stderr and exit status 2 for input a command cannot use;
- ``argument_type``: an argparse ``type=`` from a plain converter, whose errors become usage errors
  (exit status 2, the converter's message after the flag's name).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

from mqttlb.logs import setup_from_args

EXIT_BAD_INPUT = 2  # the command line, a file or a setting cannot be used; nothing was started

T = TypeVar("T")


def parse_args(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """``parser.parse_args(argv)`` (``None``: ``sys.argv[1:]``), then logging set up from its flags.

    A bad command line exits with status 2 and argparse's usage message, as argparse does.
    """
    args = parser.parse_args(argv)
    setup_from_args(args)
    return args


def refuse(problem: BaseException | str, prefix: str = "error") -> int:
    """Print ``<prefix>: <problem>`` on stderr and return ``EXIT_BAD_INPUT`` for ``main`` to return."""
    print(f"{prefix}: {problem}", file=sys.stderr)
    return EXIT_BAD_INPUT


def plural(count: int, word: str, many: str | None = None) -> str:
    """``"1 node"``, ``"3 nodes"``: a count and its noun (``many``: the plural, default ``word + "s"``)."""
    return f"{count} {word if count == 1 else (many or word + 's')}"


def argument_type(convert: Callable[[str], T], *errors: type[Exception]) -> Callable[[str], T]:
    """An argparse ``type=`` that returns ``convert(text)``; the ``errors`` it raises (default
    ``ValueError``) become ``argparse.ArgumentTypeError`` with the same message."""
    caught = errors or (ValueError,)

    def parse(text: str) -> T:
        try:
            return convert(text)
        except caught as exc:
            raise argparse.ArgumentTypeError(str(exc)) from exc

    parse.__name__ = getattr(convert, "__name__", "value")  # argparse names a type by its __name__
    return parse


def seconds_up_to(most: float) -> Callable[[str], float]:
    """An argparse ``type=`` for a time in seconds, more than 0 and at most ``most`` (NaN and infinity
    refused): ``must be more than 0 and at most 300 seconds, got -1``."""

    def seconds(text: str) -> float:
        value = float(text)
        if not 0 < value <= most:  # also refuses nan and inf
            raise ValueError(f"must be more than 0 and at most {most:g} seconds, got {text}")
        return value

    return argument_type(seconds)


def _folder(text: str) -> Path:
    if not text.strip():
        raise ValueError(f"must name a folder, not a blank (got {text!r})")
    return Path(text)


#: An argparse ``type=`` for a folder: a non-blank path (``--state-dir ""`` would mean the current folder).
folder = argument_type(_folder)
