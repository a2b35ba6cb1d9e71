"""The body limit, on the ASGI messages a server hands the API: counted on the bytes received
whatever the headers say, and refusing ambiguous framing without reading the body."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import pytest

from api.problems import PROBLEM_JSON, BodySizeLimit, framing_refusal

LIMIT = 64 * 1024
CHUNK = 4096


class Client:
    """A request's body as the server delivers it: `chunks` (endless when None), counting
    how many bytes the API pulled."""

    def __init__(self, chunks: list[bytes] | None) -> None:
        self._chunks: Iterator[bytes] = iter(chunks) if chunks is not None else self._endless()
        self._last = len(chunks) if chunks is not None else None
        self.pulled = 0
        self.receives = 0

    @staticmethod
    def _endless() -> Iterator[bytes]:
        while True:
            yield b"x" * CHUNK

    async def receive(self) -> dict[str, Any]:
        self.receives += 1
        body = next(self._chunks, b"")
        self.pulled += len(body)
        more = self._last is None or self.receives < self._last
        return {"type": "http.request", "body": body, "more_body": more}


class App:
    """The API behind the limit: reads the whole body and answers 200 with its length."""

    def __init__(self) -> None:
        self.body: bytes | None = None

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        self.body = body
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": str(len(body)).encode()})


def call(headers: dict[str, str] | list[tuple[str, str]], chunks: list[bytes] | None
         ) -> tuple[int, dict[bytes, bytes], bytes, App, Client]:
    app, client, sent = App(), Client(chunks), []
    pairs = headers.items() if isinstance(headers, dict) else headers
    scope = {"type": "http", "method": "POST", "path": "/api/v1/provisioning/tenant",
             "headers": [(k.lower().encode(), v.encode()) for k, v in pairs]}

    async def send(message: dict) -> None:
        sent.append(message)

    asyncio.run(BodySizeLimit(app, LIMIT)(scope, client.receive, send))
    start, body = sent[0], b"".join(m.get("body", b"") for m in sent[1:])
    return start["status"], dict(start["headers"]), body, app, client


def test_an_honest_body_within_the_limit_reaches_the_app_whole() -> None:
    chunks = [b"a" * CHUNK] * 16  # exactly the limit
    status, _, answer, app, _ = call({"content-length": str(LIMIT)}, chunks)
    assert status == 200 and app.body == b"a" * LIMIT and answer == str(LIMIT).encode()

    status, _, _, app, _ = call({"transfer-encoding": "chunked"}, [b"{}", b""])
    assert status == 200 and app.body == b"{}"


def test_content_length_and_transfer_encoding_together_are_refused_unread() -> None:
    status, headers, answer, app, client = call(
        {"content-length": "10", "transfer-encoding": "chunked"}, None)
    assert status == 400 and client.receives == 0 and app.body is None
    assert headers[b"content-type"] == PROBLEM_JSON.encode()
    assert headers[b"connection"] == b"close"  # the rest of the stream is never read
    problem = json.loads(answer)
    assert problem["status"] == 400 and "Transfer-Encoding" in problem["detail"]


def test_a_content_length_that_understates_the_body_changes_nothing() -> None:
    status, headers, answer, app, client = call({"content-length": "10"}, None)
    assert status == 413 and app.body is None
    assert LIMIT < client.pulled <= LIMIT + CHUNK  # counted as received, stopped at once
    assert headers[b"connection"] == b"close"
    assert json.loads(answer)["detail"] == f"the request body is over {LIMIT} bytes"


def test_a_stream_without_length_is_refused_as_soon_as_it_passes_the_limit() -> None:
    status, _, _, app, client = call({"transfer-encoding": "chunked"}, None)
    assert status == 413 and app.body is None
    assert LIMIT < client.pulled <= LIMIT + CHUNK


def test_a_declared_length_over_the_limit_is_refused_without_reading() -> None:
    status, headers, _, app, client = call({"content-length": str(LIMIT + 1)}, None)
    assert (status, client.receives, app.body) == (413, 0, None)
    assert headers[b"connection"] == b"close"


@pytest.mark.parametrize("headers, status, detail", [
    ({"content-length": "12", "transfer-encoding": "chunked"}, 400, "both"),
    ({"content-length": "abc"}, 400, "not a number"),
    ({"content-length": "-1"}, 400, "not a number"),
    ([("content-length", "10"), ("content-length", "20")], 400, "at most one"),
    ({"content-length": str(LIMIT + 1)}, 413, "over"),
    ({"content-length": str(LIMIT)}, None, None),
    ({"transfer-encoding": "chunked"}, None, None),
    ({}, None, None),
])
def test_framing_refusal(headers: dict[str, str] | list[tuple[str, str]], status: int | None,
                         detail: str | None) -> None:
    pairs = headers.items() if isinstance(headers, dict) else headers
    refusal = framing_refusal([(k.encode(), v.encode()) for k, v in pairs], LIMIT)
    if status is None:
        assert refusal is None
    else:
        assert refusal is not None and refusal[0] == status and detail in refusal[1]
