"""What `decide` asks the runtime to do: plain data, performed by the worker.

- `EmitEvent`: publish an event (in the transaction of the transition).
- `ExecuteStep` / `CompensateStep`: call the step's participant; both carry the idempotency key
  `<requestId>:<run>:<step>`, the same for every attempt and for the compensation (the
  participant tells them apart by the action).
- `SetTimer`: feed `TimerFired` back at `fire_at`. Timers are never cancelled: one that is no
  longer relevant is ignored by `decide` when it fires.
- `Reply`: answer the command's `replyTo` topic with one of the seed's responses.
- `PersistState`: the new snapshot; exactly one, always last, whenever the state changed.
"""

from __future__ import annotations

from dataclasses import dataclass

from sagas.events import Event
from sagas.frozen import EMPTY, FrozenMap, freeze_fields
from sagas.inputs import TimerKind
from sagas.slot_init import with_slot_init
from sagas.state import SagaState

# --- the seed's ProvisioningResponse -----------------------------------------------------------


@with_slot_init
@dataclass(frozen=True, slots=True, kw_only=True)
class ProvisioningStarted:
    request_id: str
    run: int
    occurred_at: int


@with_slot_init
@dataclass(frozen=True, slots=True, kw_only=True)
class ProvisioningCompleted:
    request_id: str
    run: int
    resource_id: str
    occurred_at: int


@with_slot_init
@dataclass(frozen=True, slots=True, kw_only=True)
class ProvisioningFailed:
    request_id: str
    run: int
    reason: str
    failed_step: str | None = None
    occurred_at: int


ProvisioningResponse = ProvisioningStarted | ProvisioningCompleted | ProvisioningFailed


# --- effects -------------------------------------------------------------------------------------


@with_slot_init
@dataclass(frozen=True, slots=True, kw_only=True)
class EmitEvent:
    event: Event


@with_slot_init
@dataclass(frozen=True, slots=True, kw_only=True)
class ExecuteStep:
    request_id: str
    run: int
    workflow_type: str
    tenant_id: str | None
    step: str
    participant: str
    attempt: int
    idempotency_key: str
    params: FrozenMap[str, str] = EMPTY
    deadline_at: int | None = None  # the participant may give up after it: nobody waits longer
    trace_parent: str | None = None  # the saga's W3C traceparent, for the participant's call

    def __post_init__(self) -> None:
        freeze_fields(self, "params")


@with_slot_init
@dataclass(frozen=True, slots=True, kw_only=True)
class CompensateStep:
    request_id: str
    run: int
    workflow_type: str
    tenant_id: str | None
    step: str
    participant: str
    action: str  # the compensation, e.g. delete-tenant
    attempt: int
    idempotency_key: str
    params: FrozenMap[str, str] = EMPTY
    deadline_at: int | None = None
    trace_parent: str | None = None

    def __post_init__(self) -> None:
        freeze_fields(self, "params")


@with_slot_init
@dataclass(frozen=True, slots=True, kw_only=True)
class SetTimer:
    request_id: str
    run: int
    kind: TimerKind
    step: str
    attempt: int
    fire_at: int


@with_slot_init
@dataclass(frozen=True, slots=True, kw_only=True)
class Reply:
    reply_to: str
    response: ProvisioningResponse


@with_slot_init
@dataclass(frozen=True, slots=True, kw_only=True)
class PersistState:
    state: SagaState


Effect = EmitEvent | ExecuteStep | CompensateStep | SetTimer | Reply | PersistState


def idempotency_key(request_id: str, run: int, step: str) -> str:
    return f"{request_id}:{run}:{step}"
