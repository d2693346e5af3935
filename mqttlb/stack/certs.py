"""The local stack's own certificate authority, for ``tls: true`` (every HTTP part over HTTPS).

:func:`ensure_certificates` generates, once per state dir and only when missing (a restart keeps them,
so clients that trust the CA keep trusting it): a CA (EC P-256, 10 years, ``secrets/ca.crt``) and one
server certificate it signs for ``127.0.0.1`` and ``localhost`` (1 year, ``secrets/server.crt``), with
their keys (mode 0600).  Every part of the stack presents the server certificate (it listens on
loopback only) and every client checks it against ``ca.crt``: ``curl --cacert .stack/secrets/ca.crt``.
Built with the ``cryptography`` package; no ``openssl`` command is needed.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import secrets
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from mqttlb.atomic import atomic_write_text
from mqttlb.stack.topology import LOOPBACK, Paths

CA_DAYS = 3650
SERVER_DAYS = 365


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "mqttlb local stack"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    atomic_write_text(path, pem.decode())
    path.chmod(0o600)


def _write_cert(path: Path, cert: x509.Certificate) -> None:
    atomic_write_text(path, cert.public_bytes(serialization.Encoding.PEM).decode())
    path.chmod(0o644)


def ensure_certificates(paths: Paths, now: dt.datetime | None = None) -> bool:
    """Generate the CA and the server certificate under ``paths`` unless all four files exist.
    Returns True when it wrote them."""
    files = (paths.tls_ca, paths.tls_ca_key, paths.tls_cert, paths.tls_key)
    if all(f.exists() for f in files):
        return False
    start = (now or dt.datetime.now(dt.UTC)) - dt.timedelta(minutes=5)  # tolerate a little clock skew
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name(f"mqttlb local CA {secrets.token_hex(4)}")  # a CN holds at most 64 characters
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + dt.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    server = (
        x509.CertificateBuilder()
        .subject_name(_name(LOOPBACK))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + dt.timedelta(days=SERVER_DAYS))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(LOOPBACK)), x509.DNSName("localhost")]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    paths.tls_ca.parent.mkdir(parents=True, exist_ok=True)
    _write_key(paths.tls_ca_key, ca_key)
    _write_key(paths.tls_key, key)
    _write_cert(paths.tls_ca, ca)
    _write_cert(paths.tls_cert, server)
    return True
