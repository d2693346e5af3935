"""``mqttlb test-alert``: send a clearly-labelled test alert through Alertmanager to the webhook.

The alert (``alertname="MqttlbTestAlert"``, ``mqttlb_test="true"``, ``action="rebalance"``, the
cluster's label and a fresh ``test_id``) is posted to Alertmanager's ``POST /api/v2/alerts``, so it
takes the same route as a real rebalance alert: Alertmanager groups it, waits ``group_wait`` and
calls the webhook with its bearer token.  The webhook records it (log line, audit entry of kind
``test``, ``mqttlb_webhook_actions_total{kind="test"}``, the recent decisions of `mqttlb status`)
and moves no lever.  The alert resolves by itself after ``--duration`` seconds.

By default the command then polls the webhook's ``/status`` until the entry with its ``test_id``
appears (``--wait`` seconds; 0 = do not wait) and says where to look.  A webhook whose scope leaves the
alert out (``--cluster`` naming another MQTT cluster) records it as ignored, and the command says so.
Before anything is posted the command checks the webhook's token file (readable, not empty) and, unless
``--wait 0``, that the webhook answers ``GET /status`` with that token (200): a missing or wrong token, or
a webhook that is not up, stops it with one line and nothing sent.
Exit status: 0 recorded (or sent, with ``--wait 0``), 1 sent but not recorded in time, or recorded as
ignored, 2 nothing sent (no stack, bad flag, unreadable or refused webhook token, webhook down,
Alertmanager refused or did not answer).  The local
stack's Alertmanager wants the stack's web login and its webhook's ``/status`` its bearer token: both
are read from the state dir.
"""

from __future__ import annotations

import argparse
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import requests

from mqttlb.commandline import argument_type, folder, parse_args, refuse
from mqttlb.contract import (
    ACTION_LABEL,
    ALERT_TEST,
    ALERTNAME_LABEL,
    CLUSTER_LABEL,
    TEST_ID_LABEL,
    TEST_LABEL,
    Action,
    OutcomeKind,
)
from mqttlb.logs import add_log_flags
from mqttlb.secure import SecretError, read_secret
from mqttlb.status import DEFAULT_STATE_DIR

POLL_SECONDS = 0.5


class AlertSendError(RuntimeError):
    """The test alert could not be sent; the message says why."""


@dataclass(frozen=True)
class Target:
    """Where the test alert goes and where its effect is read: URLs, the cluster label, the audit log."""

    alertmanager: str
    webhook: str
    cluster: str
    audit_log: Path | None
    webhook_token: Path | None = None  # the bearer token the webhook's /status needs
    alertmanager_login: tuple[str, Path] | None = None  # basic-auth user and password file Alertmanager wants
    amtool_config: Path | None = None  # amtool's --http.config.file with that login
    ca_file: str | None = None  # the CA of https URLs (the local stack's tls: true)
    cluster_label: str = CLUSTER_LABEL  # the name of the MQTT cluster label (parameter mqtt_cluster_label)


def local_target(state_dir: Path) -> Target:
    """The local stack started in ``state_dir`` (its recorded settings); raises AlertSendError."""
    from mqttlb.stack.builders import WEB_USER, stack_ca
    from mqttlb.stack.config import recorded_config  # the stack package only when asked
    from mqttlb.stack.topology import native_topology

    cfg = recorded_config(state_dir)
    if cfg is None:
        raise AlertSendError(
            f"no stack was started in {state_dir.resolve()} (run `make stack-up`, or pass --alertmanager and --webhook)"
        )
    topo = native_topology(cfg)
    state = topo.state
    return Target(
        topo.alertmanager.url(),
        topo.webhook.url(),
        cfg.cluster,
        state.webhook_audit,
        state.webhook_token,
        (WEB_USER, state.web_password),
        state.amtool_config,
        stack_ca(topo),
        cfg.params.mqtt_cluster_label,
    )


