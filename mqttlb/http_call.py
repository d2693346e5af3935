"""One HTTP request to a service mqttlb drives (a broker's API, Envoy's admin, Prometheus), with its transport
failures raised as the caller's own error in one line.

Used by the clients that answer with their own exception type (EvictionError, EnvoyAdminError,
PrometheusApiError) rather than requests': a request that times out says ``<what>: no answer within
<s> s``, one that cannot reach the service says ``<what>: <unreachable><requests' reason>``.  What the
answer means (status, body) is left to the caller.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import requests

ERROR_CHARS = 200  # of a quoted reason or body in an error message


def one_line(text: str, limit: int = ERROR_CHARS) -> str:
    """``text`` with its white space folded to single spaces, cut at ``limit`` characters (ending in ``…``)."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def send(
    session: requests.Session,
    method: str,
    url: str,
    *,
    what: str,
    error: Callable[[str], Exception],
    timeout: float | tuple[float, float],
    unreachable: str = "",
    **options: Any,
) -> requests.Response:
    """``session.request(method, url, timeout=timeout, **options)`` (``timeout``: seconds, or (connect, read)
    seconds).  Raises ``error(message)``, ``from None``, when no answer came within the (read) timeout or the
    request failed before an answer (refused, reset, DNS, TLS); the message starts with ``what``."""
    try:
        return session.request(method, url, timeout=timeout, **options)
    except requests.Timeout:
        seconds = timeout[1] if isinstance(timeout, tuple) else timeout
        raise error(f"{what}: no answer within {seconds:g} s") from None
    except requests.RequestException as exc:
        raise error(f"{what}: {unreachable}{one_line(str(exc))}") from None
