"""What ``mqttlb webhook`` checks on SIGHUP before it restarts in place (:mod:`mqttlb.reload`).

The new config file is read as a start reads it, and everything a start would refuse refuses the
reload instead, with the running webhook untouched: the file (YAML, schema, parameters), the bearer
token, the eviction secrets (``build``: the same wiring the start uses), the persisted state against
the new nodes and policy, and a changed ``listen`` address that cannot be bound.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from mqttlb.webhook.config import WebhookConfig, WebhookConfigError, load_config
from mqttlb.webhook.state import load_state


def changed_keys(old: WebhookConfig, new: WebhookConfig) -> list[str]:
    """The top-level config keys whose values differ, sorted."""
    before, after = old.model_dump(mode="json"), new.model_dump(mode="json")
    return sorted(key for key in after if before.get(key) != after[key])


def check_reload(
    path: Path,
    overrides: Mapping[str, Any],
    running: WebhookConfig,
    build: Callable[[WebhookConfig], object],
) -> str:
    """Validate the config at ``path`` (with the command line's ``overrides``) for a restart of the
    webhook now running ``running``; ``build`` wires it as a start would (token, eviction secrets).

    Returns what changed, e.g. ``"changed: dry_run, params_overrides"``.  Raises WebhookConfigError,
    StateError or OSError (each one line) for what a start would refuse."""
    config = load_config(path, overrides)
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
