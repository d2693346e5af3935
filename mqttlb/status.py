"""``mqttlb status``: what the rebalancer sees and does now, per node, for people and scripts.

Reads the webhook's ``GET /status`` (by default the local stack's webhook, found through the state
directory's recorded settings) and prints, per node: CPU (rate window and short window),
connections, the weight decided, published and applied by Envoy, health and draining; then the shed
level, the evict lever (available, armed, waiting, evacuating, max squared deviation vs its target),
the firing rebalance/shed alerts and the last decisions with their reasons.  ``--json``
prints the document as the webhook returns it.  ``/status`` needs the webhook's bearer token: the
local stack's (``<state dir>/webhook/token``) unless ``--url`` or ``--token-file`` says otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import requests

from mqttlb.commandline import argument_type, folder, parse_args, refuse, seconds_up_to
from mqttlb.logs import add_log_flags
from mqttlb.secure import SecretError, read_secret

DEFAULT_STATE_DIR = Path(".stack")


class StatusError(RuntimeError):
    """The webhook cannot be found or does not answer with a status document."""


def local_webhook_url(state_dir: Path) -> str:
    """The webhook URL of the local stack started in ``state_dir`` (its recorded settings)."""
    from mqttlb.stack.config import recorded_config  # the stack package only when asked

    cfg = recorded_config(state_dir)
    if cfg is None:
        raise StatusError(f"no stack was started in {state_dir.resolve()} (run `make stack-up`, or pass --url)")
    return f"{'https' if cfg.tls else 'http'}://127.0.0.1:{cfg.ports.webhook}"


def local_ca(state_dir: Path) -> Path | None:
    """The CA of the local stack's https URLs (``tls: true``), if it has one."""
    from mqttlb.stack.topology import Paths  # the stack package only when asked

    ca = Paths(Path(state_dir)).tls_ca
    return ca if ca.exists() else None


def bearer_headers(token_file: Path | None) -> dict[str, str]:
    """``Authorization: Bearer <token>`` from ``token_file`` (None: no header); StatusError when unreadable or
    empty (``secure.read_secret``)."""
    if token_file is None:
        return {}
    try:
        return {"Authorization": f"Bearer {read_secret(Path(token_file), 'webhook token')}"}
    except SecretError as exc:
        raise StatusError(str(exc)) from None


def is_webhook_refusal(response: requests.Response) -> bool:
    """Whether a 401 is the mqttlb webhook's (mqttlb.webhook.app): a JSON ``{"error": "missing or wrong
    ..."}`` with ``WWW-Authenticate`` offering ``Bearer``; Prometheus or Alertmanager behind a login answer
    ``Basic`` and plain text."""
    try:
        body = response.json()
    except ValueError:
        return False
    error = body.get("error") if isinstance(body, dict) else None
    offered = response.headers.get("WWW-Authenticate", "")
    return isinstance(error, str) and error.startswith("missing or wrong") and "Bearer" in offered


def refusal(response: requests.Response, token_file: Path | None) -> str:
    """What a 401 at ``/status`` means, for the error line: the webhook wants its token (or refuses the one
    in ``token_file``), or something else answered at that address."""
    if is_webhook_refusal(response):
        if token_file is None:
            return "401, the webhook wants its bearer token (--token-file)"
        return f"401, the webhook refuses the bearer token in {token_file} (--token-file names the right one)"
    offered = response.headers.get("WWW-Authenticate")
    asks = f" (it asks for {offered})" if offered else ""
    return f"401 from something that is not the mqttlb webhook{asks}: is --url the webhook's address?"


def fetch_status(
    url: str, timeout: float, token_file: Path | None = None, ca_file: Path | None = None
) -> dict[str, Any]:
    """GET ``<url>/status`` (with the bearer token in ``token_file``; ``ca_file``: the CA of an https
    URL); raises StatusError."""
    endpoint = f"{url.rstrip('/')}/status"
    try:
        verify = str(ca_file) if ca_file is not None else True
        response = requests.get(endpoint, timeout=timeout, headers=bearer_headers(token_file), verify=verify)
        if response.status_code == 401:
            raise StatusError(f"{endpoint}: {refusal(response, token_file)}")
        response.raise_for_status()
        document = response.json()
    except requests.ConnectionError:
        raise StatusError(
            f"nothing answers at {endpoint}: is the webhook running? (`make stack-up` starts the local stack)"
        ) from None
    except (requests.RequestException, ValueError) as exc:
        raise StatusError(f"{endpoint}: {type(exc).__name__}: {str(exc)[:200]}") from None
    if not isinstance(document, dict) or "nodes" not in document:
        raise StatusError(f"{endpoint}: not a rebalancer status document")
    return document


def _cell(value: Any, pattern: str = "{}") -> str:
    return "-" if value is None else pattern.format(value)


