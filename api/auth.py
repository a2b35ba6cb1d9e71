"""Who is calling: bearer JWTs verified against configured public keys.

A token must be signed by a key of the configured JWKS (file or URL) with an allowed
asymmetric algorithm that fits that key, name the configured issuer and audience, and carry
`exp`, `sub` and the caller's tenant (`tenant_id`). Permissions come from `permissions` (a
list) or `scope` (a space-separated string). Nothing in a token is logged.

Every way a token can fail to verify is `Unauthenticated` (401). Only keys that cannot be
had from the identity provider are `KeysUnavailable` (503): the token may be fine. With a
JWKS URL, `verify` may fetch keys over the network: call it from a thread, never on the
event loop.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jwt

from provisioning.errors import ConfigurationError, ProvisioningError, TransientError
from provisioning.settings import Settings

SUBMIT = "provisioning:submit"
READ = "provisioning:read"
RETRY = "provisioning:retry"
# Creating a tenant (on top of SUBMIT): the platform's onboarding service only. Whoever
# submits a tenant becomes its first admin, so a tenant's own services must not hold it.
ONBOARD = "provisioning:onboard"
# Operators: cancel, resume and redrive, on any tenant's requests (their token's tenant is
# their own; the actions are audited with their identity).
OPERATE = "provisioning:operate"
# What `provisioning token` issues by default: a local developer acting as the platform, who
# creates tenants and then works in them. Never the operators' permission.
ALL_PERMISSIONS = (SUBMIT, READ, RETRY, ONBOARD)
TENANT_CLAIM = "tenant_id"

# Which algorithms each kind of key can verify, when its JWK does not name one (`alg`).
_RSA_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512")
_EC_ALGORITHMS = {"P-256": ("ES256",), "P-384": ("ES384",), "P-521": ("ES512", "ES521"),
                  "secp256k1": ("ES256K",)}
_OKP_CURVES = ("Ed25519", "Ed448")
MAX_JWKS_BYTES = 1024 * 1024  # a key set is a few KB; a larger answer is not one

log = logging.getLogger("provisioning.api")


class Unauthenticated(ProvisioningError):
    """No token, or one that does not verify (401)."""


class KeysUnavailable(TransientError):
    """The identity provider's keys could not be fetched (503): the token was not judged."""


@dataclass(frozen=True, slots=True)
class Caller:
    subject: str
    tenant_id: str
    permissions: frozenset[str]

    def may(self, permission: str) -> bool:
        return permission in self.permissions


@dataclass(frozen=True, slots=True)
class VerificationKey:
    """A public key of the key set and the algorithms a token signed by it may use."""

    key_id: str | None
    key: Any
    algorithms: tuple[str, ...]


class TokenVerifier:
    def __init__(self, settings: Settings) -> None:
        self._issuer = settings.auth_issuer
        self._audience = settings.auth_audience
        self._leeway = settings.auth_leeway_s
        algorithms = tuple(settings.auth_algorithms)
        if any(a.startswith("HS") or a == "none" for a in algorithms):
            raise ConfigurationError("auth_algorithms must be asymmetric (RS*, ES*, PS*, EdDSA)")
        self._keys: StaticKeys | RemoteKeySet
        if settings.auth_jwks_file:
            self._keys = StaticKeys(_keys_from_file(Path(settings.auth_jwks_file), algorithms))
        elif settings.auth_jwks_url:
            self._keys = RemoteKeySet(
                settings.auth_jwks_url, algorithms, lifespan_s=settings.auth_jwks_lifespan_s,
                timeout_s=settings.auth_jwks_timeout_s,
                min_refetch_s=settings.auth_jwks_min_refetch_s)
        else:
            raise ConfigurationError(
                "no token keys configured: set PROVISIONING_AUTH_JWKS_FILE or "
                "PROVISIONING_AUTH_JWKS_URL (`provisioning dev env` sets the local one)"
            )

    def verify(self, token: str) -> Caller:
        """The caller a token names. Raises Unauthenticated, or KeysUnavailable when the
        identity provider's keys cannot be fetched. Blocking: may fetch keys."""
        try:
            key = self._keys.key_for(_key_id(token))
            claims = jwt.decode(
                token, key.key, algorithms=list(key.algorithms), audience=self._audience,
                issuer=self._issuer, leeway=self._leeway,
                options={"require": ["exp", "iss", "aud", "sub"]},
            )
        except (Unauthenticated, KeysUnavailable):
            raise
        except jwt.ExpiredSignatureError:
            raise Unauthenticated("the token has expired") from None
        except jwt.PyJWTError as exc:
            raise Unauthenticated(f"the token is not valid: {exc}") from None
        except Exception as exc:  # noqa: BLE001 - a hostile token must never be a 500
            # The libraries below PyJWT (base64, json, cryptography) raise their own errors on
            # crafted input; the class is enough to recognise it, the token is never logged.
            log.info("token refused by %s", type(exc).__name__)
            raise Unauthenticated("the token is not valid: it could not be verified") from None
        return _caller(claims)


