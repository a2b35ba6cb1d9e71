"""The http adapter: a step done synchronously by another service over HTTP.

The worker POSTs one JSON document per attempt (the StepRequest's fields) with the header
`Idempotency-Key: <requestId>:<run>:<step>` (with `:compensate` appended for the
compensation, so a service can tell the two apart by key alone). The service answers:

- 2xx: done; an optional JSON body `{"output": {"name": "value", ...}}` feeds later steps;
- 4xx: refused for good (PERMANENT): the body's `detail`, `reason` or `message` is the reason
  recorded in the saga's events; the saga compensates;
- 5xx, a connection error or no answer within the attempt's time: TRANSIENT, retried with the
  step's backoff.
"""

from __future__ import annotations

import time
from typing import Any

import httpx

from consumer.participants.base import Action, StepCall, StepOutcome

MAX_REASON = 500


class HttpParticipant:
    def __init__(self, url: str, *, compensation_url: str | None = None,
                 timeout_s: float = 30.0, client: httpx.Client | None = None) -> None:
        self._url = url
        self._compensation_url = compensation_url or url
        self._timeout_s = timeout_s
        self._client = client or httpx.Client(
            limits=httpx.Limits(max_connections=64, max_keepalive_connections=16),
            headers={"User-Agent": "provisioning-worker"},
        )

    def call(self, call: StepCall) -> StepOutcome:
        compensating = call.action is Action.COMPENSATE
        url = self._compensation_url if compensating else self._url
        key = call.idempotency_key + (":compensate" if compensating else "")
        try:
            response = self._client.post(url, json=_body(call), timeout=self._timeout(call),
                                         headers={"Idempotency-Key": key})
        except httpx.TimeoutException:
            return StepOutcome.transient(f"no answer from {url} in time")
        except httpx.TransportError as exc:
            return StepOutcome.transient(f"cannot reach {url}: {type(exc).__name__}")
        if response.is_success:
            return StepOutcome.succeeded(**_output(response))
        reason = f"HTTP {response.status_code} from {url}: {_reason(response)}"[:MAX_REASON]
        if 400 <= response.status_code < 500:
            return StepOutcome.permanent(reason)
        return StepOutcome.transient(reason)

    def close(self) -> None:
        self._client.close()

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
