"""The API as a hostile caller meets it (issue 15), on a real API process, broker and database:
request framing and body size, tokens that do not verify, keys from a real JWKS server that
change or answer slowly, who may create tenants, and which reply topics a caller may name.

No worker runs here: what matters is what the API answers and what it publishes.
"""

from __future__ import annotations

import json
import select
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import jwt
import pytest
import sqlalchemy as sa
from confluent_kafka.admin import AdminClient
from cryptography.hazmat.primitives.asymmetric import ec
from harness import ServiceProcess, wait_until
from jwt.algorithms import ECAlgorithm
from test_api import (  # noqa: F401 - signing_key: a fixture
    PROBLEM,
    assert_problem,
    auth,
    make_token,
    signing_key,
    start_api,
    tenant_body,
)
from test_client import read_topic

from api.auth import ONBOARD, READ, SUBMIT
from provisioning.devservices.signing_key import KEY_ID, DevSigningKey
from provisioning.settings import Settings
from provisioning.topics import TopicLayout, create_topics

PREFIX = "/api/v1/provisioning"
LIMIT = 65536  # PROVISIONING_MAX_COMMAND_BYTES's default, which these APIs run with
REPLY_PATTERN = r"replies\..+"
TENANT = "acme"


@dataclass
class Api:
    url: str
    process: ServiceProcess
    settings: Settings

    @property
    def address(self) -> tuple[str, int]:
        parts = urlsplit(self.url)
        return parts.hostname or "127.0.0.1", parts.port or 80


@pytest.fixture(scope="module")
def api(base_settings: Settings, kafka_admin: AdminClient, migrated: sa.Engine,
        tmp_path_factory: pytest.TempPathFactory,
        signing_key: DevSigningKey) -> Iterator[Api]:  # noqa: F811
    """An API on its own topics, trusting the dev key (JWKS file) and allowing reply topics
    that match REPLY_PATTERN only."""
    settings = base_settings.model_copy(
        update={"topic_prefix": f"{base_settings.topic_prefix}.sec{uuid.uuid4().hex[:8]}"})
    create_topics(kafka_admin, TopicLayout(settings.topic_prefix).specs(3))
    process, url = start_api(settings, tmp_path_factory.mktemp("security"), signing_key,
                             extra_env={"PROVISIONING_REPLY_TOPIC_PATTERN": REPLY_PATTERN})
    yield Api(url, process, settings)
    assert process.stop() == 0, process.log_text()[-3000:]


# --- framing and size ---------------------------------------------------------------------------


def _request_head(api: Api, *headers: str) -> bytes:
    lines = [f"POST {PREFIX}/tenant HTTP/1.1", f"Host: {api.address[0]}",
             "Content-Type: application/json", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


@dataclass
class RawAnswer:
    status: int
    headers: dict[str, str]
    body: bytes


def _read_answer(sock: socket.socket) -> RawAnswer:
    """One HTTP/1.1 response (with Content-Length) from the socket."""
    data = b""
    while b"\r\n\r\n" not in data:
        received = sock.recv(65536)
        assert received, f"the connection closed before an answer: {data!r}"
        data += received
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode().split("\r\n")
    headers = {k.strip().lower(): v.strip()
               for k, _, v in (line.partition(":") for line in header_lines)}
    while len(body) < int(headers.get("content-length", "0")):
        received = sock.recv(65536)
        assert received, "the connection closed in the middle of the answer"
        body += received
    return RawAnswer(int(status_line.split()[1]), headers, body)


def _closed_by_server(sock: socket.socket, timeout_s: float = 5) -> bool:
    sock.settimeout(timeout_s)
    try:
        return sock.recv(1) == b""
    except (ConnectionResetError, BrokenPipeError):
        return True
    except TimeoutError:
        return False


def test_content_length_with_transfer_encoding_is_refused_before_the_body_is_read(
    api: Api
) -> None:
    with socket.create_connection(api.address, timeout=5) as sock:
        # The headers only: the answer must come without a byte of body.
        sock.sendall(_request_head(api, "Content-Length: 10", "Transfer-Encoding: chunked"))
        try:
            answer = _read_answer(sock)
        except TimeoutError:
            pytest.fail("no answer within 5 s: the API waits for the body of an ambiguous "
                        "request instead of refusing it")
        assert answer.status == 400, answer
        assert answer.headers["content-type"].startswith(PROBLEM)
        assert "Transfer-Encoding" in json.loads(answer.body)["detail"]
        # ...and the stream is not read afterwards either: the API hangs up.
        assert _closed_by_server(sock), "the connection stayed open after the refusal"


def test_an_unauthenticated_chunked_upload_is_cut_off_at_the_limit(api: Api) -> None:
    total, chunk = 21 * 1024 * 1024, b"x" * 65536
    framed = f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n"
    sent, answered_after, answer, stopped_by = 0, None, None, "nothing: everything was sent"
    started = time.monotonic()
    with socket.create_connection(api.address, timeout=10) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)
        sock.sendall(_request_head(api, "Transfer-Encoding: chunked"))  # no token, no length
        try:
            while sent < total:  # a hostile client: it goes on sending after the answer
                sock.sendall(framed)
                sent += len(chunk)
                if answer is None and select.select([sock], [], [], 0)[0]:
                    answered_after, answer = sent, _read_answer(sock)
        except (BrokenPipeError, ConnectionResetError) as exc:
            stopped_by = type(exc).__name__
        except TimeoutError:
            stopped_by = "the API stopped reading (send timed out)"
        took = time.monotonic() - started
    print(f"\nchunked upload without a token: the client sent {sent:,} of {total:,} bytes "
          f"(limit {LIMIT:,}); answer {answer.status if answer else None} after "
          f"{answered_after} bytes; stopped by {stopped_by}; {took:.2f} s")
    assert answer is not None or stopped_by != "nothing: everything was sent"
    if answer is not None:
        assert answer.status == 413 and answer.headers["content-type"].startswith(PROBLEM)
        assert json.loads(answer.body)["detail"] == f"the request body is over {LIMIT} bytes"
    # What the client managed to push is the limit plus the kernel's socket buffers, never
    # the whole upload: the API closed the connection instead of draining it.
    assert sent <= 8 * 1024 * 1024, f"the API took {sent:,} bytes of a refused upload"


