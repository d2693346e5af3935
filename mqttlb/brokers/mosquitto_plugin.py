"""The Mosquitto eviction plugin as a node loads it: where the built library is and its config lines.

``stack/install.sh`` (or ``make plugin``) builds ``brokers/mosquitto-plugin/mqttlb_evict.c`` into
``<venv>/lib/mqttlb/mqttlb_evict.so``; ``MQTTLB_MOSQUITTO_PLUGIN`` points elsewhere.  The options and
the wire protocol are described in ``brokers/mosquitto-plugin/README.md``.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

from mqttlb import contract
from mqttlb.shipped import checkout_root

PLUGIN_ENV = "MQTTLB_MOSQUITTO_PLUGIN"
PLUGIN_FILE = "mqttlb_evict.so"


class PluginMissingError(FileNotFoundError):
    """The plugin library was not built (or ``MQTTLB_MOSQUITTO_PLUGIN`` names a missing file)."""


@dataclass(frozen=True)
class PluginOptions:
    """The plugin's ``plugin_opt_*`` settings.

    ``control_client_id`` (and ``control_username`` when set): the only client whose commands are carried
    out.  ``max_per_second`` (clients/s) and ``max_clients`` (per command) bound every evict command;
    ``load_window_seconds`` is the time constant of the per-client rates.  ``mqtt5_clean_start_transient``:
    count MQTT 5 clients that connected with Clean Start as not persistent (the 2.0 plugin API does not
    show their session expiry, so by default every MQTT 5 client counts as persistent).
    """

    control_client_id: str = contract.EVICTION_CONTROL_CLIENT_ID
    control_username: str | None = None
    max_per_second: float = 100.0
    max_clients: int = 1000
    load_window_seconds: float = 10.0
    mqtt5_clean_start_transient: bool = False


def plugin_path() -> Path:
    """Where the built plugin is: ``$MQTTLB_MOSQUITTO_PLUGIN``, else ``<sys.prefix>/lib/mqttlb/mqttlb_evict.so``."""
    override = os.environ.get(PLUGIN_ENV)
    return Path(override) if override else Path(sys.prefix) / "lib" / "mqttlb" / PLUGIN_FILE


def built_plugin() -> Path:
    """The built plugin's path (:func:`plugin_path`) when the file is there.

    Raises PluginMissingError with one line saying what to do: from a checkout, ``make install``; from
    an installed wheel (which carries no C build), build it with the plugin's Makefile in a checkout or
    point ``MQTTLB_MOSQUITTO_PLUGIN`` at a built library; with that variable set, that it names no file.
    """
    path = plugin_path()
    if path.is_file():
        return path
    if os.environ.get(PLUGIN_ENV):
        raise PluginMissingError(
            f"the Mosquitto eviction plugin is missing: {path} (environment variable {PLUGIN_ENV}) is not a file; "
            f"point it at a built {PLUGIN_FILE}"
        )
    if checkout_root() is not None:
        how = "run `make install` (stack/install.sh builds it from brokers/mosquitto-plugin)"
    else:
        how = (
            f"mqttlb is installed without it: build it from an mqttlb checkout with "
            f"`make -C brokers/mosquitto-plugin VENV={sys.prefix}`"
        )
    raise PluginMissingError(
        f"the Mosquitto eviction plugin is not built: {path} is missing; {how} "
        f"or set {PLUGIN_ENV}=/path/to/{PLUGIN_FILE}"
    )


def config_lines(options: PluginOptions | None = None) -> list[str]:
    """The mosquitto.conf lines that load the plugin with ``options`` (default: :class:`PluginOptions`).

    Raises PluginMissingError when the library is not there: the stack's nodes must not start without it.
    """
    opts = options or PluginOptions()
    path = built_plugin()
    lines = [
        f"plugin {path}",
        f"plugin_opt_control_client_id {opts.control_client_id}",
        f"plugin_opt_max_per_second {opts.max_per_second:g}",
        f"plugin_opt_max_clients {opts.max_clients}",
        f"plugin_opt_load_window_seconds {opts.load_window_seconds:g}",
        f"plugin_opt_mqtt5_clean_start_transient {str(opts.mqtt5_clean_start_transient).lower()}",
    ]
    if opts.control_username is not None:
        lines.insert(2, f"plugin_opt_control_username {opts.control_username}")
    return lines
