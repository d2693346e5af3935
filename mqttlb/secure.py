"""Credentials and TLS for mqttlb's own HTTP servers (webhook, exporters) and for its HTTP and MQTT clients.

Server side (the webhook's config keys, the exporters' flags):

- :class:`BasicAuth` -- a user name and the file holding its password (read at start, never in YAML);
- :class:`ServerTls` -- a PEM certificate chain and key (``cert_file``, ``key_file``), optionally
  ``client_ca_file`` to require client certificates signed by it; :meth:`ServerTls.context` builds the
  ``ssl.SSLContext`` (TLS 1.2 or later);
- :class:`Credentials` -- what a server accepts: a bearer token and/or one basic-auth user; either one
  passes.  :meth:`Credentials.allows` checks an ``Authorization`` header in constant time.

Client side:

- :class:`ClientAuth` -- how to call a server: basic auth (user + password file) or a bearer token
  file, and a CA file for ``https`` with a private CA; :meth:`ClientAuth.session` gives a
  ``requests.Session`` that sends them.
- :class:`MqttTls` -- MQTT over TLS for paho clients: CA file, optional client certificate and key.

Every secret file is read with :func:`read_secret`: its content without the trailing newline; an
unreadable or empty file raises :class:`SecretError` naming the file.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import ssl
from dataclasses import dataclass
from pathlib import Path

import bcrypt
import requests
from pydantic import BaseModel, ConfigDict, Field

MIN_TOKEN_CHARS = 16


class SecretError(ValueError):
    """A secret file is unreadable or empty, or a TLS file cannot be loaded; the message names the file."""


def read_secret(path: Path, what: str = "secret file") -> str:
    """The content of ``path`` stripped of surrounding whitespace; SecretError when unreadable or empty."""
    try:
        value = Path(path).read_text().strip()
    except OSError as exc:
        raise SecretError(f"{what} {path}: cannot read: {exc.strerror or exc}") from None
    if not value:
        raise SecretError(f"{what} {path}: empty")
    return value


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BasicAuth(_Model):
    """HTTP basic auth: ``username`` and the file holding the password (RFC 7617)."""

    username: str = Field(min_length=1, pattern=r"^[^:\s]+$")
    password_file: Path

    def password(self) -> str:
        return read_secret(self.password_file, "basic_auth.password_file")


class ServerTls(_Model):
    """Serve HTTPS with the PEM ``cert_file`` (chain) and ``key_file``; with ``client_ca_file``, every
    client must present a certificate signed by that CA (mutual TLS)."""

    cert_file: Path
    key_file: Path
    client_ca_file: Path | None = None

    def context(self) -> ssl.SSLContext:
        """A server-side SSLContext (TLS >= 1.2); SecretError when a file cannot be loaded."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        try:
            context.load_cert_chain(str(self.cert_file), str(self.key_file))
            if self.client_ca_file is not None:
                context.load_verify_locations(cafile=str(self.client_ca_file))
                context.verify_mode = ssl.CERT_REQUIRED
        except (OSError, ssl.SSLError) as exc:
            raise SecretError(f"tls: cannot load {self.cert_file} / {self.key_file}: {exc}") from None
        return context


@dataclass(frozen=True)
class Credentials:
    """What a server accepts on its guarded routes: ``token`` (bearer) and/or ``basic`` (user, password).

    With neither, :attr:`required` is False and every request passes."""

    token: str | None = None
    basic: tuple[str, str] | None = None

    @property
    def required(self) -> bool:
        return self.token is not None or self.basic is not None

    def allows(self, authorization: str | None) -> bool:
        """Whether the ``Authorization`` header value carries an accepted credential (constant-time compares)."""
        if not self.required:
            return True
        scheme, _, presented = (authorization or "").partition(" ")
        scheme, presented = scheme.lower(), presented.strip()
        if scheme == "bearer" and self.token is not None:
            return hmac.compare_digest(presented.encode(), self.token.encode())
        if scheme == "basic" and self.basic is not None:
            try:
                decoded = base64.b64decode(presented, validate=True)
            except (binascii.Error, ValueError):
                return False
            user, sep, password = decoded.partition(b":")
            expected_user, expected_password = (part.encode() for part in self.basic)
            same_user = hmac.compare_digest(user, expected_user)
            same_password = hmac.compare_digest(password, expected_password)
            return bool(sep) and same_user and same_password
        return False

    def schemes(self) -> str:
        """The accepted schemes for a ``WWW-Authenticate`` header and refusal messages: ``Bearer, Basic``."""
        return ", ".join(s for s, on in (("Bearer", self.token), ("Basic", self.basic)) if on is not None)


def load_credentials(token_file: Path | None, basic_auth: BasicAuth | None) -> Credentials:
    """The credentials of a server from its token file and basic-auth block (either may be None).

    Raises SecretError for an unreadable file or a token shorter than 16 characters."""
    token = None
    if token_file is not None:
        token = read_secret(token_file, "token file")
        if len(token) < MIN_TOKEN_CHARS:
            raise SecretError(f"token file {token_file}: bearer token shorter than {MIN_TOKEN_CHARS} characters")
    basic = (basic_auth.username, basic_auth.password()) if basic_auth is not None else None
    return Credentials(token, basic)


BCRYPT_ROUNDS = 10  # Prometheus and Alertmanager check the hash on every request; the password itself is random


def bcrypt_hash(password: str, rounds: int = BCRYPT_ROUNDS) -> str:
    """The bcrypt hash of ``password`` (``$2b$...``) for a web config's ``basic_auth_users``."""
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds)).decode()


class ClientAuth(_Model):
    """How mqttlb calls a server: ``basic_auth`` or ``bearer_token_file`` (not both), and ``ca_file`` to
    verify an ``https`` server signed by a private CA."""

    basic_auth: BasicAuth | None = None
    bearer_token_file: Path | None = None
    ca_file: Path | None = None

    def session(self) -> requests.Session:
        """A requests.Session sending these credentials; SecretError when a file is unreadable."""
        session = requests.Session()
        if self.basic_auth is not None:
            session.auth = (self.basic_auth.username, self.basic_auth.password())
        elif self.bearer_token_file is not None:
            token = read_secret(self.bearer_token_file, "bearer_token_file")
            session.headers["Authorization"] = f"Bearer {token}"
        if self.ca_file is not None:
            session.verify = str(self.ca_file)
        return session


def client_session(auth: ClientAuth | None) -> requests.Session:
    """``auth.session()``, or a plain session when ``auth`` is None."""
    return auth.session() if auth is not None else requests.Session()


class MqttTls(_Model):
    """MQTT over TLS (paho's ``tls_set``): verify the broker with ``ca_file`` (None: the system's CAs),
    and present ``cert_file`` / ``key_file`` when the broker requires client certificates."""

    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None

    def context(self) -> ssl.SSLContext:
        """A client SSLContext that checks the broker's certificate and name; SecretError when a file fails."""
        try:
            context = ssl.create_default_context(cafile=str(self.ca_file) if self.ca_file is not None else None)
            if self.cert_file is not None:
                context.load_cert_chain(str(self.cert_file), str(self.key_file) if self.key_file else None)
        except (OSError, ssl.SSLError) as exc:
            raise SecretError(f"tls: cannot load {self.ca_file or 'system CAs'} / {self.cert_file}: {exc}") from None
        return context
