"""Who is calling: bearer JWTs verified against configured public keys.

A token must be signed by a key of the configured JWKS (file or URL) with one of the allowed
asymmetric algorithms, name the configured issuer and audience, and carry `exp`, `sub` and the
caller's tenant (`tenant_id`). Permissions come from `permissions` (a list) or `scope` (a
space-separated string). Nothing in a token is logged.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import jwt

from provisioning.errors import ConfigurationError, ProvisioningError
from provisioning.settings import Settings

SUBMIT = "provisioning:submit"
READ = "provisioning:read"
RETRY = "provisioning:retry"
# Operators: cancel, resume and redrive, on any tenant's requests (their token's tenant is
# their own; the actions are audited with their identity).
OPERATE = "provisioning:operate"
ALL_PERMISSIONS = (SUBMIT, READ, RETRY)
TENANT_CLAIM = "tenant_id"


class Unauthenticated(ProvisioningError):
    """No token, or one that does not verify (401)."""


@dataclass(frozen=True, slots=True)
class Caller:
    subject: str
    tenant_id: str
    permissions: frozenset[str]

    def may(self, permission: str) -> bool:
        return permission in self.permissions


class TokenVerifier:
    def __init__(self, settings: Settings) -> None:
        self._issuer = settings.auth_issuer
        self._audience = settings.auth_audience
        self._algorithms = list(settings.auth_algorithms)
        self._leeway = settings.auth_leeway_s
        if settings.auth_jwks_file:
            self._keys = _keys_from_file(Path(settings.auth_jwks_file))
            self._client = None
        elif settings.auth_jwks_url:
            self._keys = {}
            self._client = jwt.PyJWKClient(settings.auth_jwks_url, cache_keys=True, lifespan=300)
        else:
            raise ConfigurationError(
                "no token keys configured: set PROVISIONING_AUTH_JWKS_FILE or "
                "PROVISIONING_AUTH_JWKS_URL (`provisioning dev env` sets the local one)"
            )
        if any(a.startswith("HS") or a == "none" for a in self._algorithms):
            raise ConfigurationError("auth_algorithms must be asymmetric (RS*, ES*, PS*, EdDSA)")

    def verify(self, token: str) -> Caller:
        try:
            key = self._signing_key(token)
            claims = jwt.decode(
                token, key, algorithms=self._algorithms, audience=self._audience,
                issuer=self._issuer, leeway=self._leeway,
                options={"require": ["exp", "iss", "aud", "sub"]},
            )
        except jwt.ExpiredSignatureError:
            raise Unauthenticated("the token has expired") from None
        except jwt.PyJWTError as exc:
            raise Unauthenticated(f"the token is not valid: {exc}") from None
        return _caller(claims)

    def _signing_key(self, token: str) -> object:
        if self._client is not None:
            return self._client.get_signing_key_from_jwt(token).key
        kid = jwt.get_unverified_header(token).get("kid")
        if kid is None and len(self._keys) == 1:
            return next(iter(self._keys.values()))
        if kid not in self._keys:
            raise jwt.InvalidKeyError("the token's key id is not one of the configured keys")
        return self._keys[kid]


def _keys_from_file(path: Path) -> dict[str | None, object]:
    try:
        key_set = jwt.PyJWKSet.from_json(path.read_text())
    except (OSError, json.JSONDecodeError, jwt.PyJWTError) as exc:
        raise ConfigurationError(f"cannot read the token keys from {path}: {exc}") from None
    return {key.key_id: key.key for key in key_set.keys}


def _caller(claims: dict[str, object]) -> Caller:
    tenant = claims.get(TENANT_CLAIM)
    if not isinstance(tenant, str) or not tenant:
        raise Unauthenticated(f"the token has no {TENANT_CLAIM} claim")
    permissions = claims.get("permissions")
    if permissions is None and isinstance(claims.get("scope"), str):
        permissions = str(claims["scope"]).split()
    if not isinstance(permissions, list | tuple):
        permissions = []
    return Caller(subject=str(claims["sub"]), tenant_id=tenant,
                  permissions=frozenset(str(p) for p in permissions))


def issue_token(private_key_pem: bytes, *, key_id: str, issuer: str, audience: str,
                subject: str, tenant_id: str, permissions: tuple[str, ...], ttl_s: int,
                now: int) -> str:
    """A signed token for the local setup (`provisioning token`) and the tests."""
    claims = {
        "iss": issuer, "aud": audience, "sub": subject, TENANT_CLAIM: tenant_id,
        "permissions": list(permissions), "iat": now, "exp": now + ttl_s,
    }
    return jwt.encode(claims, private_key_pem, algorithm="RS256", headers={"kid": key_id})
