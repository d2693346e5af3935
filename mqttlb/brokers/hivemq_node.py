"""A HiveMQ CE node as the native stack and the tests start it: the brokers/hivemq launcher jar and its
command line (JVM options included), defined once.

``brokers/hivemq/build.sh`` (run by ``stack/install.sh`` when ``BROKER=hivemq`` or ``MQTTLB_HIVEMQ=1``)
builds ``brokers/hivemq/target/mqttlb-hivemq.jar`` in the checkout; ``MQTTLB_HIVEMQ_JAR`` points elsewhere.
The launcher's options are described in ``brokers/hivemq/README.md``.
"""

from __future__ import annotations

import os
from pathlib import Path

from mqttlb.shipped import checkout_root

JAR_ENV = "MQTTLB_HIVEMQ_JAR"
JAR_IN_CHECKOUT = Path("brokers") / "hivemq" / "target" / "mqttlb-hivemq.jar"
# A small heap and the serial collector: 140 MiB resident idle, 173 MiB with 100 clients (brokers/hivemq/README.md).
JVM_OPTIONS = ("-Xms64m", "-Xmx256m", "-XX:+UseSerialGC")


class JarMissingError(FileNotFoundError):
    """The launcher jar was not built (or ``MQTTLB_HIVEMQ_JAR`` names a missing file)."""


def jar_path() -> Path:
    """Where the launcher jar is: ``$MQTTLB_HIVEMQ_JAR``, else ``brokers/hivemq/target/mqttlb-hivemq.jar`` in the
    checkout mqttlb runs from.  Raises JarMissingError (saying how to build it) when the file is not there."""
    override = os.environ.get(JAR_ENV)
    root = checkout_root()
    path = Path(override) if override else (root / JAR_IN_CHECKOUT if root is not None else None)
    if path is None or not path.is_file():
        where = str(path) if path is not None else f"{JAR_IN_CHECKOUT} (mqttlb does not run from a checkout)"
        raise JarMissingError(
            f"the HiveMQ launcher is not built: {where} is missing; run `make stack-up BROKER=hivemq` "
            f"(stack/install.sh builds it with brokers/hivemq/build.sh) or set {JAR_ENV}"
        )
    return path


def launcher_args(
    jar: Path, mqtt_port: int, http_port: int, data_dir: Path, token_file: Path, *extra: str
) -> list[str]:
    """The ``java`` arguments (without ``java`` itself) that run one node: MQTT on ``127.0.0.1:mqtt_port`` (the
    launcher's default ``--bind``), the mqttlb extension's HTTP (``/metrics``, ``/mqttlb/v1/*``) on
    ``127.0.0.1:http_port``, its folder ``data_dir``, the API's bearer token in ``token_file``; ``extra``: more
    launcher options (``--evict-max-per-second 20``, ``--bind 0.0.0.0``)."""
    return [
        *JVM_OPTIONS,
        "-jar",
        str(jar),
        "--mqtt-port",
        str(mqtt_port),
        "--http-port",
        str(http_port),
        "--data-dir",
        str(data_dir),
        "--token-file",
        str(token_file),
        *extra,
    ]
