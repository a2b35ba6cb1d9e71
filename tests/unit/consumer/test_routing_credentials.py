"""Credentials of http routes: what the routing file accepts and refuses, what the worker reads
at its start, and that the secret never shows in a message, a repr or a log."""

from __future__ import annotations

import logging
import ssl
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from tls_certs import TlsFiles, make_tls_files

from consumer.main import http_participants
from consumer.routing import (
    NO_AUTH,
    HttpCredentials,
    Route,
    load_routing,
    parse_routing,
    read_http_auth,
)
from provisioning.errors import ConfigurationError

TOKEN = "s3cr3t-t0ken.abc_DEF~+/="
ROUTE = "routing: steps.'tenant.create-admin-role'"


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return make_tls_files(tmp_path_factory.mktemp("tls"))


def _http_route(**credentials: str) -> dict:
    return {"steps": {"tenant.create-admin-role": {
        "adapter": "https://identity.internal/steps", **credentials}}}


def test_credential_paths_are_read_from_the_file_relative_to_it(tmp_path: Path) -> None:
    path = tmp_path / "routing.toml"
    path.write_text("""
[steps."tenant.create-admin-role"]
adapter = "https://identity.internal/steps"
bearer_token_file = "secrets/token"
client_cert_file = "/etc/tls/worker.crt"
client_key_file = "/etc/tls/worker.key"
ca_file = "ca.crt"
""")
    route = load_routing(path).route_for("tenant", "create-admin-role")
    assert route.credentials == HttpCredentials(
        bearer_token_file=tmp_path / "secrets/token",
        client_cert_file=Path("/etc/tls/worker.crt"),
        client_key_file=Path("/etc/tls/worker.key"), ca_file=tmp_path / "ca.crt")
    # Checking the file does not read the secrets: `provisioning topics create` has none.
    assert load_routing(path).kafka_participants() == frozenset()


def test_a_route_without_credentials_has_none() -> None:
    route = parse_routing(_http_route()).route_for("tenant", "create-admin-role")
    assert route.credentials is None
    assert read_http_auth("tenant", "create-admin-role", route) is NO_AUTH


@pytest.mark.parametrize("steps, message", [
    ({"tenant.create-tenant": {"adapter": "kafka:x", "bearer_token_file": "/t"}},
     "are for http adapters only"),
    ({"tenant.create-tenant": {"bearer_token_file": "/t"}}, "are for http adapters only"),
    ({"tenant.create-tenant": {"adapter": "https://a/b", "client_cert_file": "/c"}},
     "client_cert_file and client_key_file go together"),
    ({"tenant.create-tenant": {"adapter": "https://a/b", "client_key_file": "/k"}},
     "client_cert_file and client_key_file go together"),
    ({"tenant.create-tenant": {"adapter": "http://a/b", "ca_file": "/ca"}},
     "for https URLs; 'http://a/b' is plain http"),
    ({"tenant.create-tenant": {"adapter": "https://a/b", "compensation_url": "http://a/undo",
                               "client_cert_file": "/c", "client_key_file": "/k"}},
     "for https URLs; 'http://a/undo' is plain http"),
    ({"tenant.create-tenant": {"adapter": "https://a/b", "bearer_token_file": ""}},
     "bearer_token_file"),
    ({"tenant.create-tenant": {"adapter": "https://a/b", "bearer_token": "inline"}},
     "bearer_token"),
])
def test_credential_mistakes_are_refused_naming_the_entry(steps: dict, message: str) -> None:
    with pytest.raises(ConfigurationError) as refused:
        parse_routing({"steps": steps})
    assert message in str(refused.value)
    assert "tenant.create-tenant" in str(refused.value)


def test_a_bearer_token_over_plain_http_is_allowed() -> None:
    # A loopback or mesh-encrypted participant; the README says to prefer https.
    routing = parse_routing({"steps": {"tenant.create-admin-role": {
        "adapter": "http://127.0.0.1:8080/steps", "bearer_token_file": "/t"}}})
    credentials = routing.route_for("tenant", "create-admin-role").credentials
    assert credentials == HttpCredentials(bearer_token_file=Path("/t"))


