"""A throwaway self-signed certificate for 127.0.0.1 (openssl CLI), for the TLS tests."""

from __future__ import annotations

import subprocess
from pathlib import Path


def self_signed(directory: Path, name: str = "server") -> tuple[Path, Path]:
    """(cert, key) PEM files in ``directory`` for CN and subjectAltName IP 127.0.0.1, valid one day (EC P-256);
    the certificate is its own CA (pass it as ``verify=`` / ``ca_file``)."""
    cert, key = directory / f"{name}.crt", directory / f"{name}.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True, timeout=30,
    )
    return cert, key
