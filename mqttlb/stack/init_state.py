"""Prepare the compose stack's shared state volume (run once by the `init` service).

Creates, only when missing (a restart keeps the existing ones): the webhook's bearer token, its xDS
streams' (in xds/, a volume of its own that only Envoy and the webhook mount), the exporters' (their
/metrics require it), the web password of Prometheus's and Alertmanager's APIs with
their web configs (its bcrypt hash), owned by the user Alertmanager and Prometheus run as so they
can read them (the webhook and the exporters run as root; the web password also by group 0, Grafana's
group, for its datasource), the mqttlb
HiveMQ extension's API token (mode 0440: HiveMQ runs as uid 10000 in group 0), and the
overload pressure file Envoy's injected_resource monitor reads ("0": no pressure).
"""

from __future__ import annotations

import argparse
import logging
import os
import secrets
import sys
from pathlib import Path

import yaml

from mqttlb.atomic import atomic_write_text
from mqttlb.commandline import parse_args, refuse
from mqttlb.logs import add_log_flags
from mqttlb.secure import bcrypt_hash, read_secret
from mqttlb.stack import builders
from mqttlb.stack.topology import Paths

log = logging.getLogger("mqttlb.compose.init")
GRAFANA_GID = 0  # the grafana image runs as uid 472 in group 0


def init_state(state_dir: Path, token_owner: int | None) -> list[Path]:
    """Create the missing files under ``state_dir``; returns the ones created."""
    paths = Paths(state_dir)
    created = []
    directories = (
        paths.webhook_dir,
        paths.xds_token.parent,
        paths.pressure_file.parent,
        paths.eds_file.parent,
        paths.hivemq_token.parent,
    )
    more = (paths.exporter_token, paths.web_password, paths.prometheus_web, paths.alertmanager_web)
    # prometheus/rules: the mount point of ../rules inside the volume (mounted read-only in Prometheus)
    for directory in (*directories, *(path.parent for path in more), paths.prometheus_rules):
        directory.mkdir(parents=True, exist_ok=True)
    tokens = (paths.webhook_token, paths.xds_token, paths.exporter_token, paths.web_password)
    for token in tokens:
        if not token.exists():
            atomic_write_text(token, secrets.token_urlsafe(32) + "\n")
            created.append(token)
    for web in (paths.prometheus_web, paths.alertmanager_web):  # basic auth of builders.WEB_USER
        if not web.exists():
            password = read_secret(paths.web_password, "web password")
            atomic_write_text(web, yaml.safe_dump(builders.web_config(bcrypt_hash(password))))
            created.append(web)
    for secret in (*tokens, paths.prometheus_web, paths.alertmanager_web):
        if token_owner is not None:
            os.chown(secret, token_owner, token_owner)
        secret.chmod(0o400)
    # Grafana (uid 472, group 0) reads the web password for its Prometheus datasource
    os.chown(paths.web_password, -1 if token_owner is None else token_owner, GRAFANA_GID)
    paths.web_password.chmod(0o440)
    if not paths.hivemq_token.exists():
        atomic_write_text(paths.hivemq_token, secrets.token_urlsafe(32) + "\n")
        created.append(paths.hivemq_token)
    paths.hivemq_token.chmod(0o440)
    if not paths.pressure_file.exists():
        atomic_write_text(paths.pressure_file, "0\n")
        created.append(paths.pressure_file)
    return created


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Prepare the mqttlb compose stack's shared state volume.")
    parser.add_argument(
        "--state-dir",
        type=Path,
        required=True,
        help="the shared volume's mount point (the webhook's state layout lives under it)",
    )
    parser.add_argument(
        "--token-owner",
        type=int,
        default=None,
        metavar="UID",
        help="give the bearer tokens to this uid/gid (Alertmanager's and Prometheus's user); default: leave it",
    )
    add_log_flags(parser)
    args = parse_args(parser, argv)
    if not args.state_dir.is_dir():
        return refuse(f"--state-dir {args.state_dir} is not a directory")
    if args.token_owner is not None and not 0 <= args.token_owner < 2**31:
        return refuse(f"--token-owner must be a uid, got {args.token_owner}")
    try:
        created = init_state(args.state_dir, args.token_owner)
    except OSError as exc:
        print(f"error: cannot prepare {args.state_dir}: {exc}", file=sys.stderr)
        return 1
    log.info(
        "state volume %s ready (created: %s)",
        args.state_dir,
        ", ".join(str(p) for p in created) or "nothing, all present",
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