def test_honest_requests_still_get_their_answers(api: Api, signing_key: DevSigningKey  # noqa: F811
                                                 ) -> None:
    bearer = make_token(signing_key, tenant=TENANT, permissions=(SUBMIT, ONBOARD))
    with httpx.Client(base_url=api.url, timeout=10) as client:
        too_big = client.post(f"{PREFIX}/tenant", headers=auth(bearer),
                              json=tenant_body("e", tenantName="x" * 100_000))
        assert_problem(too_big, 413, f"over {LIMIT} bytes")
        accepted = client.post(f"{PREFIX}/tenant", headers=auth(bearer),
                               json=tenant_body(f"honest-{uuid.uuid4().hex[:8]}"))
        assert accepted.status_code == 202, accepted.text


# --- tokens -------------------------------------------------------------------------------------


def test_an_es256_token_with_the_rsa_keys_kid_is_401_not_500(api: Api) -> None:
    now = int(time.time())
    claims = {"iss": "provisioning-dev", "aud": "provisioning-api", "sub": "mallory",
              "tenant_id": TENANT, "permissions": [READ], "iat": now, "exp": now + 300}
    # The API's key set holds one RSA key, KEY_ID; this token claims it but is signed ES256.
    crossed = jwt.encode(claims, ec.generate_private_key(ec.SECP256R1()), algorithm="ES256",
                         headers={"kid": KEY_ID})
    header = jwt.utils.base64url_encode(json.dumps({"alg": "RS256", "kid": ["x"]}).encode())
    for bearer in (crossed, header.decode() + ".e30.AAAA", crossed[:-5] + "!!!!!"):
        answer = httpx.get(f"{api.url}{PREFIX}/{uuid.uuid4()}/status",
                           headers=auth(bearer, TENANT), timeout=10)
        assert_problem(answer, 401, "not valid")
    log = api.process.log_text()
    assert "Traceback" not in log and "unhandled error" not in log, log[-3000:]
    assert crossed not in log


@dataclass
class JwksServer:
    """A real HTTP server serving a JWKS, which a test can change or slow down."""

    keys: dict[str, dict] = field(default_factory=dict)
    delay_s: float = 0.0
    fetches: int = 0
    fetch_started: threading.Event = field(default_factory=threading.Event)
    server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}/jwks.json"

    def add_key(self, kid: str) -> ec.EllipticCurvePrivateKey:
        private = ec.generate_private_key(ec.SECP256R1())
        self.keys[kid] = {**json.loads(ECAlgorithm.to_jwk(private.public_key())), "kid": kid,
                          "use": "sig"}
        return private

    def start(self) -> JwksServer:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - the http.server name
                owner.fetches += 1
                owner.fetch_started.set()
                time.sleep(owner.delay_s)
                body = json.dumps({"keys": list(owner.keys.values())}).encode()
                try:
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the API gave up waiting: its timeout did its job

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()


@pytest.fixture
def jwks_server() -> Iterator[JwksServer]:
    server = JwksServer().start()
    yield server
    server.stop()