def node_table(nodes: Sequence[Mapping[str, Any]]) -> list[str]:
    header = ("node", "cpu", "cpu now", "conns", "decided", "published", "applied", "health", "draining")
    rows = [header]
    for n in nodes:
        rows.append(
            (
                str(n["node"]),
                _cell(n.get("cpu"), "{:.2f}"),
                _cell(n.get("fast_cpu"), "{:.2f}"),
                _cell(n.get("connections"), "{:.0f}"),
                _cell(n.get("weight")),
                _cell(n.get("published")),
                _cell(n.get("applied")),
                str(n.get("health", "-")),
                "yes" if n.get("draining") else "no",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]


def render(document: Mapping[str, Any], last: int, now: float | None = None) -> str:
    """The human view of a ``/status`` document."""
    now = time.time() if now is None else now
    lines = [
        f"cluster {document.get('cluster')}"
        + (" (DRY RUN: decides and logs, does not act)" if document.get("dry_run") else "")
        + f" - EDS version {document.get('version')}, shed level {document.get('shed_level')}, "
        f"step interval {_cell(document.get('step_seconds'), '{:.0f}s')}",
        "",
        *node_table(document.get("nodes", [])),
        "",
    ]
    lines.append(eviction_line(document.get("eviction")))
    alerts = document.get("firing", {}).get("alerts", [])
    lines.append("firing rebalance/shed alerts: " + (", ".join(_alert(a) for a in alerts) if alerts else "none"))
    recorded = list(document.get("recent", []))
    recent = recorded[-last:] if last > 0 else []
    if recent:
        lines.append(f"last {len(recent)} decisions:")
    else:
        lines.append(f"{len(recorded)} recent decisions (--last N shows them)" if recorded else "no decisions yet")
    for entry in recent:
        age = now - float(entry.get("time", now))
        lines.append(f"  {age:6.0f}s ago  {entry.get('kind', '?'):<9} {entry.get('reason', '')}")
    return "\n".join(lines)


def eviction_line(eviction: Mapping[str, Any] | None) -> str:
    """One line on the evict lever from ``/status``'s ``eviction`` object: available or why not, armed and
    why, what it waits for, the nodes being evacuated, the max squared deviation of CPU (utilisation²)
    against the lever's stop mark ``spread_target²`` (every node within ``spread_target`` of the mean)."""
    if not eviction:
        return "evict lever: not reported by this webhook"
    evacuating = eviction.get("evacuating") or []
    evacuation = f"evacuating {', '.join(map(str, evacuating))}" if evacuating else "no evacuation"
    if not eviction.get("available"):  # an evacuation still runs when only eviction.enabled is false
        why = eviction.get("unavailable_reason") or "no reason given"
        waiting = f"; waiting: {eviction['waiting']}" if evacuating and eviction.get("waiting") else ""
        return f"evict lever: unavailable ({why})" + (f"; {evacuation}{waiting}" if evacuating else "")
    parts = [f"armed ({eviction.get('reason') or 'no reason given'})" if eviction.get("armed") else "not armed"]
    if eviction.get("waiting"):
        parts.append(f"waiting: {eviction['waiting']}")
    parts.append(evacuation)
    target = eviction.get("spread_target")
    msd = eviction.get("max_squared_deviation")
    if target is not None:
        parts.append(
            f"max squared deviation {_cell(msd, '{:.4f}')} vs target {target * target:.4f} "
            f"(target: every node within {target:g} of the mean)"
        )
    return "evict lever: available, " + "; ".join(parts)


def _alert(alert: Mapping[str, Any]) -> str:
    node = alert.get("node")
    return f"{alert.get('alertname')}" + (f"[{node}]" if node else "")


def _not_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise ValueError(f"must be 0 or more, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mqttlb status", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--url", help="the webhook's base URL (default: the local stack's, from --state-dir)")
    parser.add_argument(
        "--state-dir", type=folder, default=DEFAULT_STATE_DIR, help="the local stack's state dir (default .stack)"
    )
    parser.add_argument(
        "--token-file",
        type=Path,
        help="the webhook's bearer token (default: the local stack's <state dir>/webhook/token; none with --url)",
    )
    parser.add_argument(
        "--ca-file", type=Path, help="the CA of an https webhook (default: the local stack's, with tls: true)"
    )
    parser.add_argument("--json", action="store_true", help="print the status document as JSON")
    parser.add_argument(
        "--last",
        type=argument_type(_not_negative),
        default=10,
        help="how many recent decisions to show (default 10; 0 for none)",
    )
    parser.add_argument(
        "--timeout", type=seconds_up_to(300), default=5.0,
        help="HTTP timeout in seconds, more than 0 and at most 300 (default 5)",
    )
    add_log_flags(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = parse_args(build_parser(), argv)
    try:
        url = args.url or local_webhook_url(args.state_dir)
        token_file = args.token_file or (None if args.url else args.state_dir / "webhook" / "token")
        ca_file = args.ca_file or (None if args.url else local_ca(args.state_dir))
        document = fetch_status(url, args.timeout, token_file, ca_file)
    except StatusError as exc:
        return refuse(exc, "mqttlb status: error")
    try:
        print(json.dumps(document, indent=2, sort_keys=True) if args.json else render(document, args.last))
        sys.stdout.flush()
    except BrokenPipeError:  # `mqttlb status | head`: the reader left; nothing more to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
