"""What ``mqttlb webhook`` checks on SIGHUP before it restarts in place (:mod:`mqttlb.reload`).

The new config file is read as a start reads it, and everything a start would refuse refuses the
reload instead, with the running webhook untouched: the file (YAML, schema, parameters), the bearer
token, the eviction secrets (``build``: the same wiring the start uses), the persisted state against
the new nodes and policy, and a changed ``listen`` address that cannot be bound.

The file is read once into a private copy (:func:`checked_copy`), the copy is checked, and the new
process reads that copy (named by $MQTTLB_WEBHOOK_CHECKED_CONFIG, :func:`take_checked_copy`) instead of
the file: an edit made during the restart waits for the next SIGHUP.
"""

from __future__ import annotations

import os
import socket
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from mqttlb.webhook.config import WebhookConfig, WebhookConfigError, load_config
from mqttlb.webhook.state import load_state
from mqttlb.yamlfile import MAX_BYTES

CHECKED_CONFIG_ENV = "MQTTLB_WEBHOOK_CHECKED_CONFIG"


def checked_copy(path: Path) -> Path:
    """A private copy (mode 0600, in the temp directory) of the config file at ``path``, to check and hand
    to the restarted process.  Raises WebhookConfigError ``"<path>: cannot read: <why>"`` or
    ``"<path>: larger than N bytes"``."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise WebhookConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if len(data) > MAX_BYTES:
        raise WebhookConfigError(f"{path}: larger than {MAX_BYTES} bytes")
    handle, name = tempfile.mkstemp(prefix="mqttlb-webhook-checked-", suffix=".yaml")
    with os.fdopen(handle, "wb") as out:
        out.write(data)
    return Path(name)


def take_checked_copy(env: dict[str, str] | None = None) -> Path | None:
    """The checked copy a restart in place handed over (the variable is removed from ``env``, default
    ``os.environ``, so it reaches no child process and no later restart); None on a fresh start."""
    name = (os.environ if env is None else env).pop(CHECKED_CONFIG_ENV, None)
    return Path(name) if name else None


def changed_keys(old: WebhookConfig, new: WebhookConfig) -> list[str]:
    """The top-level config keys whose values differ, sorted."""
    before, after = old.model_dump(mode="json"), new.model_dump(mode="json")
    return sorted(key for key in after if before.get(key) != after[key])


def check_reload(
    path: Path,
    overrides: Mapping[str, Any],
    running: WebhookConfig,
    build: Callable[[WebhookConfig], object],
    read_from: Path | None = None,
) -> str:
    """Validate the config at ``path`` (with the command line's ``overrides``; read from ``read_from``, a
    :func:`checked_copy`, when given) for a restart of the webhook now running ``running``; ``build``
    wires it as a start would (token, eviction secrets).

    Returns what changed, e.g. ``"changed: dry_run, params_overrides"``.  Raises WebhookConfigError,
    StateError or OSError (each one line) for what a start would refuse."""
    config = load_config(path, overrides, read_from=read_from)
    build(config)
    load_state(config.state_file, config.node_names, config.params().policy)
    if config.listen != running.listen:
        host, port = config.listen_host_port()
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            try:
                probe.bind((host, port))
            except OSError as exc:
                raise WebhookConfigError(f"{path}: listen: cannot listen on {config.listen}: {exc.strerror}") from None
    keys = changed_keys(running, config)
    return f"changed: {', '.join(keys)}" if keys else "no setting changed; token and secret files read again"
