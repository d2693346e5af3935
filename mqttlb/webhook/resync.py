"""Rebuild the firing set from Alertmanager's own API, so a lost notification cannot leave it stale.

``GET /api/v2/alerts`` lists the alerts Alertmanager holds, with their real ``endsAt``; the
controller asks at start and then every ``interval`` seconds.  In an HA pair the peers gossip their
alerts, so the first one that answers is enough.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import KW_ONLY, dataclass

import requests

from mqttlb.contract import ACTION_LABEL, Action
from mqttlb.webhook.firing import FiringInputError, FiringSet
from mqttlb.webhook.metrics import WebhookMetrics

log = logging.getLogger(__name__)

# Only the alerts the controller acts on; silenced and inhibited ones are not notified either.
API_PARAMS = {
    "active": "true",
    "silenced": "false",
    "inhibited": "false",
    "filter": f'{ACTION_LABEL}=~"{Action.REBALANCE.value}|{Action.SHED.value}"',
}


class ResyncError(RuntimeError):
    """No Alertmanager answered with a usable alert list."""


def fetch_alerts(urls: Sequence[str], timeout: float, session: requests.Session | None = None) -> list[object]:
    """The alert list of the first Alertmanager (base URLs) that answers; raises ResyncError."""
    http = session or requests.Session()
    problems = []
    for url in urls:
        endpoint = f"{url.rstrip('/')}/api/v2/alerts"
        try:
            response = http.get(endpoint, params=API_PARAMS, timeout=timeout)
            response.raise_for_status()
            document = response.json()
        except (requests.RequestException, ValueError) as exc:
            problems.append(f"{endpoint}: {type(exc).__name__}: {str(exc)[:200]}")
            continue
        if not isinstance(document, list):
            problems.append(f"{endpoint}: expected a JSON list of alerts")
            continue
        return document
    raise ResyncError("; ".join(problems) or "no Alertmanager URL configured")


@dataclass
class Resyncer:
    """Replaces the firing set with Alertmanager's view now and every ``interval`` seconds.

    ``urls``: Alertmanager base URLs (none: resync is off); ``interval``, ``timeout``: seconds;
    ``clock``: Unix seconds; ``on_change`` is called after a resync that changed the set; ``session``:
    the HTTP session that asks (Alertmanager's credentials, mqttlb.secure.ClientAuth), None: a plain one.
    """

    urls: Sequence[str]
    firing: FiringSet
    metrics: WebhookMetrics
    _: KW_ONLY
    interval: float
    timeout: float
    clock: Callable[[], float]
    on_change: Callable[[], None]
    session: requests.Session | None = None

    def once(self) -> bool:
        """One resync; True when the set was replaced.  Failures are logged and counted."""
        if not self.urls:
            return False
        asked_at = self.clock()
        try:
            document = fetch_alerts(self.urls, self.timeout, self.session)
            result = self.firing.replace_from_api(document, asked_at)
        except (ResyncError, FiringInputError) as exc:
            self.metrics.failures.labels("resync", "alertmanager").inc()
            log.warning("cannot rebuild the firing set from Alertmanager: %s", exc)
            return False
        if result.changed:
            log.info("firing set rebuilt from Alertmanager: %s", result.as_json())
            self.on_change()
        return True

    def run(self, stop: threading.Event) -> None:
        while not stop.wait(self.interval):
            self.once()
