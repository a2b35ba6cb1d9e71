"""A tiny pure driver for sagas in tests: it plays the runtime around `decide`.

It keeps a queue of inputs ordered by time. `ExecuteStep` and `CompensateStep` effects are
answered by a script (a participant's answer arrives `after_ms` later, or never); `SetTimer`
effects come back as `TimerFired` at their time. It runs until nothing is left to deliver and
records every turn, checking on each that a transition that changed the state ends with
exactly one `PersistState` of that state.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sagas import (
    DEFAULT_REGISTRY,
    CompensateStep,
    CompensationResult,
    Effect,
    EmitEvent,
    ExecuteStep,
    Outcome,
    PersistState,
    Reply,
    SagaInput,
    SagaState,
    SetTimer,
    StartCommand,
    StepResult,
    TimerFired,
    WorkflowRegistry,
    decide,
)

T0 = 1_764_331_200_000  # 2025-11-28T12:00:00Z

PARAMS: dict[str, dict[str, str]] = {
    "tenant": {
        "entityId": "entity-9b1c",
        "subscriptionPlan": "BUSINESS",
        "billingInfo.accountName": "Acme Widgets Ltd",
        "billingInfo.billingEmail": "billing@acme.example",
        "billingInfo.currency": "EUR",
        "requestedBy": "user-42",
    },
    "service": {
        "tenantId": "tenant-7f3a91", "serviceName": "CartService", "slaTier": "GOLD",
        "requestedBy": "svc-cart",
    },
    "user": {
        "tenantId": "tenant-7f3a91", "email": "jane.doe@acme.example", "roleName": "tenant-admin",
        "requestedBy": "user-42",
    },
    "resource": {
        "tenantId": "tenant-7f3a91", "serviceName": "CartService", "resourceType": "DATABASE",
        "resourceSpec.sizeGb": "20", "requestedBy": "svc-cart",
    },
}

# What each workflow's identifying step answers by default, and so its resource id.
RESOURCE_IDS = {"tenant": "tenant-7f3a91", "service": "sub-1", "user": "user-1",
                "resource": "res-1"}
DEFAULT_OUTPUTS: dict[str, dict[str, str]] = {
    "create-tenant": {"tenantId": RESOURCE_IDS["tenant"]},
    "create-subscription": {"subscriptionId": RESOURCE_IDS["service"]},
    "resolve-user": {"userId": RESOURCE_IDS["user"]},
    "allocate-resource": {"resourceId": RESOURCE_IDS["resource"]},
}


def command(
    workflow_type: str = "tenant",
    request_id: str = "req-1",
    *,
    params: Mapping[str, str] | None = None,
    reply_to: str | None = "replies",
    requested_by: str = "user-42",
) -> StartCommand:
    given = dict(PARAMS[workflow_type] if params is None else params)
    return StartCommand(
        request_id=request_id, workflow_type=workflow_type, tenant_id=given.get("tenantId"),
        params=given, requested_by=requested_by, reply_to=reply_to,
    )


# --- how participants answer ---------------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    outcome: Outcome | None  # None: the participant never answers
    output: Mapping[str, str] = field(default_factory=dict)
    reason: str | None = None
    after_ms: int = 10
    deliveries: int = 1  # more than 1: the same answer is delivered again (at-least-once)
    retry_after_ms: int | None = None  # a transient failure's Retry-After


def ok(**output: str) -> Answer:
    return Answer(Outcome.SUCCEEDED, output)


def transient(reason: str = "temporarily unavailable", after_ms: int = 10) -> Answer:
    return Answer(Outcome.TRANSIENT_FAILURE, reason=reason, after_ms=after_ms)


def permanent(reason: str = "refused") -> Answer:
    return Answer(Outcome.PERMANENT_FAILURE, reason=reason)


def silence() -> Answer:
    return Answer(None)


Answerer = Callable[[ExecuteStep | CompensateStep], Answer]


class Script:
    """Answers by step name or (step, attempt); anything unscripted succeeds.

    A successful answer of a workflow's identifying step without output gets the default id,
    so a script only says what is special about a run.
    """

    def __init__(
        self,
        steps: Mapping[Any, Answer] | None = None,
        compensations: Mapping[Any, Answer] | None = None,
    ) -> None:
        self.steps = dict(steps or {})
        self.compensations = dict(compensations or {})

    def __call__(self, call: ExecuteStep | CompensateStep) -> Answer:
        table = self.compensations if isinstance(call, CompensateStep) else self.steps
        answer = table.get((call.step, call.attempt), table.get(call.step, ok()))
        if (
            isinstance(call, ExecuteStep)
            and answer.outcome is Outcome.SUCCEEDED
            and not answer.output
        ):
            answer = Answer(Outcome.SUCCEEDED, DEFAULT_OUTPUTS.get(call.step, {}),
                            after_ms=answer.after_ms, deliveries=answer.deliveries)
        return answer


# --- the run -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Turn:
    now: int
    input: SagaInput
    before: SagaState | None
    after: SagaState | None
    effects: tuple[Effect, ...]


@dataclass
class Trace:
    initial: SagaState | None
    turns: list[Turn] = field(default_factory=list)

    @property
    def state(self) -> SagaState | None:
        return self.turns[-1].after if self.turns else self.initial

    @property
    def saga(self) -> SagaState:
        assert self.state is not None
        return self.state

    @property
    def effects(self) -> list[Effect]:
        return [e for turn in self.turns for e in turn.effects]

    @property
    def events(self) -> list[Any]:
        return [e.event for e in self.effects if isinstance(e, EmitEvent)]

    @property
    def event_names(self) -> list[str]:
        return [type(e).__name__ for e in self.events]

    @property
    def replies(self) -> list[Any]:
        return [e.response for e in self.effects if isinstance(e, Reply)]

    def of(self, kind: type) -> list[Any]:
        return [e for e in self.effects if isinstance(e, kind)]

    def events_of(self, kind: type) -> list[Any]:
        return [e for e in self.events if isinstance(e, kind)]

    def steps_in(self, kind: type) -> list[str]:
        return [e.step for e in self.events_of(kind)]


def drive(
    inputs: SagaInput | Iterable[tuple[int, SagaInput]],
    answer: Answerer | None = None,
    *,
    state: SagaState | None = None,
    at: int = T0,
    registry: WorkflowRegistry = DEFAULT_REGISTRY,
    max_turns: int = 10_000,
) -> Trace:
    """Feed `inputs` (one input at `at`, or (time, input) pairs) and everything they cause."""
    answer = answer or Script()
    queue: list[tuple[int, int, SagaInput]] = []
    order = itertools.count()

    def deliver(when: int, saga_input: SagaInput) -> None:
        heapq.heappush(queue, (when, next(order), saga_input))

    for when, saga_input in [(at, inputs)] if not isinstance(inputs, Iterable) else inputs:
        deliver(when, saga_input)
    trace = Trace(initial=state)
    while queue:
        assert len(trace.turns) < max_turns, "the saga does not come to rest"
        now, _, saga_input = heapq.heappop(queue)
        before = trace.state
        after, effects = decide(before, saga_input, now, registry=registry)
        check_turn(before, after, effects)
        trace.turns.append(Turn(now, saga_input, before, after, effects))
        for effect in effects:
            for when, caused in consequences(effect, now, answer):
                deliver(when, caused)
    return trace


def consequences(
    effect: Effect, now: int, answer: Answerer
) -> list[tuple[int, SagaInput]]:
    """What the runtime feeds back for one effect."""
    if isinstance(effect, SetTimer):
        return [(effect.fire_at, TimerFired(
            request_id=effect.request_id, run=effect.run, kind=effect.kind, step=effect.step,
            attempt=effect.attempt,
        ))]
    if not isinstance(effect, ExecuteStep | CompensateStep):
        return []
    reply = answer(effect)
    if reply.outcome is None:
        return []
    result: SagaInput
    if isinstance(effect, CompensateStep):
        result = CompensationResult(
            request_id=effect.request_id, run=effect.run, step=effect.step,
            attempt=effect.attempt, succeeded=reply.outcome is Outcome.SUCCEEDED,
            reason=reply.reason,
        )
    else:
        result = StepResult(
            request_id=effect.request_id, run=effect.run, step=effect.step,
            attempt=effect.attempt, outcome=reply.outcome, output=reply.output,
            reason=reply.reason, retry_after_ms=reply.retry_after_ms,
        )
    return [(now + reply.after_ms + i, result) for i in range(reply.deliveries)]


def check_turn(
    before: SagaState | None, after: SagaState | None, effects: tuple[Effect, ...]
) -> None:
    persisted = [e for e in effects if isinstance(e, PersistState)]
    if after is before:
        assert not persisted, "PersistState without a change of state"
        assert not any(isinstance(e, EmitEvent) for e in effects) or after is None
        return
    assert len(persisted) == 1, f"expected one PersistState, got {len(persisted)}"
    assert effects[-1] is persisted[0], "PersistState must be the last effect"
    assert persisted[0].state == after
