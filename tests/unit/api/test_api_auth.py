"""Bearer tokens: what verifies, and each way a token is refused."""

from __future__ import annotations

import time
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import serialization

from api.auth import ALL_PERMISSIONS, READ, Caller, TokenVerifier, Unauthenticated, issue_token
from provisioning.devservices.signing_key import KEY_ID, DevSigningKey
from provisioning.errors import ConfigurationError
from provisioning.settings import Settings


@pytest.fixture(scope="module")
def key(tmp_path_factory: pytest.TempPathFactory) -> DevSigningKey:
    return DevSigningKey(tmp_path_factory.mktemp("auth")).ensure()


@pytest.fixture(scope="module")
def other_key(tmp_path_factory: pytest.TempPathFactory) -> DevSigningKey:
    return DevSigningKey(tmp_path_factory.mktemp("other")).ensure()


@pytest.fixture(scope="module")
def verifier(key: DevSigningKey) -> TokenVerifier:
    return TokenVerifier(Settings(auth_jwks_file=str(key.jwks_file)))


def _token(key: DevSigningKey, *, ttl_s: int = 300, **overrides: object) -> str:
    now = int(time.time())
    claims: dict[str, object] = {
        "iss": "provisioning-dev", "aud": "provisioning-api", "sub": "ada",
        "tenant_id": "tenant-1", "permissions": list(ALL_PERMISSIONS), "iat": now,
        "exp": now + ttl_s,
    }
    claims.update(overrides)
    claims = {k: v for k, v in claims.items() if v is not None}
    return jwt.encode(claims, key.private_key_pem(), algorithm="RS256", headers={"kid": KEY_ID})


def test_a_valid_token_names_the_caller_its_tenant_and_permissions(
    key: DevSigningKey, verifier: TokenVerifier
) -> None:
    token = issue_token(key.private_key_pem(), key_id=KEY_ID, issuer="provisioning-dev",
                        audience="provisioning-api", subject="ada", tenant_id="tenant-1",
                        permissions=(READ,), ttl_s=60, now=int(time.time()))
    assert verifier.verify(token) == Caller("ada", "tenant-1", frozenset({READ}))


def test_scope_is_read_when_there_is_no_permissions_claim(
    key: DevSigningKey, verifier: TokenVerifier
) -> None:
    caller = verifier.verify(_token(key, permissions=None, scope="provisioning:read x"))
    assert caller.permissions == {"provisioning:read", "x"}


@pytest.mark.parametrize("overrides, message", [
    ({"ttl_s": -120}, "expired"),
    ({"aud": "someone-else"}, "(?i)audience"),
    ({"iss": "https://evil.example"}, "issuer"),
    ({"tenant_id": None}, "tenant_id"),
    ({"sub": None}, "sub"),
])
def test_tokens_with_wrong_claims_are_refused(
    key: DevSigningKey, verifier: TokenVerifier, overrides: dict[str, object], message: str
) -> None:
    with pytest.raises(Unauthenticated, match=message):
        verifier.verify(_token(key, **overrides))


def test_a_token_signed_by_another_key_is_refused(
    other_key: DevSigningKey, verifier: TokenVerifier
) -> None:
    with pytest.raises(Unauthenticated, match="not valid"):
        verifier.verify(_token(other_key))


def test_unsigned_and_symmetric_tokens_are_refused(
    key: DevSigningKey, verifier: TokenVerifier
) -> None:
    claims = jwt.decode(_token(key), options={"verify_signature": False})
    unsigned = jwt.encode(claims, None, algorithm="none", headers={"kid": KEY_ID})
    # The classic confusion: HMAC keyed with the public key the server knows.
    public_pem = serialization.load_pem_private_key(key.private_key_pem(), None).public_key()
    pem = public_pem.public_bytes(serialization.Encoding.PEM,
                                  serialization.PublicFormat.SubjectPublicKeyInfo)
    for token in (unsigned, _hmac(claims, pem), "not-a-token"):
        with pytest.raises(Unauthenticated):
            verifier.verify(token)


def _hmac(claims: dict[str, object], secret: bytes) -> str:
    import base64
    import hashlib
    import hmac
    import json

    def b64(data: bytes) -> bytes:
        return base64.urlsafe_b64encode(data).rstrip(b"=")

    header = b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": KEY_ID}).encode())
    body = b64(json.dumps(claims).encode())
    signature = b64(hmac.new(secret, header + b"." + body, hashlib.sha256).digest())
    return (header + b"." + body + b"." + signature).decode()


def test_the_api_refuses_to_start_without_keys_or_with_symmetric_algorithms(
    key: DevSigningKey, tmp_path: Path
) -> None:
    with pytest.raises(ConfigurationError, match="no token keys"):
        TokenVerifier(Settings(auth_jwks_file=None, auth_jwks_url=None))
    with pytest.raises(ConfigurationError, match="asymmetric"):
        TokenVerifier(Settings(auth_jwks_file=str(key.jwks_file), auth_algorithms=("HS256",)))
    broken = tmp_path / "jwks.json"
    broken.write_text("{")
    with pytest.raises(ConfigurationError, match="cannot read"):
        TokenVerifier(Settings(auth_jwks_file=str(broken)))


def test_the_private_key_is_readable_by_its_owner_only(key: DevSigningKey) -> None:
    assert key.private_key_file.stat().st_mode & 0o077 == 0
