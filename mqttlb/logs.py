"""Logging flags and setup shared by every mqttlb command: ``--log-level`` and ``--log-format``.

Every command spells these flags the same way. ``--log-format json`` writes one JSON object per line
(python-json-logger) with ``time``, ``level``, ``logger`` and ``message`` keys plus any ``extra=``
fields, for log shippers; ``text`` is the human format.
"""

from __future__ import annotations

import argparse
import logging
import sys

from pythonjsonlogger.json import JsonFormatter

LEVELS = ("debug", "info", "warning", "error")
FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def add_log_flags(parser: argparse.ArgumentParser, default_level: str = "info") -> None:
    """Add ``--log-level`` (case-insensitive) and ``--log-format`` to ``parser``."""
    parser.add_argument(
        "--log-level",
        type=str.lower,
        choices=LEVELS,
        default=default_level,
        help=f"logging level (default: {default_level})",
    )
    parser.add_argument(
        "--log-format",
        choices=FORMATS,
        default="text",
        help="text for people, json for one JSON object per line (default: text)",
    )


def setup_logging(level: str = "info", log_format: str = "text") -> None:
    """Configure the root logger on stderr; replaces any handler set before (safe to call twice)."""
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(
            JsonFormatter(
                "%(asctime)s %(levelname)s %(name)s %(message)s",
                rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
            )
        )
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())


def setup_from_args(args: argparse.Namespace) -> None:
    """``setup_logging`` from the flags ``add_log_flags`` added."""
    setup_logging(args.log_level, args.log_format)