def start_jwks_api(base_settings: Settings, log_dir: Path, dev_key: DevSigningKey,
                   jwks: JwksServer, **auth_settings: float) -> tuple[ServiceProcess, str]:
    """An API that trusts the keys served at `jwks.url` (not `dev_key`'s file)."""
    env = {"PROVISIONING_AUTH_JWKS_FILE": "", "PROVISIONING_AUTH_JWKS_URL": jwks.url,
           **{f"PROVISIONING_{name.upper()}": str(value) for name, value in auth_settings.items()}}
    return start_api(base_settings, log_dir, dev_key, extra_env=env)


def _token_of(private: ec.EllipticCurvePrivateKey, kid: str) -> str:
    now = int(time.time())
    claims = {"iss": "provisioning-dev", "aud": "provisioning-api", "sub": "ada",
              "tenant_id": TENANT, "permissions": [READ], "iat": now, "exp": now + 600}
    return jwt.encode(claims, private, algorithm="ES256", headers={"kid": kid})


def _status_of_call(url: str, bearer: str) -> int:
    """The status a read answers: 404 (the token was accepted; the request does not exist)
    or 401 (refused)."""
    answer = httpx.get(f"{url}{PREFIX}/{uuid.uuid4()}/status", headers=auth(bearer, TENANT),
                       timeout=30)
    assert answer.status_code in (401, 404, 503), answer.text
    assert answer.headers["content-type"].startswith(PROBLEM)
    return answer.status_code


def test_a_key_withdrawn_from_the_jwks_is_refused_after_the_lifespan(
    base_settings: Settings, migrated: sa.Engine, tmp_path: Path, jwks_server: JwksServer,
    signing_key: DevSigningKey,  # noqa: F811
) -> None:
    lifespan_s = 2.0
    kept, withdrawn = jwks_server.add_key("kept"), jwks_server.add_key("withdrawn")
    process, url = start_jwks_api(base_settings, tmp_path, signing_key, jwks_server,
                                  auth_jwks_lifespan_s=lifespan_s, auth_jwks_min_refetch_s=0.5)
    try:
        kept_token, withdrawn_token = _token_of(kept, "kept"), _token_of(withdrawn, "withdrawn")
        assert _status_of_call(url, withdrawn_token) == 404  # trusted while it is served
        del jwks_server.keys["withdrawn"]  # the identity provider withdraws it
        removed_at = time.monotonic()
        wait_until(lambda: _status_of_call(url, withdrawn_token) == 401, lifespan_s + 10,
                   "the withdrawn key refused", interval_s=0.2)
        refused_after = time.monotonic() - removed_at
        print(f"\nwithdrawn key refused {refused_after:.2f} s after it left the JWKS "
              f"(lifespan {lifespan_s} s; {jwks_server.fetches} fetches)")
        assert refused_after <= lifespan_s + 1.5
        assert _status_of_call(url, kept_token) == 404
    finally:
        assert process.stop() == 0, process.log_text()[-3000:]


def test_a_slow_jwks_provider_does_not_stall_the_api_nor_get_hammered(
    base_settings: Settings, migrated: sa.Engine, tmp_path: Path, jwks_server: JwksServer,
    signing_key: DevSigningKey,  # noqa: F811
) -> None:
    timeout_s, provider_delay_s, min_refetch_s = 3.0, 6.0, 1.0
    known = jwks_server.add_key("known")
    known_token = _token_of(known, "known")
    jwks_server.delay_s = provider_delay_s  # slow from the start: the first fetch hangs too
    process, url = start_jwks_api(base_settings, tmp_path, signing_key, jwks_server,
                                  auth_jwks_timeout_s=timeout_s,
                                  auth_jwks_min_refetch_s=min_refetch_s)
    try:
        # The first token the API sees, with a kid nobody knows, fetches the set.
        first = _while_a_fetch_hangs(url, jwks_server, _token_of(known, "made-up-1"))
        first.check("first fetch", provider_delay_s, timeout_s)
        # With the set loaded, an unknown kid fetches it again: known keys keep working.
        jwks_server.delay_s = 0
        time.sleep(min_refetch_s)
        assert _status_of_call(url, known_token) == 404
        jwks_server.delay_s = provider_delay_s
        time.sleep(min_refetch_s)
        again = _while_a_fetch_hangs(url, jwks_server, _token_of(known, "made-up-2"),
                                     known_token=known_token)
        again.check("refetch", provider_delay_s, timeout_s)
        assert max(again.known_s) < 1.0

        # Made-up kids, fast: the provider is asked at most once per interval.
        jwks_server.delay_s = 0
        time.sleep(min_refetch_s)
        before, started = jwks_server.fetches, time.monotonic()
        for attempt in range(30):
            assert _status_of_call(url, _token_of(known, f"random-{attempt}")) == 401
        elapsed = time.monotonic() - started
        fetched = jwks_server.fetches - before
        print(f"30 made-up kids in {elapsed:.2f} s: {fetched} fetches of the JWKS")
        assert fetched <= 1 + elapsed / min_refetch_s
    finally:
        assert process.stop() == 0, process.log_text()[-3000:]


