"""What can happen to a saga: the inputs of `decide`.

A command starts (or re-runs) a saga; step and compensation results come back from
participants; timers fire; operators retry or cancel. Results and timers name the run, step
and attempt they belong to, so `decide` recognises stale ones (a timer for an attempt that
already answered, a late result after the attempt timed out) and ignores them.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from sagas.frozen import EMPTY, FrozenMap, freeze_fields
from sagas.slot_init import with_slot_init


class Outcome(StrEnum):
    SUCCEEDED = "SUCCEEDED"
    TRANSIENT_FAILURE = "TRANSIENT_FAILURE"
    PERMANENT_FAILURE = "PERMANENT_FAILURE"


class TimerKind(StrEnum):
    RETRY = "RETRY"  # the backoff after a transient failure is over: next attempt
    ATTEMPT_TIMEOUT = "ATTEMPT_TIMEOUT"  # an attempt gave no answer in time: transient failure
    STEP_DEADLINE = "STEP_DEADLINE"  # the step's overall deadline passed: it fails for good
    COMPENSATION_RETRY = "COMPENSATION_RETRY"  # next attempt of a failed compensation
    COMPENSATION_TIMEOUT = "COMPENSATION_TIMEOUT"  # a compensation attempt gave no answer


@with_slot_init
@dataclass(frozen=True, slots=True, kw_only=True)
class StartCommand:
    request_id: str
    workflow_type: str
    tenant_id: str | None = None
    params: FrozenMap[str, str] = EMPTY
    requested_by: str
    reply_to: str | None = None
    trace_parent: str | None = None  # W3C traceparent of the command, kept for every event
    # The last run and event sequence the sender knows of (the API, from the projection): a
    # saga forgotten after its idempotency window continues after them, so a new run never
    # repeats an earlier run's idempotency keys or sequence numbers.
    known_run: int | None = None
    known_sequence: int | None = None

    def __post_init__(self) -> None:
        freeze_fields(self, "params")


@with_slot_init
@dataclass(frozen=True, slots=True, kw_only=True)
class StepResult:
    request_id: str
    run: int
    step: str
    attempt: int
    outcome: Outcome
    output: FrozenMap[str, str] = EMPTY
    reason: str | None = None
    # A failure after the participant did the work (e.g. a success whose output could not be
    # recorded): the step is compensated too, as after an attempt whose answer never came.
    acted: bool = False
    # A transient failure's wait the participant asked for (HTTP Retry-After), in ms from the
    # result: the next attempt is not before it, nor before the step's backoff.
    retry_after_ms: int | None = None

    def __post_init__(self) -> None:
        freeze_fields(self, "output")


@with_slot_init
@dataclass(frozen=True, slots=True, kw_only=True)
class CompensationResult:
    request_id: str
    run: int
    step: str
    attempt: int
    succeeded: bool
    reason: str | None = None


@with_slot_init
@dataclass(frozen=True, slots=True, kw_only=True)
class TimerFired:
    request_id: str
    run: int
    kind: TimerKind
    step: str
    attempt: int  # for STEP_DEADLINE: the attempt that armed it (1); not checked


@with_slot_init
@dataclass(frozen=True, slots=True, kw_only=True)
class OperatorRetry:
    request_id: str
    operator: str
    reason: str | None = None


@with_slot_init
@dataclass(frozen=True, slots=True, kw_only=True)
class OperatorCancel:
    request_id: str
    operator: str
    reason: str


@with_slot_init
@dataclass(frozen=True, slots=True, kw_only=True)
class OperatorResume:
    """Start a fresh attempt of the step (or compensation) the saga waits on, now."""

    request_id: str
    operator: str
    reason: str | None = None


@with_slot_init
@dataclass(frozen=True, slots=True, kw_only=True)
class OperatorRecompensate:
    """Try again to undo a leftover of a FAILED run: a fresh compensation attempt of `step`
    under its idempotency key."""

    request_id: str
    operator: str
    step: str
    reason: str | None = None


@with_slot_init
@dataclass(frozen=True, slots=True, kw_only=True)
class OperatorResolve:
    """An operator cleaned a leftover of a FAILED run by hand: `step` is no longer one."""

    request_id: str
    operator: str
    step: str
    reason: str


SagaInput = (
    StartCommand | StepResult | CompensationResult | TimerFired | OperatorRetry | OperatorCancel
    | OperatorResume | OperatorRecompensate | OperatorResolve
)