def test_the_token_is_read_trimmed_and_kept_secret(tmp_path: Path,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(f"  {TOKEN}\n")
    route = Route("http", "http://127.0.0.1:1/steps",
                  credentials=HttpCredentials(bearer_token_file=token_file))

    auth = read_http_auth("tenant", "create-admin-role", route)

    assert auth.bearer_token is not None and auth.bearer_token.get_secret_value() == TOKEN
    assert auth.tls is None
    with caplog.at_level(logging.DEBUG):
        logging.getLogger("test").info("auth %s %r route %r", auth, auth, route)
    shown = " ".join([repr(auth), str(auth), repr(route), caplog.text])
    assert TOKEN not in shown and "s3cr3t" not in shown
    assert "**********" in repr(auth)


@pytest.mark.parametrize("content, message", [
    (None, "cannot be read: No such file or directory"),
    ("", "is empty"),
    (" \n\t\n", "is empty"),
    ("s3cr3t one\nsecond", "holds more than one token"),
    ("s3cr3t\x00zero", "holds more than one token"),
    ("s3cr3t-\u00e9t\u00e9", "is not ASCII text"),
])
def test_an_unusable_token_file_stops_the_start_naming_the_route_not_the_secret(
    tmp_path: Path, content: str | None, message: str,
) -> None:
    token_file = tmp_path / "token"
    if content is not None:
        token_file.write_bytes(content.encode())
    route = Route("http", "http://127.0.0.1:1/steps",
                  credentials=HttpCredentials(bearer_token_file=token_file))
    with pytest.raises(ConfigurationError) as refused:
        read_http_auth("tenant", "create-admin-role", route)
    text = str(refused.value)
    assert text.startswith(f"{ROUTE}: bearer_token_file '{token_file}'")
    assert message in text
    assert "s3cr3t" not in text and "second" not in text


def test_the_worker_builds_its_http_participants_from_the_credentials(tmp_path: Path) -> None:
    path = tmp_path / "routing.toml"
    path.write_text('[steps."tenant.create-admin-role"]\n'
                    'adapter = "http://127.0.0.1:1/steps"\nbearer_token_file = "token"\n')
    with pytest.raises(ConfigurationError, match=r"steps.'tenant.create-admin-role'.*token"):
        http_participants(load_routing(path))  # the token file is missing: no start
    (tmp_path / "token").write_text(TOKEN)
    participants = http_participants(load_routing(path))
    assert set(participants) == {("tenant", "create-admin-role")}
    assert TOKEN not in repr(participants)


def test_client_tls_loads_into_a_context_that_trusts_the_given_ca(tls: TlsFiles) -> None:
    route = Route("http", "https://127.0.0.1:1/steps", credentials=HttpCredentials(
        client_cert_file=tls.client_cert, client_key_file=tls.client_key, ca_file=tls.ca_cert))
    auth = read_http_auth("tenant", "create-admin-role", route)
    assert isinstance(auth.tls, ssl.SSLContext)
    assert auth.tls.verify_mode is ssl.CERT_REQUIRED and auth.tls.check_hostname
    assert [c["subject"] for c in auth.tls.get_ca_certs()] == [((("commonName", "test CA"),),)]


def test_a_ca_file_alone_only_changes_whom_the_worker_trusts(tls: TlsFiles) -> None:
    route = Route("http", "https://127.0.0.1:1/steps",
                  credentials=HttpCredentials(ca_file=tls.ca_cert))
    auth = read_http_auth("tenant", "create-admin-role", route)
    assert auth.tls is not None and auth.bearer_token is None


def test_unusable_tls_files_stop_the_start_naming_the_route(tls: TlsFiles,
                                                            tmp_path: Path) -> None:
    def refused(**files: Path) -> str:
        route = Route("http", "https://127.0.0.1:1/steps", credentials=HttpCredentials(**files))
        with pytest.raises(ConfigurationError) as error:
            read_http_auth("tenant", "create-admin-role", route)
        assert str(error.value).startswith(ROUTE)
        return str(error.value)

    missing = tmp_path / "nowhere.crt"
    assert "client_cert_file" in refused(client_cert_file=missing, client_key_file=tls.client_key)
    assert "is not a readable file" in refused(ca_file=missing)
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate")
    assert "ca_file" in refused(ca_file=garbage)
    # The key of another certificate: OpenSSL's reason names the mismatch, never the key.
    mismatch = refused(client_cert_file=tls.client_cert, client_key_file=tls.other_client_key)
    assert mismatch.endswith("(KEY_VALUES_MISMATCH)")
    assert "PRIVATE KEY" not in mismatch


def test_a_key_with_a_passphrase_is_refused_not_prompted_for(tls: TlsFiles,
                                                             tmp_path: Path) -> None:
    key = serialization.load_pem_private_key(tls.client_key.read_bytes(), password=None)
    encrypted = tmp_path / "encrypted.key"
    encrypted.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"passphrase")))
    route = Route("http", "https://127.0.0.1:1/steps", credentials=HttpCredentials(
        client_cert_file=tls.client_cert, client_key_file=encrypted))
    with pytest.raises(ConfigurationError, match="unencrypted private key"):
        read_http_auth("tenant", "create-admin-role", route)
