"""Bearer tokens: what verifies, and each way a token is refused."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from api.auth import (
    ALL_PERMISSIONS,
    READ,
    Caller,
    TokenVerifier,
    Unauthenticated,
    fitting_algorithms,
    issue_token,
    verification_keys,
)
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


# --- every failure of verifying is a 401 ------------------------------------------------------


def _ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _claims() -> dict[str, object]:
    now = int(time.time())
    return {"iss": "provisioning-dev", "aud": "provisioning-api", "sub": "mallory",
            "tenant_id": "tenant-1", "permissions": [READ], "iat": now, "exp": now + 300}


def test_a_token_signed_es256_with_the_rsa_keys_kid_is_refused_not_a_crash(
    verifier: TokenVerifier
) -> None:
    # The key set has one RSA key; a token claiming it but signed ES256 used to reach
    # cryptography with a key of the wrong kind (TypeError: a 500 with a stack trace).
    token = jwt.encode(_claims(), _ec_key(), algorithm="ES256", headers={"kid": KEY_ID})
    with pytest.raises(Unauthenticated, match="not valid"):
        verifier.verify(token)


@pytest.mark.parametrize("token", [
    "not-a-token",
    "a.b.c",
    "a.b",
    "....",
    "%%%.e30.AAAA",                                                    # header not base64
    _b64(b"not json") + ".e30.AAAA",                                   # header not JSON
    _b64(b"[1, 2]") + ".e30.AAAA",                                     # header not an object
    _b64(json.dumps({"alg": "RS256", "kid": ["x"]}).encode()) + ".e30.AAAA",  # kid a list
    _b64(json.dumps({"alg": "RS256", "kid": {"k": 1}}).encode()) + ".e30.AAAA",
    _b64(json.dumps({"alg": "RS256", "kid": KEY_ID}).encode()) + ".e30.@@@@",  # signature
    _b64(json.dumps({"alg": "RS256", "kid": KEY_ID}).encode()) + ".!!!.AAAA",  # payload
    _b64(json.dumps({"alg": "RS256", "kid": KEY_ID}).encode()) + "." + _b64(b"[]") + ".AAAA",
    _b64(json.dumps({"alg": "RS256", "kid": KEY_ID, "crit": ["x"]}).encode()) + ".e30.AAAA",
    _b64(json.dumps({"alg": "EdDSA", "kid": KEY_ID}).encode()) + ".e30." + _b64(b"x" * 64),
    _b64(json.dumps({"alg": "ES256", "kid": KEY_ID}).encode()) + ".e30." + _b64(b"x" * 7),
    _b64(json.dumps({"alg": "PS256", "kid": KEY_ID}).encode()) + ".e30." + _b64(b"x" * 256),
    _b64(json.dumps({"alg": "HS256", "kid": KEY_ID}).encode()) + ".e30.AAAA",
    _b64(json.dumps({"alg": None, "kid": KEY_ID}).encode()) + ".e30.AAAA",
    _b64(json.dumps({"alg": "RS256", "kid": "unknown"}).encode()) + ".e30.AAAA",
])
def test_malformed_tokens_are_unauthenticated_whatever_breaks(
    verifier: TokenVerifier, token: str
) -> None:
    with pytest.raises(Unauthenticated):
        verifier.verify(token)


def _jwks_file(tmp_path: Path, *entries: dict[str, object]) -> str:
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": list(entries)}))
    return str(path)


def _jwk(public_key: object, **fields: object) -> dict[str, object]:
    algorithm = RSAAlgorithm if isinstance(public_key, rsa.RSAPublicKey) else ECAlgorithm
    return {**json.loads(algorithm.to_jwk(public_key)), **fields}


def test_each_key_verifies_only_with_the_algorithms_that_fit_it(
    key: DevSigningKey, tmp_path: Path
) -> None:
    ec_key = _ec_key()
    rsa_private = serialization.load_pem_private_key(key.private_key_pem(), None)
    # No `alg` in either JWK: the algorithm comes from the key's type and curve.
    jwks = _jwks_file(tmp_path, _jwk(rsa_private.public_key(), kid="rsa"),
                      _jwk(ec_key.public_key(), kid="ec"))
    verifier = TokenVerifier(Settings(auth_jwks_file=jwks,
                                      auth_algorithms=("RS256", "PS256", "ES256")))

    assert verifier.verify(jwt.encode(_claims(), ec_key, "ES256", {"kid": "ec"})).subject
    assert verifier.verify(jwt.encode(_claims(), rsa_private, "PS256", {"kid": "rsa"})).subject
    for token in (jwt.encode(_claims(), ec_key, "ES256", {"kid": "rsa"}),
                  jwt.encode(_claims(), rsa_private, "RS256", {"kid": "ec"})):
        with pytest.raises(Unauthenticated, match="alg"):
            verifier.verify(token)


@pytest.mark.parametrize("jwk, accepted, expected", [
    ({"kty": "RSA"}, ("RS256", "ES256", "EdDSA"), ("RS256",)),
    ({"kty": "RSA"}, ("PS256", "RS512"), ("PS256", "RS512")),
    ({"kty": "RSA", "alg": "RS512"}, ("RS256", "RS512"), ("RS512",)),
    ({"kty": "RSA", "alg": "RS512"}, ("RS256",), ()),             # named, but not accepted
    ({"kty": "EC", "crv": "P-256"}, ("RS256", "ES256", "ES384"), ("ES256",)),
    ({"kty": "EC", "crv": "P-384"}, ("ES256",), ()),
    ({"kty": "OKP", "crv": "Ed25519"}, ("RS256", "EdDSA"), ("EdDSA",)),
    ({"kty": "oct", "k": "c2VjcmV0"}, ("RS256", "ES256", "EdDSA"), ()),  # symmetric: never
    ({"kty": "oct", "alg": "HS256"}, ("RS256",), ()),
    ({"kty": "XYZ"}, ("RS256",), ()),
])
def test_fitting_algorithms(jwk: dict, accepted: tuple[str, ...], expected: tuple) -> None:
    assert fitting_algorithms(jwk, accepted) == expected


def test_keys_that_cannot_verify_are_left_out_of_the_set(key: DevSigningKey) -> None:
    rsa_public = serialization.load_pem_private_key(key.private_key_pem(), None).public_key()
    keys = verification_keys({"keys": [
        _jwk(rsa_public, kid="signing"),
        _jwk(rsa_public, kid="encryption", use="enc"),
        {"kty": "oct", "kid": "shared-secret", "k": "c2VjcmV0"},
        {"kty": "RSA", "kid": "broken", "n": "!!", "e": "AQAB"},
        "not a key",
    ]}, ("RS256", "ES256"))
    assert list(keys) == ["signing"]
    assert verification_keys({"keys": "nothing"}, ("RS256",)) == {}
