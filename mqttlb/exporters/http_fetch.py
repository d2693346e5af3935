"""Bounded HTTP GET for scraping: a connect/read timeout and a size cap.

The caller (a collector) also waits on the result with its own deadline, so a server that
accepts and then trickles bytes cannot hold a scrape past its timeout.
"""

from __future__ import annotations

import time

import requests

DEFAULT_MAX_BYTES = 64 * 1024 * 1024


class FetchError(Exception):
    """The target did not give a usable answer; the message says why in one line."""


def fetch_text(
    url: str, timeout: float, max_bytes: int = DEFAULT_MAX_BYTES, session: requests.Session | None = None
) -> str:
    """The body of ``GET url`` (HTTP 200 only) as text, within ``timeout`` seconds in all and at most
    ``max_bytes``; ``session`` keeps the connection open between calls.  Raises FetchError."""
    deadline = time.monotonic() + timeout
    get = session.get if session is not None else requests.get
    try:
        with get(url, timeout=(timeout, timeout), stream=True) as response:
            if response.status_code != 200:
                raise FetchError(f"GET {url}: HTTP {response.status_code}")
            chunks: list[bytes] = []
            size = 0
            for chunk in response.iter_content(chunk_size=16384):
                if time.monotonic() > deadline:  # a server trickling bytes must not hold this thread
                    raise FetchError(f"GET {url}: answer not complete after {timeout:g}s")
                size += len(chunk)
                if size > max_bytes:
                    raise FetchError(f"GET {url}: answer larger than {max_bytes} bytes")
                chunks.append(chunk)
            encoding = response.encoding or "utf-8"
    except requests.Timeout:
        raise FetchError(f"GET {url}: timed out after {timeout:g}s") from None
    except requests.RequestException as exc:
        raise FetchError(f"GET {url}: {type(exc).__name__}: {exc}") from None
    return b"".join(chunks).decode(encoding, errors="replace")
