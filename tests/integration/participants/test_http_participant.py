"""The http adapter against real sockets: how each kind of answer (or silence) is classed."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from pydantic import SecretStr

from consumer.participants.base import Action, Outcome, StepCall
from consumer.participants.http import HttpParticipant

ANSWERS = {
    "/ok": (200, {"output": {"adminUserId": "u-1", "count": 3}}),
    "/empty": (204, None),
    "/refused": (422, {"detail": "role quota reached"}),
    "/missing": (404, "plain text body"),
    "/down": (503, {"title": "Service Unavailable"}),
    "/slow": (200, {}),
    "/timeout": (408, {"detail": "request took too long"}),
    "/early": (425, {"detail": "too early"}),
    "/limited": (429, {"detail": "slow down"}),
    "/forbidden": (403, {"detail": "not for you"}),
}
# Answers' extra headers by path.
HEADERS = {"/limited": {"Retry-After": "7"}, "/down": {"Retry-After": "0"}}
seen: list[dict] = []


class Handler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802 - the http.server API
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        seen.append({"key": self.headers["Idempotency-Key"], "path": self.path, "body": body,
                     "traceparent": self.headers.get("traceparent"),
                     "authorization": self.headers.get("Authorization")})
        if self.path == "/slow":
            time.sleep(2)
        status, answer = ANSWERS[self.path]
        payload = b"" if answer is None else (
            answer.encode() if isinstance(answer, str) else json.dumps(answer).encode())
        self.send_response(status)
        for name, value in HEADERS.get(self.path, {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _call(action: Action = Action.EXECUTE, deadline_at: int | None = None,
          trace_parent: str | None = None) -> StepCall:
    return StepCall(request_id="r-1", run=2, workflow_type="tenant", tenant_id="t-1",
                    step="create-admin-role", action=action, attempt=3,
                    idempotency_key="r-1:2:create-admin-role", params={"entityId": "e-1"},
                    deadline_at=deadline_at, trace_parent=trace_parent)


@pytest.mark.parametrize("path, outcome, output, reason, retry_after_ms", [
    ("/ok", Outcome.SUCCEEDED, {"adminUserId": "u-1", "count": "3"}, None, None),
    ("/empty", Outcome.SUCCEEDED, {}, None, None),
    ("/refused", Outcome.PERMANENT_FAILURE, {}, "HTTP 422 from {url}: role quota reached",
     None),
    ("/missing", Outcome.PERMANENT_FAILURE, {}, "HTTP 404 from {url}: plain text body", None),
    ("/forbidden", Outcome.PERMANENT_FAILURE, {}, "HTTP 403 from {url}: not for you", None),
    ("/down", Outcome.TRANSIENT_FAILURE, {}, "HTTP 503 from {url}: Service Unavailable", 0),
    # "Not now" rather than "no": request timeout, too early, rate limited.
    ("/timeout", Outcome.TRANSIENT_FAILURE, {}, "HTTP 408 from {url}: request took too long",
     None),
    ("/early", Outcome.TRANSIENT_FAILURE, {}, "HTTP 425 from {url}: too early", None),
    ("/limited", Outcome.TRANSIENT_FAILURE, {}, "HTTP 429 from {url}: slow down", 7_000),
])
def test_answers_are_classed_by_status(base_url: str, path: str, outcome: Outcome,
                                       output: dict, reason: str | None,
                                       retry_after_ms: int | None) -> None:
    url = base_url + path
    result = HttpParticipant(url).call(_call())
    assert (result.outcome, dict(result.output)) == (outcome, output)
    assert result.reason == (reason.format(url=url) if reason else None)
    assert result.retry_after_ms == retry_after_ms


def test_every_call_carries_the_traceparent_and_the_bearer_token(base_url: str) -> None:
    trace = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    seen.clear()
    participant = HttpParticipant(base_url + "/ok", compensation_url=base_url + "/empty",
                                  bearer_token=SecretStr("t0ken-for-identity"))
    participant.call(_call(trace_parent=trace))
    participant.call(_call(Action.COMPENSATE, trace_parent=trace))
    participant.call(_call())  # a saga without a traceparent: none is made up
    participant.call(_call(trace_parent="00-not-a-traceparent"))  # the caller's junk: dropped
    assert [s["traceparent"] for s in seen] == [trace, trace, None, None]
    assert {s["authorization"] for s in seen} == {"Bearer t0ken-for-identity"}
    assert "t0ken" not in repr(participant)


def test_the_request_carries_the_idempotency_key_and_the_step(base_url: str) -> None:
    seen.clear()
    participant = HttpParticipant(base_url + "/ok", compensation_url=base_url + "/empty")
    participant.call(_call())
    participant.call(_call(Action.COMPENSATE))
    execute, compensate = seen
    assert (execute["path"], execute["key"]) == ("/ok", "r-1:2:create-admin-role")
    assert (compensate["path"], compensate["key"]) == ("/empty",
                                                      "r-1:2:create-admin-role:compensate")
    assert execute["body"]["params"] == {"entityId": "e-1"}
    assert (execute["body"]["attempt"], compensate["body"]["action"]) == (3, "COMPENSATE")


def test_silence_past_the_attempt_deadline_and_a_closed_port_are_transient(
    base_url: str,
) -> None:
    started = time.monotonic()
    deadline = int((time.time() + 0.5) * 1000)
    slow = HttpParticipant(base_url + "/slow").call(_call(deadline_at=deadline))
    assert slow.outcome is Outcome.TRANSIENT_FAILURE and "no answer" in (slow.reason or "")
    assert time.monotonic() - started < 1.5  # gave up at the attempt's deadline

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    refused = HttpParticipant(f"http://127.0.0.1:{closed}/x").call(_call())
    assert refused.outcome is Outcome.TRANSIENT_FAILURE
    assert "cannot reach" in (refused.reason or "")
