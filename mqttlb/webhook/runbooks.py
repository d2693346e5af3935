"""The runbooks shipped with mqttlb (``docs/runbooks/<AlertName>.md``), as the webhook serves them.

The webhook answers ``GET /runbooks/<AlertName>.md`` with the runbook's Markdown as
``text/plain; charset=utf-8`` (readable as it is in any browser; no Markdown renderer and no HTML
built from files), and ``GET /runbooks/`` with a short index page.  The files are read once, when the
app is created, into a mapping keyed by alert name: a request can only pick one of those names, so no
path from the request ever reaches the file system.

These routes need no credential: they serve the same documents the repository and the wheel publish,
carry no state of the running system, accept GET only, and are what an alert's ``runbook_url`` links to
from Alertmanager, Grafana or a pager message, none of which can send the webhook's bearer token.
"""

from __future__ import annotations

import html
import re
from pathlib import Path

from mqttlb.shipped import RUNBOOKS, shipped

#: Path prefix of the runbook routes (the stack's ``params.runbook_base_url`` is ``<webhook>/runbooks``).
PREFIX = "/runbooks"
#: What a runbook's file name (without ``.md``) may be: an alert name.
NAME = re.compile(r"^[A-Za-z][A-Za-z0-9]*$")
TEXT = "text/plain; charset=utf-8"


def load_runbooks(directory: Path | None = None) -> dict[str, str]:
    """``{alert name: Markdown text}`` for every ``<AlertName>.md`` in ``directory`` (default: the shipped
    ``docs/runbooks``); other files are left out.  Raises FileNotFoundError when the folder is missing."""
    folder = shipped(RUNBOOKS) if directory is None else directory
    if not folder.is_dir():
        raise FileNotFoundError(f"no runbook folder at {folder}")
    return {
        path.stem: path.read_text(encoding="utf-8") for path in sorted(folder.glob("*.md")) if NAME.match(path.stem)
    }


def index_page(names: list[str]) -> str:
    """A small HTML page linking every runbook (relative links, so it works under any base URL)."""
    items = "\n".join(f'<li><a href="{html.escape(n)}.md">{html.escape(n)}</a></li>' for n in names)
    return f"<!doctype html><title>mqttlb runbooks</title>\n<h1>mqttlb runbooks</h1>\n<ul>\n{items}\n</ul>\n"