@dataclass
class Hang:
    """What callers saw while the API's fetch of the key set hung."""

    status: int
    took_s: float
    health_s: list[float]
    known_s: list[float]

    def check(self, what: str, provider_delay_s: float, timeout_s: float) -> None:
        known = (f", a known key's call max {max(self.known_s) * 1000:.1f} ms"
                 if self.known_s else "")
        print(f"\nslow JWKS provider ({provider_delay_s} s), {what}: /healthz max "
              f"{max(self.health_s) * 1000:.1f} ms{known}; the unknown kid got "
              f"{self.status} after {self.took_s:.2f} s (fetch timeout {timeout_s} s)")
        assert max(self.health_s) < 0.5, f"/healthz waited for the {what}"
        # The fetch gave up at its timeout, long before the provider answered.
        assert self.status == 503 and self.took_s < provider_delay_s - 1, what


def _while_a_fetch_hangs(url: str, jwks: JwksServer, unknown_kid_token: str,
                         known_token: str | None = None) -> Hang:
    """Send a token that makes the API fetch the (slow) key set; while the fetch hangs, time
    /healthz and, when given, a call with a known key."""
    jwks.fetch_started.clear()
    outcome: dict[str, float] = {}

    def call() -> None:
        started = time.monotonic()
        outcome["status"] = _status_of_call(url, unknown_kid_token)
        outcome["took_s"] = time.monotonic() - started

    caller = threading.Thread(target=call)
    caller.start()
    assert jwks.fetch_started.wait(5), "the token did not make the API fetch the key set"
    health, known = [], []
    with httpx.Client(base_url=url, timeout=30) as client:
        for _ in range(8):
            started = time.monotonic()
            assert client.get("/healthz").status_code == 200
            health.append(time.monotonic() - started)
            if known_token is not None:
                started = time.monotonic()
                assert _status_of_call(url, known_token) == 404
                known.append(time.monotonic() - started)
            time.sleep(0.15)
    caller.join(30)
    return Hang(int(outcome["status"]), outcome["took_s"], health, known)


# --- who may create tenants, and where replies may go ------------------------------------------


def test_creating_a_tenant_needs_the_onboard_permission(
    api: Api, signing_key: DevSigningKey  # noqa: F811
) -> None:
    submitter = make_token(signing_key, tenant=TENANT, permissions=(SUBMIT, READ))
    onboarding = make_token(signing_key, subject="svc-onboarding", tenant="platform",
                            permissions=(SUBMIT, ONBOARD))
    body = tenant_body(f"entity-{uuid.uuid4().hex[:8]}")
    with httpx.Client(base_url=api.url, timeout=20) as client:
        refused = client.post(f"{PREFIX}/tenant", json=body, headers=auth(submitter))
        assert_problem(refused, 403, "provisioning:onboard")
        accepted = client.post(f"{PREFIX}/tenant", json=body, headers=auth(onboarding))
        assert accepted.status_code == 202, accepted.text


def test_forbidden_reply_topics_are_422_and_nothing_is_published(
    api: Api, signing_key: DevSigningKey  # noqa: F811
) -> None:
    layout = TopicLayout(api.settings.topic_prefix)
    bearer = make_token(signing_key, tenant=TENANT, permissions=(SUBMIT, READ))
    forbidden = {
        "__consumer_offsets": "internal Kafka topic",
        layout.state: "own topics",
        "other-env.provisioning.commands": "own topics",
        "billing.invoices": "not an allowed reply topic",  # outside REPLY_PATTERN
    }
    refused_ids = []
    with httpx.Client(base_url=api.url, timeout=20) as client:
        for topic, reason in forbidden.items():
            refused_ids.append(str(uuid.uuid4()))
            answer = client.post(f"{PREFIX}/service", headers=auth(bearer, TENANT), json={
                "requestId": refused_ids[-1], "serviceName": "CartService", "slaTier": "GOLD",
                "replyTo": topic})
            assert_problem(answer, 422, reason)
            assert topic in answer.json()["detail"]
        allowed_id = str(uuid.uuid4())
        allowed = client.post(f"{PREFIX}/service", headers=auth(bearer, TENANT), json={
            "requestId": allowed_id, "serviceName": "CartService", "slaTier": "GOLD",
            "replyTo": "replies.acme"})
        assert allowed.status_code == 202, allowed.text
    # The allowed command is on the topic (so the reader sees commands), none of the others.
    published = {m.key().decode() for m in read_topic(api.settings, layout.commands)}
    assert allowed_id in published
    assert not published & set(refused_ids)