def alert_document(
    cluster: str, test_id: str, duration_s: float, now: datetime | None = None, cluster_label: str = CLUSTER_LABEL
) -> dict[str, Any]:
    """One ``postableAlert`` of Alertmanager's API v2: the labels that route it to the webhook and
    mark it a test (``cluster`` in the label ``cluster_label``), a summary, and ``endsAt`` ``duration_s``
    seconds after ``now`` (UTC)."""
    start = now or datetime.now(UTC)
    return {
        "labels": {
            ALERTNAME_LABEL: ALERT_TEST,
            ACTION_LABEL: Action.REBALANCE.value,
            cluster_label: cluster,
            TEST_LABEL: "true",
            TEST_ID_LABEL: test_id,
        },
        "annotations": {
            "summary": "test alert sent by `mqttlb test-alert`",
            "description": "Routed to the rebalancer webhook like a rebalance alert; the webhook records it "
            "(audit log, mqttlb status) and changes no weight or shedding.",
        },
        "startsAt": start.isoformat().replace("+00:00", "Z"),
        "endsAt": (start + timedelta(seconds=duration_s)).isoformat().replace("+00:00", "Z"),
    }


def read_token(token_file: Path) -> str:
    """The bearer token in ``token_file`` (surrounding whitespace stripped, ``secure.read_secret``); raises
    AlertSendError when the file cannot be read or holds nothing."""
    try:
        return read_secret(token_file, "the webhook's token file")
    except SecretError as exc:
        raise AlertSendError(str(exc)) from None


def check_webhook(webhook: str, token_file: Path | None, timeout: float, ca_file: str | None = None) -> None:
    """``GET <webhook>/status`` with the bearer token of ``token_file`` (None: no header) must answer 200;
    raises AlertSendError (one line: token refused, webhook down, other status) otherwise, so that nothing
    is posted that could not be seen arriving."""
    headers = {"Authorization": f"Bearer {read_token(token_file)}"} if token_file is not None else {}
    url = f"{webhook.rstrip('/')}/status"
    try:
        answer = requests.get(url, headers=headers, timeout=timeout, verify=ca_file or True)
    except requests.RequestException as exc:
        raise AlertSendError(f"the webhook does not answer at {url}: {type(exc).__name__}") from None
    if answer.status_code in (401, 403):
        which = f"the token in {token_file}" if token_file is not None else "a request without a token"
        raise AlertSendError(
            f"the webhook at {url} refuses {which} ({answer.status_code}); pass its token with --webhook-token-file"
        )
    if answer.status_code != 200:
        raise AlertSendError(f"the webhook at {url} answered {answer.status_code}, not 200")


def send(
    alertmanager: str,
    alert: dict[str, Any],
    timeout: float,
    login: tuple[str, Path] | None = None,
    ca_file: str | None = None,
) -> None:
    """POST ``alert`` to ``<alertmanager>/api/v2/alerts`` (``login``: basic-auth user and password file;
    ``ca_file``: the CA of an https URL); raises AlertSendError unless it answers 200."""
    endpoint = f"{alertmanager.rstrip('/')}/api/v2/alerts"
    try:
        auth = (login[0], login[1].read_text().strip()) if login is not None else None
    except OSError as exc:
        raise AlertSendError(f"cannot read Alertmanager's password: {exc}") from None
    try:
        answer = requests.post(endpoint, json=[alert], timeout=timeout, auth=auth, verify=ca_file or True)
    except requests.RequestException as exc:
        raise AlertSendError(f"Alertmanager does not answer at {endpoint}: {type(exc).__name__}") from None
    if answer.status_code != 200:
        raise AlertSendError(f"Alertmanager refused the test alert ({answer.status_code}): {answer.text[:200]}")


def recorded(
    webhook: str, test_id: str, timeout: float, token_file: Path | None = None, ca_file: str | None = None
) -> dict[str, Any] | None:
    """The entry of the webhook's ``/status`` recent decisions that records ``test_id``, or None
    (not yet, or the webhook does not answer); ``token_file``: the webhook's bearer token; ``ca_file``:
    the CA of an https URL."""
    try:
        headers = {"Authorization": f"Bearer {read_token(token_file)}"} if token_file else {}
        url = f"{webhook.rstrip('/')}/status"
        document = requests.get(url, headers=headers, timeout=timeout, verify=ca_file or True).json()
    except (AlertSendError, requests.RequestException, ValueError):
        return None
    for entry in document.get("recent", []) if isinstance(document, dict) else []:
        if entry.get("kind") == OutcomeKind.TEST.value and test_id in entry.get("test_ids", []):
            return dict(entry)
    return None