def _key_id(token: str) -> str | None:
    kid = jwt.get_unverified_header(token).get("kid")
    if kid is not None and not isinstance(kid, str):
        raise Unauthenticated("the token's key id (kid) is not a string")
    return kid


class StaticKeys:
    """The keys of a JWKS file, read once at start-up."""

    def __init__(self, keys: Mapping[str | None, VerificationKey]) -> None:
        self._keys = dict(keys)

    def key_for(self, kid: str | None) -> VerificationKey:
        key = _lookup(self._keys, kid)
        if key is None:
            raise Unauthenticated("the token's key id is not one of the configured keys")
        return key


@dataclass(frozen=True, slots=True)
class _FetchedKeys:
    keys: dict[str | None, VerificationKey]
    fetched_at: float


class RemoteKeySet:
    """The keys served at a JWKS URL, trusted for `lifespan_s` after they were fetched.

    A token with a kid the set does not have may be a key the provider just added: the set is
    fetched again, but never sooner than `min_refetch_s` after the previous fetch (so made-up
    kids cannot hammer the provider) and never while another fetch is running (that caller is
    refused at once instead of holding a thread). A provider that failed is asked again no
    sooner either. Thread-safe.
    """

    def __init__(self, url: str, algorithms: tuple[str, ...], *, lifespan_s: float,
                 timeout_s: float, min_refetch_s: float,
                 clock: Callable[[], float] = time.monotonic,
                 fetch: Callable[[str, float], bytes] | None = None) -> None:
        self._url = url
        self._algorithms = algorithms
        self._lifespan_s = lifespan_s
        self._timeout_s = timeout_s
        self._min_refetch_s = min_refetch_s
        self._clock = clock
        self._fetch = fetch or fetch_jwks
        self._fetching = threading.Lock()
        self._current: _FetchedKeys | None = None
        self._last_attempt_at: float | None = None
        self._last_attempt_failed = False

    def key_for(self, kid: str | None) -> VerificationKey:
        current = self._current
        if current is None or self._clock() - current.fetched_at >= self._lifespan_s:
            current = self._fetch_needed_keys(current)
        key = _lookup(current.keys, kid)
        if key is None:
            current = self._maybe_refetch(current)
            key = _lookup(current.keys, kid)
        if key is None:
            raise Unauthenticated("the token's key id is not one of the identity provider's keys")
        return key

    def _fetch_needed_keys(self, seen: _FetchedKeys | None) -> _FetchedKeys:
        """Fresh keys, the set having expired: waits for a fetch another thread is making."""
        if not self._fetching.acquire(timeout=self._timeout_s + 1):
            raise KeysUnavailable("the identity provider's keys are being fetched; try again")
        try:
            if self._current is not seen and self._current is not None:
                return self._current  # fetched by another thread while this one waited
            if self._last_attempt_failed and self._too_soon():
                raise KeysUnavailable("the identity provider's keys could not be fetched "
                                      "a moment ago; try again shortly")
            return self._fetch_now()
        finally:
            self._fetching.release()

    def _maybe_refetch(self, seen: _FetchedKeys) -> _FetchedKeys:
        """The set again for an unknown kid, if a fetch is allowed now; else the same set."""
        if self._too_soon() or not self._fetching.acquire(blocking=False):
            return seen
        try:
            if self._current is not seen and self._current is not None:
                return self._current
            return self._fetch_now()
        finally:
            self._fetching.release()

    def _too_soon(self) -> bool:
        return (self._last_attempt_at is not None
                and self._clock() - self._last_attempt_at < self._min_refetch_s)

    def _fetch_now(self) -> _FetchedKeys:
        """Called holding `_fetching`."""
        self._last_attempt_at = self._clock()
        self._last_attempt_failed = True
        try:
            document = json.loads(self._fetch(self._url, self._timeout_s))
        except ValueError as exc:
            raise KeysUnavailable(f"the identity provider's key set is not JSON: {exc}") from None
        if not isinstance(document, dict):
            raise KeysUnavailable("the identity provider's key set is not a JWKS object")
        keys = verification_keys(document, self._algorithms)
        self._current = _FetchedKeys(keys, self._clock())
        self._last_attempt_failed = False
        return self._current


