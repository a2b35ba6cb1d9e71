"""Every error the API returns is application/problem+json (RFC 9457) with a clear detail."""

from __future__ import annotations

import json
import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

PROBLEM_JSON = "application/problem+json"
log = logging.getLogger("provisioning.api")

_TITLES = {
    400: "Bad request", 401: "Unauthorized", 403: "Forbidden", 404: "Not found",
    405: "Method not allowed", 409: "Conflict", 413: "Content too large",
    415: "Unsupported media type",
    422: "Invalid request", 500: "Internal error", 503: "Service unavailable",
}


class Problem(Exception):
    """Raise to answer with a problem document."""

    def __init__(self, status: int, detail: str, *, headers: dict[str, str] | None = None,
                 **extra: Any) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.headers = headers
        self.extra = extra


def problem_body(status: int, detail: str, instance: str, **extra: Any) -> dict[str, Any]:
    return {"type": "about:blank", "title": _TITLES.get(status, "Error"), "status": status,
            "detail": detail, "instance": instance, **extra}


def problem_response(request: Request, status: int, detail: str,
                     headers: dict[str, str] | None = None, **extra: Any) -> JSONResponse:
    body = problem_body(status, detail, request.url.path, **extra)
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def install(app: FastAPI) -> None:
    @app.exception_handler(Problem)
    async def _problem(request: Request, exc: Problem) -> JSONResponse:
        return problem_response(request, exc.status, exc.detail, exc.headers, **exc.extra)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{"field": ".".join(str(p) for p in e["loc"]), "message": e["msg"]}
                  for e in exc.errors()[:20]]
        summary = "; ".join(f"{e['field']}: {e['message']}" for e in errors[:5])
        return problem_response(request, 422, f"the request is not valid: {summary}",
                                errors=errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return problem_response(request, exc.status_code, str(exc.detail),
                                getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return problem_response(request, 500, "an unexpected error occurred; it was logged")


class BodySizeLimit:
    """Refuses, with problem+json, request bodies over `max_bytes` counted on the bytes
    received whatever the framing, and requests whose framing is ambiguous, before the app
    (and so before authentication) sees them.

    A body is read in full here (at most `max_bytes`, then refused) and handed on to the app:
    a Content-Length that understates the body changes nothing. A refused request's
    connection is closed (`Connection: close`), so the rest of its body is never read.
    """

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        refusal = framing_refusal(scope.get("headers") or [], self.max_bytes)
        if refusal is not None:
            await refuse(scope, send, *refusal)
            return
        messages = await read_body(receive, self.max_bytes)
        if messages is None:
            await refuse(scope, send, 413, f"the request body is over {self.max_bytes} bytes")
            return

        async def replay() -> dict:
            return messages.pop(0) if messages else await receive()

        await self.app(scope, replay, send)


def framing_refusal(headers: list[tuple[bytes, bytes]], max_bytes: int) -> tuple[int, str] | None:
    """Why a request must be refused from its headers alone, as (status, detail), or None.

    Content-Length together with Transfer-Encoding is the classic request-smuggling shape
    (RFC 9112 section 6.1: a server may reject it, and this one does); so are several
    Content-Lengths. A declared length over the limit is refused without reading anything.
    """
    lengths = [value for name, value in headers if name.lower() == b"content-length"]
    chunked = any(name.lower() == b"transfer-encoding" for name, _ in headers)
    if lengths and chunked:
        return 400, "a request must not carry both Content-Length and Transfer-Encoding"
    if len(lengths) > 1:
        return 400, "a request must carry at most one Content-Length"
    if lengths and not lengths[0].strip().isdigit():
        return 400, "Content-Length is not a number of bytes"
    if lengths and int(lengths[0]) > max_bytes:
        return 413, f"the request body is over {max_bytes} bytes"
    return None


async def read_body(receive: Any, max_bytes: int) -> list[dict] | None:
    """The request's body messages, counted as they arrive; None as soon as they pass
    `max_bytes` (nothing more is read). Stops at the last message or a disconnect."""
    messages, received = [], 0
    while True:
        message = await receive()
        messages.append(message)
        received += len(message.get("body", b""))
        if received > max_bytes:
            return None
        if message["type"] != "http.request" or not message.get("more_body"):
            return messages


async def refuse(scope: dict, send: Any, status: int, detail: str) -> None:
    """A problem answer that closes the connection: the unread body stays unread."""
    body = json.dumps(problem_body(status, detail, scope.get("path", ""))).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", PROBLEM_JSON.encode()),
                            (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})
