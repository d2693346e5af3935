"""mqttlb.secure: what a server accepts, secret files, TLS contexts, client sessions (issue 18)."""

from __future__ import annotations

import base64
import ssl

import bcrypt
import pytest
from tlsutil import self_signed

from mqttlb.secure import (
    BasicAuth,
    ClientAuth,
    Credentials,
    MqttTls,
    SecretError,
    ServerTls,
    bcrypt_hash,
    load_credentials,
    read_secret,
)

TOKEN = "a-bearer-token-0123456789"


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.mark.parametrize(
    ("header", "allowed"),
    [
        (f"Bearer {TOKEN}", True),
        (f"bearer   {TOKEN}  ", True),  # scheme case-insensitive, whitespace around the value
        (basic("ops", "pw-0123"), True),
        (None, False),
        ("", False),
        (f"Bearer {TOKEN}x", False),
        (basic("ops", "wrong"), False),
        (basic("other", "pw-0123"), False),
        ("Basic not-base64!", False),
        ("Basic " + base64.b64encode(b"no-colon").decode(), False),
        (f"Token {TOKEN}", False),
    ],
)
def test_credentials_accept_only_the_token_or_the_user(header, allowed):
    assert Credentials(TOKEN, ("ops", "pw-0123")).allows(header) is allowed


def test_no_credentials_means_open_and_schemes_name_what_is_accepted():
    assert not Credentials().required and Credentials().allows(None)
    assert Credentials(TOKEN).schemes() == "Bearer" and Credentials(None, ("u", "p")).schemes() == "Basic"
    assert not Credentials(TOKEN).allows(basic("u", "p"))  # basic is refused when only a token is set


def test_secret_files_are_read_stripped_and_refused_when_unusable(tmp_path):
    (tmp_path / "ok").write_text(f"  {TOKEN}\n")
    assert read_secret(tmp_path / "ok") == TOKEN
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(SecretError, match="empty"):
        read_secret(tmp_path / "empty")
    with pytest.raises(SecretError, match="cannot read"):
        read_secret(tmp_path / "missing")
    (tmp_path / "short").write_text("short\n")
    with pytest.raises(SecretError, match="shorter than 16"):
        load_credentials(tmp_path / "short", None)
    (tmp_path / "pw").write_text("pw-0123\n")
    loaded = load_credentials(tmp_path / "ok", BasicAuth(username="ops", password_file=tmp_path / "pw"))
    assert loaded == Credentials(TOKEN, ("ops", "pw-0123"))


def test_tls_contexts_load_the_files_or_name_them(tmp_path):
    cert, key = self_signed(tmp_path)
    server = ServerTls(cert_file=cert, key_file=key, client_ca_file=cert).context()
    assert server.minimum_version == ssl.TLSVersion.TLSv1_2 and server.verify_mode == ssl.CERT_REQUIRED
    client = MqttTls(ca_file=cert).context()
    assert client.check_hostname and client.verify_mode == ssl.CERT_REQUIRED
    with pytest.raises(SecretError, match="cannot load"):
        ServerTls(cert_file=tmp_path / "nope.crt", key_file=key).context()
    with pytest.raises(SecretError, match="cannot load"):
        MqttTls(ca_file=tmp_path / "nope.crt").context()


def test_client_sessions_send_the_configured_login(tmp_path):
    (tmp_path / "pw").write_text("pw-0123\n")
    (tmp_path / "token").write_text(TOKEN + "\n")
    login = BasicAuth(username="ops", password_file=tmp_path / "pw")
    session = ClientAuth(basic_auth=login, ca_file=tmp_path / "ca").session()
    assert session.auth == ("ops", "pw-0123") and session.verify == str(tmp_path / "ca")
    bearer = ClientAuth(bearer_token_file=tmp_path / "token").session()
    assert bearer.headers["Authorization"] == f"Bearer {TOKEN}"


def test_bcrypt_hashes_check_against_the_password():
    hashed = bcrypt_hash("pw-0123", rounds=4)
    assert hashed.startswith("$2b$04$") and bcrypt.checkpw(b"pw-0123", hashed.encode())
    assert not bcrypt.checkpw(b"other", hashed.encode())