def wait_recorded(
    webhook: str, test_id: str, wait_s: float, token_file: Path | None = None, ca_file: str | None = None
) -> dict[str, Any] | None:
    """Poll :func:`recorded` every POLL_SECONDS for up to ``wait_s`` seconds."""
    deadline = time.monotonic() + wait_s
    while True:
        entry = recorded(webhook, test_id, timeout=2.0, token_file=token_file, ca_file=ca_file)
        if entry is not None or time.monotonic() >= deadline:
            return entry
        time.sleep(POLL_SECONDS)


def _seconds(text: str) -> float:
    value = float(text)
    if not 0 <= value <= 86400:
        raise ValueError(f"must be between 0 and 86400 seconds, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mqttlb test-alert", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--state-dir", type=folder, default=DEFAULT_STATE_DIR, help="the local stack's state dir (default .stack)"
    )
    parser.add_argument("--alertmanager", help="Alertmanager's base URL (default: the local stack's)")
    parser.add_argument("--webhook", help="the webhook's base URL (default: the local stack's)")
    parser.add_argument("--cluster", help="the alert's cluster label (default: the local stack's)")
    parser.add_argument(
        "--webhook-token-file", type=Path, help="the webhook's bearer token (default: the local stack's)"
    )
    parser.add_argument(
        "--duration", type=argument_type(_seconds), default=120.0, help="seconds until the alert resolves (default 120)"
    )
    parser.add_argument(
        "--wait",
        type=argument_type(_seconds),
        default=60.0,
        help="seconds to wait for the webhook to record it (default 60; 0 = send and return)",
    )
    add_log_flags(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = parse_args(build_parser(), argv)
    try:
        if args.alertmanager and args.webhook and args.cluster:
            target = Target(args.alertmanager, args.webhook, args.cluster, None, args.webhook_token_file)
        else:
            local = local_target(args.state_dir)
            target = Target(
                args.alertmanager or local.alertmanager,
                args.webhook or local.webhook,
                args.cluster or local.cluster,
                local.audit_log,
                args.webhook_token_file or local.webhook_token,
                None if args.alertmanager else local.alertmanager_login,
                None if args.alertmanager else local.amtool_config,
                local.ca_file,
                local.cluster_label,
            )
        if args.duration <= 0:
            raise AlertSendError("--duration must be more than 0 seconds")
        if target.webhook_token is not None:
            read_token(target.webhook_token)
        if args.wait > 0:
            check_webhook(target.webhook, target.webhook_token, timeout=5.0, ca_file=target.ca_file)
        test_id = uuid.uuid4().hex[:12]
        alert = alert_document(target.cluster, test_id, args.duration, cluster_label=target.cluster_label)
        send(target.alertmanager, alert, timeout=10.0, login=target.alertmanager_login, ca_file=target.ca_file)
    except AlertSendError as exc:
        return refuse(exc, "mqttlb test-alert: error")
    print(
        f'sent {ALERT_TEST} {TEST_ID_LABEL}={test_id} (cluster {target.cluster}, {TEST_LABEL}="true") to '
        f"{target.alertmanager}; it resolves in {args.duration:.0f} s"
    )
    login = f" --http.config.file={target.amtool_config}" if target.amtool_config is not None else ""
    print(f"  in Alertmanager: amtool --alertmanager.url={target.alertmanager}{login} alert query {TEST_LABEL}=true")
    if args.wait <= 0:
        print("  the webhook records it after Alertmanager's group_wait: `mqttlb status`")
        return 0
    started = time.monotonic()
    entry = wait_recorded(target.webhook, test_id, args.wait, target.webhook_token, target.ca_file)
    if entry is None:
        print(
            f"the webhook at {target.webhook} did not record it within {args.wait:.0f} s; "
            "see its log (.stack/logs/webhook.log) and the amtool line above"
        )
        return 1
    why = (entry.get("ignored") or {}).get(test_id)
    if why:
        print(
            f"the webhook received it after {time.monotonic() - started:.1f} s and IGNORED it ({why}): "
            f"a real alert with these labels would change nothing: {entry['reason']}"
        )
        return 1
    print(f"the webhook recorded it after {time.monotonic() - started:.1f} s and moved no lever: {entry['reason']}")
    print("  see it in `mqttlb status` (last decisions)" + (f" and {target.audit_log}" if target.audit_log else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
