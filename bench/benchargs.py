"""Command lines of the ``bench_*.py`` scripts beside it: the parser they start from and range-checked numbers."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import TypeVar

Number = TypeVar("Number", int, float)


def bench_parser(doc: str | None) -> argparse.ArgumentParser:
    """A parser whose ``--help`` shows ``doc`` (the script's module docstring) with its line breaks kept."""
    return argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)


def within(kind: Callable[[str], Number], low: Number, high: Number) -> Callable[[str], Number]:
    """An argparse ``type=``: the option's text read with ``kind`` (int or float) and checked to lie in
    ``low..high`` (both included).  Text ``kind`` refuses, or a number outside, ends the program the way
    argparse does (usage and ``argument --x: must be low..high (got ...)`` on stderr, exit status 2)."""

    def parse(text: str) -> Number:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid number: {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be {low}..{high} (got {text})")
        return value

    return parse