def fetch_jwks(url: str, timeout_s: float) -> bytes:
    """The body served at `url`. Raises KeysUnavailable.

    Connecting and each read wait at most `timeout_s`; on top of that the whole body must
    have come by `timeout_s` after the start, so a provider that trickles bytes is cut off at
    its first chunk past it (httpx has no overall deadline of its own)."""
    deadline = time.monotonic() + timeout_s
    body = bytearray()
    try:
        with httpx.stream("GET", url, timeout=timeout_s,
                          headers={"Accept": "application/json"}) as response:
            if response.status_code != 200:
                raise KeysUnavailable(f"the identity provider answered {response.status_code} "
                                      "for its key set")
            for chunk in response.iter_bytes():
                body += chunk
                if len(body) > MAX_JWKS_BYTES:
                    raise KeysUnavailable("the identity provider's key set is over "
                                          f"{MAX_JWKS_BYTES} bytes")
                if time.monotonic() > deadline:
                    raise httpx.ReadTimeout("the whole key set took too long")
    except httpx.HTTPError as exc:
        raise KeysUnavailable(f"the identity provider's key set could not be fetched within "
                              f"{timeout_s} s ({type(exc).__name__})") from None
    return bytes(body)


def verification_keys(jwks: Mapping[str, Any], accepted: tuple[str, ...]
                      ) -> dict[str | None, VerificationKey]:
    """The keys of a JWKS that can verify signatures with an accepted algorithm, by kid.

    Keys that cannot (symmetric, encryption-only, unknown type, no accepted algorithm) are
    left out and logged by kid: the other keys still serve.
    """
    keys: dict[str | None, VerificationKey] = {}
    entries = jwks.get("keys")
    for entry in entries if isinstance(entries, list) else []:
        if not isinstance(entry, dict):
            continue
        kid = entry.get("kid") if isinstance(entry.get("kid"), str) else None
        algorithms = fitting_algorithms(entry, accepted)
        if not algorithms or entry.get("use", "sig") != "sig":
            log.warning("key %r of the key set is left out: it cannot verify a signature with "
                        "an accepted algorithm", kid)
            continue
        try:
            key = jwt.PyJWK(entry, algorithms[0]).key
        except (jwt.PyJWTError, ValueError, TypeError, KeyError) as exc:
            log.warning("key %r of the key set is left out: %s", kid, exc)
            continue
        keys[kid] = VerificationKey(kid, key, algorithms)
    return keys


def fitting_algorithms(jwk: Mapping[str, Any], accepted: tuple[str, ...]) -> tuple[str, ...]:
    """The accepted algorithms a JWK can verify: the one its `alg` names, or else those of
    its key type and curve. Verifying with one that does not fit the key is refused up front,
    instead of handing the library a key of the wrong kind."""
    declared = jwk.get("alg")
    if declared is not None:
        return (declared,) if declared in accepted else ()
    kty, curve = jwk.get("kty"), jwk.get("crv")
    if kty == "RSA":
        fitting: tuple[str, ...] = _RSA_ALGORITHMS
    elif kty == "EC" and curve in _EC_ALGORITHMS:
        fitting = _EC_ALGORITHMS[curve]
    elif kty == "OKP" and curve in _OKP_CURVES:
        fitting = ("EdDSA",)
    else:
        fitting = ()
    return tuple(a for a in accepted if a in fitting)


def _lookup(keys: Mapping[str | None, VerificationKey],
            kid: str | None) -> VerificationKey | None:
    if kid is None and len(keys) == 1:  # a set of one key: tokens may omit the kid
        return next(iter(keys.values()))
    return keys.get(kid)


def _keys_from_file(path: Path, accepted: tuple[str, ...]) -> dict[str | None, VerificationKey]:
    try:
        document = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigurationError(f"cannot read the token keys from {path}: {exc}") from None
    keys = verification_keys(document, accepted) if isinstance(document, dict) else {}
    if not keys:
        raise ConfigurationError(f"cannot read the token keys from {path}: no key in it can "
                                 f"verify tokens with {', '.join(accepted)}")
    return keys


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
