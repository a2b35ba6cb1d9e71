"""The http adapter: a step done synchronously by another service over HTTP.

The worker POSTs one JSON document per attempt (the StepRequest's fields) with the header
`Idempotency-Key: <requestId>:<run>:<step>` (with `:compensate` appended for the
compensation, so a service can tell the two apart by key alone), the saga's `traceparent`
when it has a well-formed one, and the route's credentials: `Authorization: Bearer <token>`
and/or a client certificate (`consumer/routing.py`). The service answers:

- 2xx: done; an optional JSON body `{"output": {"name": "value", ...}}` feeds later steps;
- 408, 425, 429 and 5xx, a connection error or no answer within the attempt's time:
  TRANSIENT, retried with the step's backoff; a `Retry-After` (seconds or an HTTP date) on such
  an answer puts the next attempt no earlier than it asks (within the step's deadline);
- any other 4xx: refused for good (PERMANENT): the body's `detail`, `reason` or `message` is
  the reason recorded in the saga's events; the saga compensates.

The token is never part of a reason, a log line or a repr: it is held as a `SecretStr` and
only unwrapped into the request's header.
"""

from __future__ import annotations

import re
import ssl
import time
from datetime import UTC
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
from pydantic import SecretStr

from consumer.participants.base import Action, StepCall, StepOutcome

MAX_REASON = 500
# Refusals that say "not now" rather than "no": timeout, too early, rate limited.
TRANSIENT_4XX = frozenset({408, 425, 429})
# W3C Trace Context: version-traceid-parentid-flags, lowercase hex; version ff and all-zero
# ids are invalid.
TRACEPARENT = re.compile(
    r"^(?!ff)[0-9a-f]{2}-(?!0{32})[0-9a-f]{32}-(?!0{16})[0-9a-f]{16}-[0-9a-f]{2}$")


class HttpParticipant:
    def __init__(self, url: str, *, compensation_url: str | None = None,
                 timeout_s: float = 30.0, client: httpx.Client | None = None,
                 bearer_token: SecretStr | None = None,
                 tls: ssl.SSLContext | None = None) -> None:
        """`tls`: how https servers are verified and the client certificate presented (default:
        the system's CAs, no client certificate); only used when no `client` is given."""
        self._url = url
        self._compensation_url = compensation_url or url
        self._timeout_s = timeout_s
        self._bearer_token = bearer_token
        self._client = client or httpx.Client(
            limits=httpx.Limits(max_connections=64, max_keepalive_connections=16),
            headers={"User-Agent": "provisioning-worker"},
            verify=tls if tls is not None else True,
        )

    def call(self, call: StepCall) -> StepOutcome:
        compensating = call.action is Action.COMPENSATE
        url = self._compensation_url if compensating else self._url
        key = call.idempotency_key + (":compensate" if compensating else "")
        try:
            response = self._client.post(url, json=_body(call), timeout=self._timeout(call),
                                         headers=self._headers(key, call))
        except httpx.TimeoutException:
            return StepOutcome.transient(f"no answer from {url} in time")
        except httpx.TransportError as exc:
            return StepOutcome.transient(f"cannot reach {url}: {type(exc).__name__}"
                                         f"{_tls_problem(exc)}")
        if response.is_success:
            return StepOutcome.succeeded(**_output(response))
        reason = f"HTTP {response.status_code} from {url}: {_reason(response)}"[:MAX_REASON]
        if 400 <= response.status_code < 500 and response.status_code not in TRANSIENT_4XX:
            return StepOutcome.permanent(reason)
        return StepOutcome.transient(reason, retry_after_ms=retry_after_ms(response))

    def close(self) -> None:
        self._client.close()

    def _headers(self, key: str, call: StepCall) -> dict[str, str]:
        headers = {"Idempotency-Key": key}
        # A malformed traceparent (the command's header is the caller's text) is dropped, as
        # W3C Trace Context asks; sending it could also break the request itself (CR, LF).
        if call.trace_parent is not None and TRACEPARENT.match(call.trace_parent):
            headers["traceparent"] = call.trace_parent
        if self._bearer_token is not None:
            headers["Authorization"] = f"Bearer {self._bearer_token.get_secret_value()}"
        return headers

    def _timeout(self, call: StepCall) -> float:
        """The attempt's remaining time: nobody waits for an answer after it."""
        if call.deadline_at is None:
            return self._timeout_s
        remaining = call.deadline_at / 1000 - time.time()
        return max(0.1, min(self._timeout_s, remaining))


def _body(call: StepCall) -> dict[str, Any]:
    return {
        "requestId": call.request_id, "run": call.run, "workflowType": call.workflow_type,
        "tenantId": call.tenant_id, "step": call.step, "action": call.action.value,
        "attempt": call.attempt, "idempotencyKey": call.idempotency_key,
        "params": dict(call.params), "deadline": call.deadline_at,
    }


def _tls_problem(exc: BaseException) -> str:
    """What TLS refused, if it did (e.g. CERTIFICATE_VERIFY_FAILED): an operator's clue to a
    certificate set up wrong, which OpenSSL names without any key material."""
    seen: BaseException | None = exc
    for _ in range(5):  # httpx wraps httpcore, which wraps the ssl error
        if seen is None:
            break
        if isinstance(seen, ssl.SSLError):
            return f" (TLS: {seen.reason or type(seen).__name__})"
        seen = seen.__cause__ or seen.__context__
    return ""


def retry_after_ms(response: httpx.Response) -> int | None:
    """The wait a `Retry-After` header asks for, in ms from now (RFC 9110: delta-seconds or an
    HTTP date; a date in the past is no wait), or None when absent or unreadable."""
    value = response.headers.get("Retry-After", "").strip()
    if not value:
        return None
    if value.isascii() and value.isdigit():
        # Beyond 12 digits it means "never" as much as 10**12 s does (and int() stays cheap).
        return (int(value) if len(value) <= 12 else 10**12) * 1000
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:  # RFC 9110 dates are GMT
        when = when.replace(tzinfo=UTC)
    return max(0, int((when.timestamp() - time.time()) * 1000))


def _output(response: httpx.Response) -> dict[str, str]:
    try:
        body = response.json()
    except ValueError:
        return {}
    output = body.get("output") if isinstance(body, dict) else None
    if not isinstance(output, dict):
        return {}
    return {str(k): str(v) for k, v in output.items() if v is not None}


def _reason(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text.strip()[:200] or response.reason_phrase
    if isinstance(body, dict):
        for key in ("detail", "reason", "message", "title"):
            if isinstance(body.get(key), str):
                return body[key]
    return response.reason_phrase
