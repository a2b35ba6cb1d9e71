"""What the worker asks of a participant, and what it gets back.

A participant does one step (or its compensation) of a saga. The worker turns the saga's
`ExecuteStep`/`CompensateStep` effects into a `StepCall`, hands it to the participant the step
is routed to (built-in, Kafka or HTTP) off the polling thread, and feeds the `StepOutcome` back
into `decide` as a `StepResult`/`CompensationResult`.

Step side effects are at-least-once: a crash between a participant's action and the worker's
commit repeats the call. Every call therefore carries the idempotency key
`<requestId>:<run>:<step>`, and a participant must return the first result for a key it has
already handled (per action: execute and compensate are distinct).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

from sagas.slot_init import with_slot_init


class Action(StrEnum):
    EXECUTE = "EXECUTE"
    COMPENSATE = "COMPENSATE"


class Outcome(StrEnum):
    SUCCEEDED = "SUCCEEDED"
    TRANSIENT_FAILURE = "TRANSIENT_FAILURE"
    PERMANENT_FAILURE = "PERMANENT_FAILURE"


@with_slot_init
@dataclass(frozen=True, slots=True)
class StepCall:
    request_id: str
    run: int
    workflow_type: str
    tenant_id: str | None
    step: str
    action: Action
    attempt: int
    idempotency_key: str
    params: Mapping[str, str]
    deadline_at: int | None = None  # epoch ms; a participant may give up after it
    trace_parent: str | None = None  # the saga's W3C traceparent, passed on to the participant


@with_slot_init
@dataclass(frozen=True, slots=True)
class StepOutcome:
    outcome: Outcome
    output: Mapping[str, str] = field(default_factory=dict)
    reason: str | None = None
    # A failure after the participant did (some of) the work: the step is undone too.
    acted: bool = False
    # A transient failure's "not before": the participant's Retry-After, in ms from its answer.
    retry_after_ms: int | None = None

    @classmethod
    def succeeded(cls, **output: str) -> StepOutcome:
        return cls(Outcome.SUCCEEDED, output)

    @classmethod
    def permanent(cls, reason: str) -> StepOutcome:
        return cls(Outcome.PERMANENT_FAILURE, {}, reason)

    @classmethod
    def transient(cls, reason: str, retry_after_ms: int | None = None) -> StepOutcome:
        return cls(Outcome.TRANSIENT_FAILURE, {}, reason, retry_after_ms=retry_after_ms)


class Participant(Protocol):
    """Runs one step call to completion (or failure) and says how it went; never raises."""

    def call(self, call: StepCall) -> StepOutcome: ...
