"""Keys from a JWKS URL: how long they are trusted, and how often the provider is asked.

The provider here is a function serving a key set and counting its calls; the clock is a
number the test moves. (tests/integration/test_api_security.py does the same against a real
HTTP server and a real API process.)
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

from api.auth import KeysUnavailable, RemoteKeySet, Unauthenticated

LIFESPAN_S = 300.0
MIN_REFETCH_S = 5.0
ACCEPTED = ("RS256", "ES256", "EdDSA")


def _jwk(kid: str) -> dict:
    public = ec.generate_private_key(ec.SECP256R1()).public_key()
    return {**json.loads(ECAlgorithm.to_jwk(public)), "kid": kid}


@dataclass
class Provider:
    """A JWKS endpoint: serves `keys`, or fails with `failure` when set."""

    keys: list[dict]
    failure: Exception | None = None
    calls: int = 0
    release: threading.Event | None = None  # when set, a fetch waits for it
    fetching: threading.Event = field(default_factory=threading.Event)

    def fetch(self, url: str, timeout_s: float) -> bytes:
        self.calls += 1
        self.fetching.set()
        if self.release is not None:
            self.release.wait(10)
        if self.failure is not None:
            raise self.failure
        return json.dumps({"keys": self.keys}).encode()


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _key_set(provider: Provider, clock: Clock) -> RemoteKeySet:
    return RemoteKeySet("https://idp.example/jwks", ACCEPTED, lifespan_s=LIFESPAN_S,
                        timeout_s=2, min_refetch_s=MIN_REFETCH_S, clock=clock,
                        fetch=provider.fetch)


def test_a_withdrawn_key_is_trusted_until_the_set_expires_then_refused() -> None:
    provider, clock = Provider([_jwk("old"), _jwk("new")]), Clock()
    keys = _key_set(provider, clock)
    assert keys.key_for("old").key_id == "old"

    provider.keys = [k for k in provider.keys if k["kid"] != "old"]  # the provider withdraws it
    clock.now += LIFESPAN_S - 1
    assert keys.key_for("old").key_id == "old"  # cached: the set has not expired yet
    assert provider.calls == 1

    clock.now += 1
    with pytest.raises(Unauthenticated, match="not one of the identity provider's keys"):
        keys.key_for("old")
    assert keys.key_for("new").key_id == "new"
    assert provider.calls == 2


def test_unknown_kids_fetch_the_set_again_at_most_once_per_interval() -> None:
    provider, clock = Provider([_jwk("known")]), Clock()
    keys = _key_set(provider, clock)
    keys.key_for("known")
    clock.now += MIN_REFETCH_S

    for attempt in range(50):  # a caller making kids up
        with pytest.raises(Unauthenticated):
            keys.key_for(f"made-up-{attempt}")
        clock.now += 0.01
    assert provider.calls == 2  # the first, and one refetch for all 50 unknown kids

    provider.keys.append(_jwk("rotated-in"))
    with pytest.raises(Unauthenticated):
        keys.key_for("rotated-in")  # too soon after the last fetch
    clock.now += MIN_REFETCH_S
    assert keys.key_for("rotated-in").key_id == "rotated-in"
    assert provider.calls == 3


def test_a_provider_that_fails_is_503_and_not_asked_again_at_once() -> None:
    provider, clock = Provider([_jwk("k")], failure=KeysUnavailable("connection refused")), Clock()
    keys = _key_set(provider, clock)
    for _ in range(10):
        with pytest.raises(KeysUnavailable):
            keys.key_for("k")
    assert provider.calls == 1

    provider.failure = None
    clock.now += MIN_REFETCH_S
    assert keys.key_for("k").key_id == "k"
    assert provider.calls == 2


@pytest.mark.parametrize("served", [b"<html>", b"[1, 2]", b"\xff\xfe"])
def test_an_answer_that_is_not_a_key_set_is_503(served: bytes) -> None:
    keys = RemoteKeySet("https://idp.example/jwks", ACCEPTED, lifespan_s=LIFESPAN_S,
                        timeout_s=2, min_refetch_s=MIN_REFETCH_S,
                        fetch=lambda url, timeout_s: served)
    with pytest.raises(KeysUnavailable):
        keys.key_for("k")


def test_an_unknown_kid_does_not_wait_for_a_fetch_in_flight() -> None:
    provider, clock = Provider([_jwk("known")]), Clock()
    keys = _key_set(provider, clock)
    keys.key_for("known")
    clock.now += MIN_REFETCH_S
    provider.release, provider.fetching = threading.Event(), threading.Event()
    slow = threading.Thread(target=lambda: pytest.raises(Unauthenticated, keys.key_for, "a"))
    slow.start()  # an unknown kid: its refetch hangs until released
    assert provider.fetching.wait(5)

    started = time.monotonic()
    with pytest.raises(Unauthenticated):
        keys.key_for("b")  # another unknown kid: refused at once, no second fetch
    assert keys.key_for("known").key_id == "known"  # known keys are served meanwhile
    took = time.monotonic() - started
    provider.release.set()
    slow.join(5)
    assert took < 0.5, f"waited {took:.2f} s"
    assert provider.calls == 2
